"""Posterior logits and the streaming (online) softmax that aggregates over chunks of training images.

Global posterior (Optimal):   logit_i = -||x_t - sqrt(abar) x_i||^2 / (2 (1 - abar) tau)
PCA-locality (per pixel m):   logit_i(m) = -sum_n M[n, m] (x_t[n] - sqrt(abar) x_i[n])^2 / (2 (1 - abar) tau)

Terms that do not depend on i cancel in the softmax; `global_logits` drops ||x_t||^2 for that reason.
Nothing here ever holds a (B, N, D) tensor: callers feed chunks of at most `chunk_rows(B, D)` images.
"""
from __future__ import annotations

import math

import torch

# Elements of one (B, chunk, D) work tensor; about 64 MB in float32. Several such tensors live at once.
CHUNK_ELEMS = 16 * 1024 * 1024


def chunk_rows(B: int, D: int, elems: int = CHUNK_ELEMS) -> int:
    """How many training images one chunk of a (B, chunk, D) computation may hold."""
    return max(1, elems // max(1, B * D))


def global_logits(x_t: torch.Tensor, X: torch.Tensor, sqnorm: torch.Tensor, abar: float, tau: float = 1.0
                  ) -> torch.Tensor:
    """Global-posterior logits up to a per-row constant.

    x_t: (B, D); X: (N, D); sqnorm: (N,) = ||x_i||^2.  Returns (B, N):
    (2 sqrt(abar) <x_t, x_i> - abar ||x_i||^2) / (2 (1 - abar) tau).
    """
    s = math.sqrt(abar)
    return (2.0 * s * (x_t @ X.T) - abar * sqnorm[None, :]) / (2.0 * (1.0 - abar) * tau)


def locality_logits(x_t: torch.Tensor, Xc: torch.Tensor, M: torch.Tensor, abar: float, tau: float = 1.0
                    ) -> torch.Tensor:
    """PCA-locality per-pixel logits of a chunk of images.

    x_t: (B, D); Xc: (c, D) shared by the batch or (B, c, D) per sample; M: (D, D) mask.
    Returns (B, c, D): logits[b, i, m] = -sum_n M[n, m] (x_t[b, n] - sqrt(abar) Xc[i, n])^2 / (2 (1-abar) tau).
    """
    s = math.sqrt(abar)
    diff = x_t[:, None, :] - s * Xc if Xc.dim() == 3 else x_t[:, None, :] - s * Xc[None]   # (B, c, D)
    d2 = diff.square_()
    return (d2 @ M).mul_(-1.0 / (2.0 * (1.0 - abar) * tau))


class StreamingSoftmax:
    """Exact softmax-weighted average over chunks with an online log-sum-exp.

    Feed chunks of logits (B, c, P) with values (c, D) or (B, c, D), where P is D (one posterior per pixel)
    or 1 (one posterior shared by all pixels). Keeps, per (b, p): the running max mx, s0 = sum e,
    s1 = sum e * logit (for the entropy) and sx = sum e * x, with e = exp(logit - mx).
    Optionally also the mass s_sub = sum over flagged images of e (captured mass of a subset).
    """

    def __init__(self):
        self.mx = self.s0 = self.s1 = self.sx = self.s_sub = None

    def add(self, logits: torch.Tensor, values: torch.Tensor, flag: torch.Tensor | None = None) -> None:
        """logits: (B, c, P); values: (c, D) or (B, c, D); flag: optional (B, c) bool."""
        cmax = logits.amax(dim=1)                                          # (B, P)
        new_mx = cmax if self.mx is None else torch.maximum(self.mx, cmax)
        e = torch.exp(logits - new_mx[:, None, :])                         # (B, c, P)
        if logits.shape[2] == 1:                                           # shared posterior: a matmul
            ex = e[..., 0] @ values if values.dim() == 2 else torch.einsum("bc,bcd->bd", e[..., 0], values)
        else:
            ex = (e * (values[None] if values.dim() == 2 else values)).sum(1)
        s0, s1 = e.sum(1), (e * logits).sum(1)
        sub = None if flag is None else (e * flag[..., None]).sum(1)
        if self.mx is None:
            self.s0, self.s1, self.sx, self.s_sub = s0, s1, ex, sub
        else:
            r = torch.exp(self.mx - new_mx)                                # (B, P) rescale of the old sums
            self.s0 = self.s0 * r + s0
            self.s1 = self.s1 * r + s1
            self.sx = self.sx * r + ex
            if sub is not None:
                self.s_sub = self.s_sub * r + sub
        self.mx = new_mx

    def mean(self) -> torch.Tensor:
        """(B, D): the posterior mean sum_i w_i x_i."""
        return self.sx / self.s0

    def entropy(self) -> torch.Tensor:
        """(B, P): entropy in nats, H = log s0 + mx - s1 / s0."""
        return torch.log(self.s0) + self.mx - self.s1 / self.s0

    def captured(self) -> torch.Tensor:
        """(B, P): posterior mass on the flagged images."""
        return self.s_sub / self.s0
