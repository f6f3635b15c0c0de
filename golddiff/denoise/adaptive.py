"""GoldDiff's adaptive golden subset (`subset="adaptive"`, this project, issue 17).

Instead of the published linear k_t schedule, each sample at each step draws images from an
importance proposal q (a tempered proxy posterior mixed with the uniform pool, `core.importance`)
and aggregates the exact per-pixel PCA-locality softmax over the distinct draws, with each image's
logits offset by log c_i - log q_i (self-normalised importance weights). The draws are split into
two iid halves; their disagreement estimates the Monte-Carlo error (as 1 - r^2 against the exact
posterior mean), and a sample draws more until that estimate is below `tolerance` or its draws reach
DRAWS_PER_K * k_max. So k_t (the distinct images aggregated) is chosen per sample and per step.

Proposal temperature: a pixel's logit sums over the |M[:, m]| pixels of its mask column instead of
all D, so its posterior is about D / |M[:, m]| times flatter than the global one; the proxy logits
are divided by temper = 1 / density(M_t) (at least 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..core.importance import draw, draws_needed, fold, half_error, proposal
from ..core.posterior import (
    StreamingSoftmax,
    global_logits,
    mask_operator,
    pixel_chunk_sums,
    pixel_logits,
    row_sums,
)

UNIFORM_MIX = 0.3  # share of the uniform pool in the proposal (bounds the weights by N / 0.3)
START_DRAWS = 256  # draws per sample in the first round (two halves of 128)
MAX_ROUNDS = 4  # rounds of growth after the first
DRAWS_PER_K = 4  # a sample draws at most DRAWS_PER_K * k_max (duplicates fold: distinct <= N)


@dataclass
class AdaptiveResult:
    x0_hat: torch.Tensor  # (B, D) self-normalised estimate from all draws
    entropy: torch.Tensor  # (B, D) per-pixel entropy of the importance weights (nats)
    error_est: torch.Tensor  # (B,) estimated 1 - r^2 of x0_hat against the exact posterior mean
    k_b: torch.Tensor  # (B,) distinct images aggregated per sample (its k_t)
    draws: torch.Tensor  # (B,) draws per sample
    subset: torch.Tensor  # (B, max k_b) distinct images, padded by repeating the sample's first


def proxy_proposal(
    x_t: torch.Tensor, P: torch.Tensor, Psq: torch.Tensor, factor: int, abar: float, temper: float
) -> torch.Tensor:
    """q (B, N) from the proxy logits: proxies P (N, d) = average pools of factor x factor pixels,
    so ||P a||^2 ~ ||a||^2 / factor^2 and the proxy logits are scaled back by factor^2."""
    g = global_logits(x_t, P, Psq, abar) * factor**2  # (B, N)
    return proposal(g, temper, UNIFORM_MIX)


def proposal_temper(density: float) -> float:
    """The proposal's temperature for a mask of this density: 1 / density, at least 1."""
    return max(1.0, 1.0 / max(density, 1e-6))


def _sums(acc: StreamingSoftmax) -> tuple:
    return acc.mx, acc.s0, acc.s1, acc.sx


def _both(a: StreamingSoftmax, b: StreamingSoftmax) -> StreamingSoftmax:
    """A new accumulator holding the sums of both halves (a and b are left unchanged)."""
    ab = StreamingSoftmax()
    ab.merge(*_sums(a))
    ab.merge(*_sums(b))
    return ab


class _Sample:
    """One sample's two half-accumulators and its draws so far."""

    def __init__(self):
        self.halves = (StreamingSoftmax(), StreamingSoftmax())
        self.n, self.cols, self.seen = 0, 0, []


