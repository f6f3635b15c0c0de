"""GoldDiff's adaptive golden subset (`subset="adaptive"`, this project).

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

from ..core.comm import gather_columns
from ..core.importance import draw, draws_needed, fold, half_error, proposal
from ..core.logits import global_logits
from ..core.posterior import StreamingSoftmax

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
    # (B, max k_b) each image's log weight log C_i - log q_i over all draws (C_i: times drawn);
    # -inf on the padding
    offsets: torch.Tensor


def proxy_proposal(
    corpus, x_t: torch.Tensor, index, factor: int, abar: float, temper: float
) -> torch.Tensor:
    """q (B, N) over all N images of the dataset from the proxy logits of x_t (B, D): proxies P
    (N, d) = average pools of factor x factor pixels, so ||P a||^2 ~ ||a||^2 / factor^2 and the
    proxy logits are scaled back by factor^2. A sharded corpus gathers every rank's columns."""
    g = global_logits(index.query(x_t), index.P, index.sqnorm, abar) * factor**2  # (B, N_r)
    return proposal(gather_columns(corpus.comm, g, corpus.total), temper, UNIFORM_MIX)


def proposal_temper(density: float) -> float:
    """The proposal's temperature for a mask of this density: 1 / density, at least 1."""
    return max(1.0, 1.0 / max(density, 1e-6))


def _both(a: StreamingSoftmax, b: StreamingSoftmax) -> StreamingSoftmax:
    """A new accumulator holding the sums of both halves (a and b are left unchanged)."""
    ab = StreamingSoftmax()
    ab.fold(a.mx, a.s0, a.s1, a.sx)
    ab.fold(b.mx, b.s0, b.s1, b.sx)
    return ab


class _Sample:
    """One sample's two half-accumulators and its draws so far."""

    def __init__(self):
        self.halves = (StreamingSoftmax(), StreamingSoftmax())
        self.n, self.seen = 0, []


def _add_draws(corpus, x_t, M, abar, tau, q, samples, draws: dict[int, torch.Tensor], work) -> None:
    """Fold each sample b's new draws (n,) into its two halves: first half -> A, second -> B.
    Duplicates fold into one image with offset log c - log q (`core.importance.fold`); the
    samples' halves are summed by one `Corpus.posterior` call each (one merge across ranks)."""
    bs = list(draws)
    halves = {b: (d[: d.shape[0] // 2], d[d.shape[0] // 2 :]) for b, d in draws.items()}
    for h in (0, 1):
        parts = [fold(halves[b][h], q[b]) for b in bs]  # ((u_b,) images, (u_b,) offsets)
        idx, off = [p[0] for p in parts], [p[1] for p in parts]
        acc = corpus.posterior(x_t[bs], M, abar, tau, subset=idx, offsets=off, work=work)
        for j, b in enumerate(bs):
            row = slice(j, j + 1)
            samples[b].halves[h].fold(acc.mx[row], acc.s0[row], acc.s1[row], acc.sx[row])
            samples[b].seen.append(halves[b][h])
    for b in bs:
        samples[b].n += int(draws[b].shape[0])


def adaptive_aggregate(
    x_t: torch.Tensor,
    corpus,
    M: torch.Tensor,
    abar: float,
    tau: float,
    q: torch.Tensor,
    tol: float,
    n_max: int,
    generator: torch.Generator | list[torch.Generator] | None = None,
) -> AdaptiveResult:
    """x_t: (B, D); corpus: the `Corpus` whose images are drawn (all N of the dataset); M: (D, D)
    mask; q: (B, N) proposal. Draws START_DRAWS per sample, then grows each sample whose estimated
    error exceeds tol (at most n_max draws, MAX_ROUNDS). generator: one for the batch, or a list
    with one per sample (the sampler's seed streams, so a sample's draws do not depend on its
    batch)."""

    def rows(b: int | None, k: int) -> torch.Tensor:  # draws for sample b, or all samples
        if isinstance(generator, list):
            bs = range(B) if b is None else [b]
            return torch.cat([draw(q[i : i + 1], k, generator[i]) for i in bs])
        return draw(q if b is None else q[b : b + 1], k, generator)

    B = x_t.shape[0]
    samples = [_Sample() for _ in range(B)]
    n0 = min(START_DRAWS, max(2, n_max // 2 * 2))
    first = rows(None, n0)  # (B, n0)
    work = {}  # buffers reused by every round
    _add_draws(corpus, x_t, M, abar, tau, q, samples, {b: first[b] for b in range(B)}, work)
    for _ in range(MAX_ROUNDS + 1):
        x_a, x_b, x_ab, H = _estimates(samples)
        err = half_error(x_a, x_b, x_ab)  # (B,)
        grow = [(b, draws_needed(s.n, float(err[b]), tol, n_max)) for b, s in enumerate(samples)]
        grow = [(b, n) for b, n in grow if n > samples[b].n]
        if not grow or _ == MAX_ROUNDS:
            break
        new = {b: rows(b, n - samples[b].n)[0] for b, n in grow}  # (n - n_b,) each
        _add_draws(corpus, x_t, M, abar, tau, q, samples, new, work)
    subset, offsets, k_b = _distinct(samples, q)
    dev = x_t.device
    return AdaptiveResult(
        x0_hat=x_ab,
        entropy=H,
        error_est=err,
        k_b=k_b,
        draws=torch.tensor([s.n for s in samples], device=dev),
        subset=subset,
        offsets=offsets,
    )


def _distinct(samples: list[_Sample], q: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The distinct images of each sample's draws, padded to the widest (B, max k_b), their log
    weights log C_i - log q_i over all draws (-inf on the padding), and k_b (B,). One unique over
    every sample's draws, keyed b N + i."""
    B, N = q.shape
    keys = torch.cat([torch.cat(s.seen) + b * N for b, s in enumerate(samples)])
    u, counts = torch.unique(keys, return_counts=True)  # sorted: sample by sample
    k_b = torch.bincount(u // N, minlength=B)  # (B,)
    off = torch.log(counts.to(q.dtype)) - torch.log(q.reshape(-1)[u])
    width = int(k_b.max())
    subset = torch.empty(B, width, dtype=torch.long, device=q.device)
    offsets = torch.full((B, width), -math.inf, dtype=q.dtype, device=q.device)
    sizes = k_b.tolist()
    for b, (ub, ob) in enumerate(zip(torch.split(u % N, sizes), torch.split(off, sizes))):
        subset[b, : sizes[b]], subset[b, sizes[b] :] = ub, ub[0]
        offsets[b, : sizes[b]] = ob
    return subset, offsets, k_b


def _estimates(samples: list[_Sample]) -> tuple[torch.Tensor, ...]:
    """(x_A, x_B, x_AB, entropy_AB), each (B, D), from the samples' half-accumulators."""
    both = [_both(*s.halves) for s in samples]
    x_a = torch.cat([s.halves[0].mean() for s in samples])
    x_b = torch.cat([s.halves[1].mean() for s in samples])
    return x_a, x_b, torch.cat([a.mean() for a in both]), torch.cat([a.entropy() for a in both])
