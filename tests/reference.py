"""Straightforward reference formulas the fast kernels are tested against (written independently of them)."""

import math

import torch


def locality_logits(
    x_t: torch.Tensor, Xc: torch.Tensor, M: torch.Tensor, abar: float, tau: float = 1.0
) -> torch.Tensor:
    """PCA-locality per-pixel logits, the formula as written: x_t (B, D); Xc (c, D) or (B, c, D); M (D, D).
    Returns (B, c, D) with logits[b, i, m] = -sum_n M[n, m] (x_t[b, n] - sqrt(abar) Xc[i, n])^2 / (2 (1-abar) tau).
    """
    Xb = Xc if Xc.dim() == 3 else Xc[None]
    d2 = (x_t[:, None, :] - math.sqrt(abar) * Xb) ** 2  # (B, c, D)
    return -(d2 @ M) / (2.0 * (1.0 - abar) * tau)
