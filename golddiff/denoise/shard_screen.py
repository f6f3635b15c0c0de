"""GoldDiff's screen over a corpus split across ranks (`--shard corpus`): the coarse-to-fine
selection of the golden subset S_t (Shang et al. 2026) when each rank holds only some rows.

Each rank ranks the allowed rows it holds (the sample's random pool, or all of them for a nearest
sample) by the proxy distance ||P x_t - sqrt(abar) P x_i||^2 and keeps its top k_max with their
full-resolution distances; the ranks' candidates are all-gathered, and every rank keeps the global
top k_max by proxy distance, then the top k_t of those by full distance, as one process would.
"""

from __future__ import annotations

import math

import torch

from ..core.comm import pack_dtype
from ..core.logits import sq_dists
from .retrieval import BLOCK_ELEMS, gathered_sq_dists


def allowed_rows(corpus, near: torch.Tensor, pool: torch.Tensor | None) -> torch.Tensor:
    """(B, N_r) bool: the rows of this rank each sample may screen. near: (B,) bool (screen all);
    pool: (B, m_t) dataset indices (the same on every rank) or None."""
    B = near.shape[0]
    allowed = near[:, None].expand(B, corpus.N).clone()
    if pool is None:
        allowed[:] = True
        return allowed
    local = pool - corpus.offset  # (B, m_t)
    for b in (~near).nonzero()[:, 0].tolist():
        allowed[b, local[b][(local[b] >= 0) & (local[b] < corpus.N)]] = True
    return allowed


def sharded_select(corpus, index, x_t, q, scale, near, pool, k_max: int, k_t: int) -> torch.Tensor:
    """The golden subset S_t (B, k_t) of dataset indices over all ranks. x_t: (B, D); q: (B, d)
    proxy queries; scale = sqrt(abar)."""
    c = corpus
    d = sq_dists(q, index.P, index.sqnorm, scale)  # (B, N_r)
    d.masked_fill_(~allowed_rows(c, near, pool), math.inf)
    k = min(k_max, c.total)
    top = d.topk(min(k, c.N), dim=1, largest=False)  # (B, k_r)
    B, k_r = top.indices.shape
    if 4 * B * k >= c.total and B * c.total <= BLOCK_ELEMS:  # `fine_select`'s formula choice,
        # so that both compute each distance with the same float32 operations
        full = sq_dists(x_t, c.X, c.sqnorm, scale).gather(1, top.indices)  # (B, k_r)
    else:
        full = gathered_sq_dists(x_t, c.X, c.sqnorm, top.indices, scale)  # (B, k_r)
    pack = torch.full((B, k, 3), math.inf, dtype=pack_dtype(c.total), device=d.device)
    pack[:, :k_r, 0] = top.values
    pack[:, :k_r, 1] = full.masked_fill(top.values.isinf(), math.inf)
    pack[:, :k_r, 2] = top.indices + c.offset
    every = c.comm.all_gather(pack).permute(1, 0, 2, 3).reshape(B, -1, 3)  # (B, R k, 3)
    n_ok = int(every[..., 0].isfinite().sum(1).min())  # min(k_max, pool size) per sample
    order = every[..., 0].topk(min(k, n_ok), 1, largest=False).indices  # (B, k_max)
    cand = every.gather(1, order[..., None].expand(-1, -1, 3))  # the global proxy top k_max
    keep = cand[..., 1].topk(min(k_t, cand.shape[1]), 1, largest=False).indices  # (B, k_t)
    return cand[..., 2].gather(1, keep).long()
