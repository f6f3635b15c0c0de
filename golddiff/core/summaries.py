"""Summaries of a posterior and of fidelity, each defined once (the app and the CLI label them with
run.LABELS).

Posterior w over N training images (rows sum to 1):
  entropy H = -sum w log w (nats), perplexity exp(H), ESS = 1 / sum w^2,
  k_p = fewest images holding mass p, captured mass W_S = sum_{i in S} w_i,
  recall of the global top-|S| in S.
Fidelity (images mapped from [-1, 1] to [0, 1]): MSE, and per-image
  r^2 = 1 - ||a - b||^2 / (D var(b)),
the r^2 of the GoldDiff paper's tables (Shang et al. 2026).
"""

from __future__ import annotations

import torch


def entropy(w: torch.Tensor) -> torch.Tensor:
    """Shannon entropy in nats over the last axis. (..., N) -> (...)."""
    return torch.special.entr(w).sum(-1)


def perplexity(w: torch.Tensor) -> torch.Tensor:
    """exp(entropy): the effective number of images under the entropy. (..., N) -> (...)."""
    return torch.exp(entropy(w))


def ess(w: torch.Tensor) -> torch.Tensor:
    """Effective sample size 1 / sum w^2. (..., N) -> (...)."""
    return 1.0 / w.square().sum(-1)


def k_mass(w: torch.Tensor, p: float) -> torch.Tensor:
    """Fewest images whose weights sum to at least p. (B, N) -> (B,) int64."""
    cum = torch.sort(w, dim=-1, descending=True).values.cumsum(-1)
    k = (cum < p * cum[..., -1:]).sum(-1) + 1
    return k.clamp_max(w.shape[-1])


def captured_mass(w: torch.Tensor, subset: torch.Tensor) -> torch.Tensor:
    """W_S = sum_{i in S} w_i. w: (B, N); subset: (B, k) -> (B,). An index repeated in a row (a
    padded subset) counts once."""
    flag = torch.zeros_like(w, dtype=torch.bool).scatter_(1, subset, True)  # (B, N)
    return (w * flag).sum(1)


def topk_recall(w: torch.Tensor, subset: torch.Tensor) -> torch.Tensor:
    """Fraction of the global top-k (k = |S|) that S contains. subset: (B, k) -> (B,).

    w: (B, N) weights or, better, the logits: at low noise the weights of all but a few images
    underflow to exactly 0 and their order (the rest of the top-k) would be arbitrary; logits keep
    the true ranking.
    """
    k = subset.shape[1]
    top = w.topk(k, dim=1).indices  # (B, k)
    hits = torch.zeros_like(w, dtype=torch.bool).scatter_(1, subset, True).gather(1, top)
    return hits.float().mean(1)


def mse01(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image MSE with images mapped from [-1, 1] to [0, 1]. (B, D), (B, D) -> (B,)."""
    return ((a - b) / 2).square().mean(1)


def r2(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image r^2 of a against reference b: 1 - ||a - b||^2 / (D var(b)). (B, D), (B, D) -> (B,).
    Invariant to mapping both from [-1, 1] to [0, 1]."""
    D = b.shape[1]
    return 1.0 - (a - b).square().sum(1) / (D * b.var(1, unbiased=False).clamp_min(1e-12))
