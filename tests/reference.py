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


def official_alphas_cumprod(T: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """abar_t as the official code's scheduler holds it: a float32 linspace of betas, cumprod in float32."""
    betas = torch.linspace(beta_start, beta_end, T, dtype=torch.float32)
    return torch.cumprod(1.0 - betas, dim=0)


def official_covariance_svd(X: torch.Tensor, batch: int = 256):
    """The official GoldDiff statistics, transcribed step by step from its description: X (N, D) float32 read in
    data loader batches; mean = float32 sum over the batches / N; covariance = float32 sum of centred^T centred
    over the batches / (N - 1); its float32 SVD. Returns (U, singular values, Vh)."""
    N, D = X.shape
    total = torch.zeros(D)
    for lo in range(0, N, batch):
        total += X[lo : lo + batch].sum(dim=0)
    mu = total / N
    acc = torch.zeros(D, D)
    for lo in range(0, N, batch):
        c = X[lo : lo + batch] - mu.unsqueeze(0)
        acc += c.T @ c
    return torch.linalg.svd(acc / (N - 1))


def official_mask(svd, abar: torch.Tensor, threshold: float) -> torch.Tensor:
    """The official mask from those statistics: L = U diag(abar l / (1 - abar + abar l)) Vh, each row divided by
    its diagonal (|diagonal| < 1e-6 -> 1), 1 where |entry| >= threshold * the largest |entry|. abar: float32
    0-dim (`official_alphas_cumprod`)."""
    U, lam, Vh = svd
    beta = 1 - abar
    L = (U * (abar * lam / (beta + abar * lam)).unsqueeze(0)) @ Vh
    d = torch.diagonal(L).unsqueeze(1).clone()
    d[d.abs() < 1e-6] = 1.0
    ratio = (L / d).abs()
    return (ratio >= ratio.max() * threshold).float()


def official_published_mask(X: torch.Tensor, abar: torch.Tensor, threshold: float, batch: int = 256) -> torch.Tensor:
    """`official_mask` of `official_covariance_svd`."""
    return official_mask(official_covariance_svd(X, batch), abar, threshold)