def _add_draws(s: _Sample, d: torch.Tensor, q_b, x_b, X, sqrt_abar, op, work) -> None:
    """Fold draws d (n,) into the two halves: first half -> A, second -> B."""
    h = d.shape[0] // 2
    for acc, part in zip(s.halves, (d[:h], d[h:])):
        idx, off = fold(part, q_b)  # (u,), (u,)
        if op.sparse:  # pixel-major: the sparse mask product wants (D, u) columns
            XT = X[idx].T.contiguous()  # (D, u)
            L = pixel_logits(x_b, XT, sqrt_abar, op, work).add_(off[None, :])  # (D, u)
            mx, s0, s1, sx, _ = pixel_chunk_sums(L, XT, None, work)
        else:  # dense mask: gathered once, image-major
            mx, s0, s1, sx, _ = row_sums(x_b, X, idx, sqrt_abar, op, work, off)
        acc.merge(mx[None], s0[None], s1[None], sx[None])
        s.cols += int(idx.shape[0])
        s.seen.append(idx)
    s.n += int(d.shape[0])


def adaptive_aggregate(
    x_t: torch.Tensor,
    X: torch.Tensor,
    M: torch.Tensor,
    abar: float,
    tau: float,
    q: torch.Tensor,
    tol: float,
    n_max: int,
    generator: torch.Generator | list[torch.Generator] | None = None,
) -> AdaptiveResult:
    """x_t: (B, D); X: (N, D); M: (D, D) mask; q: (B, N) proposal. Draws START_DRAWS per sample,
    then grows each sample whose estimated error exceeds tol (at most n_max draws, MAX_ROUNDS).
    generator: one for the batch, or a list with one per sample (the sampler's seed streams, so a
    sample's draws do not depend on its batch)."""

    def rows(b: int | None, k: int) -> torch.Tensor:  # draws for sample b, or all samples
        if isinstance(generator, list):
            bs = range(B) if b is None else [b]
            return torch.cat([draw(q[i : i + 1], k, generator[i]) for i in bs])
        return draw(q if b is None else q[b : b + 1], k, generator)

    B, D = x_t.shape
    op, sqrt_abar, work = mask_operator(M, abar, tau), math.sqrt(abar), {}
    samples = [_Sample() for _ in range(B)]
    n0 = min(START_DRAWS, max(2, n_max // 2 * 2))
    first = rows(None, n0)  # (B, n0)
    for b, s in enumerate(samples):
        _add_draws(s, first[b], q[b], x_t[b], X, sqrt_abar, op, work)
    for _ in range(MAX_ROUNDS + 1):
        x_a, x_b, x_ab, H = _estimates(samples)
        err = half_error(x_a, x_b, x_ab)  # (B,)
        grow = [(b, draws_needed(s.n, float(err[b]), tol, n_max)) for b, s in enumerate(samples)]
        grow = [(b, n) for b, n in grow if n > samples[b].n]
        if not grow or _ == MAX_ROUNDS:
            break
        for b, n in grow:
            d = rows(b, n - samples[b].n)[0]  # (n - n_b,)
            _add_draws(samples[b], d, q[b], x_t[b], X, sqrt_abar, op, work)
    subsets = [torch.unique(torch.cat(s.seen)) for s in samples]
    width = max(int(u.shape[0]) for u in subsets)
    subset = torch.stack([torch.cat([u, u[:1].expand(width - u.shape[0])]) for u in subsets])
    dev = x_t.device
    return AdaptiveResult(
        x0_hat=x_ab,
        entropy=H,
        error_est=err,
        k_b=torch.tensor([s.cols for s in samples], device=dev),
        draws=torch.tensor([s.n for s in samples], device=dev),
        subset=subset,
    )


def _estimates(samples: list[_Sample]) -> tuple[torch.Tensor, ...]:
    """(x_A, x_B, x_AB, entropy_AB), each (B, D), from the samples' half-accumulators."""
    both = [_both(*s.halves) for s in samples]
    x_a = torch.cat([s.halves[0].mean() for s in samples])
    x_b = torch.cat([s.halves[1].mean() for s in samples])
    return x_a, x_b, torch.cat([a.mean() for a in both]), torch.cat([a.entropy() for a in both])
