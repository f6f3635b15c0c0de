"""Importance-sampled golden subset and its Monte-Carlo error estimate (this project).

Self-normalised importance sampling of the per-pixel posterior (Owen 2013, "Monte Carlo theory,
methods and examples", ch. 9): draw J_1..J_k iid from a proposal q over the N images, then
  x0_hat[m] = sum_j exp(L_Jj(m) - log q_Jj) x_Jj[m] / sum_j exp(L_Jj(m) - log q_Jj).
Numerator and denominator are, divided by k, unbiased for sum_i exp(L_i(m)) x_i[m] and
sum_i exp(L_i(m)); the ratio is consistent. Duplicate draws are folded into one column with the
offset log c_i - log q_i (c_i = how often i was drawn), so a concentrated proposal costs only its
distinct images.

Proposal: q = (1 - mix) softmax(g / temper) + mix / N, with g the proxy (low-resolution) global
logits. It is the uniform pool while the posterior is flat and the nearest images once it has
concentrated; the uniform share keeps q > 0 everywhere (the weights stay bounded by 1 / (mix / N)).

Error estimate: split the draws into two iid halves A and B. Each half's estimate has twice the
variance of the full one, so E||x_A - x_B||^2 = 4 E||x_AB - x - bias||^2 to first order. The
self-normalised estimate's bias falls as 1 / n, so a half's is twice the full one's and the
jackknife reads it off as (x_A + x_B) / 2 - x_AB. Together,
  err = (||x_A - x_B||^2 / 4 + ||(x_A + x_B) / 2 - x_AB||^2) / (D var(x_AB))
estimates 1 - r^2 of x_AB against the exact posterior mean. It reads low where rare images of large
weight that neither half drew dominate the error (the variance term alone reads lower still).
"""

from __future__ import annotations

import math

import torch


def proposal(g: torch.Tensor, temper: float, mix: float) -> torch.Tensor:
    """q = (1 - mix) softmax(g / temper) + mix / N. g: (B, N) logits -> (B, N), rows sum to 1."""
    N = g.shape[1]
    return (1.0 - mix) * torch.softmax(g / temper, dim=1) + mix / N


def draw(q: torch.Tensor, k: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """(B, k) iid draws with replacement from each row of q (B, N), on q's device. They are drawn
    on the generator's device (the sampler's seeded generator lives on the CPU)."""
    dev = q.device if generator is None else generator.device
    return torch.multinomial(q.to(dev), k, replacement=True, generator=generator).to(q.device)


def fold(draws: torch.Tensor, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One sample's draws (n,) from q (N,) -> (distinct images (u,), offsets log c_i - log q_i).

    Adding the offsets to the logits of the distinct images gives the same self-normalised weights
    as one column per draw."""
    idx, counts = torch.unique(draws, return_counts=True)
    return idx, torch.log(counts.to(q.dtype)) - torch.log(q[idx])


def half_error(x_a: torch.Tensor, x_b: torch.Tensor, x_ab: torch.Tensor) -> torch.Tensor:
    """Estimated 1 - r^2 of x_ab = the estimate from both halves. (B, D) each -> (B,)."""
    D = x_ab.shape[1]
    var = (x_a - x_b).square().sum(1) / 4.0  # (B,)
    bias = ((x_a + x_b) / 2.0 - x_ab).square().sum(1)  # (B,)
    return (var + bias) / (D * x_ab.var(1, unbiased=False).clamp_min(1e-12))


def draws_needed(n: int, err: float, tol: float, n_max: int) -> int:
    """Draws that bring an estimated error err at n draws to tol (err ~ 1 / n), at most n_max, at
    least n; even, so the two halves stay equal."""
    if err <= tol or n >= n_max:
        return n
    want = math.ceil(n * min(err / tol, 16.0) * 1.15)
    return int(min(n_max, max(want, n + 2)) // 2 * 2)
