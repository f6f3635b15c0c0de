"""Proxy space and the coarse / fine candidate search behind GoldDiff.

Proxy P: average pooling of each image to low_res x low_res (28 -> 14, 32 -> 16, 64 -> 16).
Distances are the noisy-query distances of the posterior: ||q - sqrt(abar) p_i||^2.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def proxy_factor(shape: tuple[int, int, int], low_res: int) -> int:
    """Pooling factor for (C, H, W) -> low_res; raises ValueError when it does not divide."""
    _, H, W = shape
    if low_res < 1 or H % low_res or W % low_res or H // low_res != W // low_res:
        raise ValueError(f"Proxy resolution {low_res} does not divide the {H}x{W} images; "
                         f"choose a low_res that divides {H} (e.g. {H // 2 if H % 2 == 0 else H}).")
    return H // low_res


def to_proxy(x: torch.Tensor, shape: tuple[int, int, int], low_res: int) -> torch.Tensor:
    """(B, D) images -> (B, d) proxies, d = C * low_res^2, by average pooling."""
    f = proxy_factor(shape, low_res)
    if f == 1:
        return x
    C, H, W = shape
    return F.avg_pool2d(x.reshape(-1, C, H, W), f).reshape(x.shape[0], -1)


def sq_dists(q: torch.Tensor, X: torch.Tensor, sqnorm: torch.Tensor, scale: float) -> torch.Tensor:
    """||q_b - scale x_i||^2 for all pairs. q: (B, d); X: (N, d); sqnorm: (N,). Returns (B, N)."""
    qn = q.square().sum(1, keepdim=True)
    return (qn - 2.0 * scale * (q @ X.T) + scale * scale * sqnorm[None]).clamp_min_(0.0)


def gathered_sq_dists(q: torch.Tensor, X: torch.Tensor, sqnorm: torch.Tensor, idx: torch.Tensor,
                      scale: float) -> torch.Tensor:
    """||q_b - scale x_{idx[b, j]}||^2. q: (B, d); X: (N, d); idx: (B, k). Returns (B, k)."""
    Xg = X[idx]                                                    # (B, k, d)
    dots = torch.einsum("bd,bkd->bk", q, Xg)
    return (q.square().sum(1, keepdim=True) - 2.0 * scale * dots + scale * scale * sqnorm[idx]).clamp_min_(0.0)


class ProxyIndex:
    """The proxy database of a dataset: P x_i (N, d) and ||P x_i||^2, built once per (dataset, low_res).

    `search(q, scale, k, pool)` returns the k nearest proxies to each query among `pool` (B, m) indices,
    or among all N when pool is None. backend "torch": exact, one matmul over the rows it screens.
    """

    backend = "torch"

    def __init__(self, X: torch.Tensor, shape: tuple[int, int, int], low_res: int):
        self.shape, self.low_res = shape, low_res
        self.P = to_proxy(X, shape, low_res).contiguous()           # (N, d)
        self.sqnorm = self.P.square().sum(1)                       # (N,)

    @property
    def N(self) -> int:
        return int(self.P.shape[0])

    def query(self, x_t: torch.Tensor) -> torch.Tensor:
        """(B, D) -> (B, d) proxy of the noisy query."""
        return to_proxy(x_t, self.shape, self.low_res)

    def search(self, q: torch.Tensor, scale: float, k: int, pool: torch.Tensor | None = None
               ) -> torch.Tensor:
        """Indices (B, k) into the dataset of the k smallest ||q - scale P x_i||^2, i in pool (B, m) or all."""
        if pool is None:
            d = sq_dists(q, self.P, self.sqnorm, scale)            # (B, N)
            return d.topk(min(k, self.N), dim=1, largest=False).indices
        if pool.shape[1] <= k:
            return pool
        d = gathered_sq_dists(q, self.P, self.sqnorm, pool, scale)  # (B, m)
        j = d.topk(k, dim=1, largest=False).indices
        return pool.gather(1, j)


def fine_select(x_t: torch.Tensor, X: torch.Tensor, sqnorm: torch.Tensor, cand: torch.Tensor, scale: float,
                k: int) -> torch.Tensor:
    """Among candidates (B, c) keep the k with the smallest full-resolution ||x_t - scale x_i||^2. (B, k)."""
    if cand.shape[1] <= k:
        return cand
    d = gathered_sq_dists(x_t, X, sqnorm, cand, scale)             # (B, c)
    j = d.topk(k, dim=1, largest=False).indices
    return cand.gather(1, j)
