"""Data statistics: mean, covariance eigendecomposition, Wiener shrinkage, PCA-locality masks.

Wiener:   x0_hat = mu + U diag(s) U^T (x_t / sqrt(abar) - mu),  s_k = abar l_k / (abar l_k + 1 - abar)
Locality: L_t = U diag(s) U^T;  M0[n, m] = L_t[n, m] / L_t[n, n];  M_t = 1[|M0| >= threshold * max |M0|]
"""
from __future__ import annotations

import math

import numpy as np
import torch

from .memory import check_memory


def mean_and_cov(X: torch.Tensor, chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (D,) and covariance (D, D) of X (N, D), accumulated in float64 over row chunks."""
    N, D = X.shape
    s = torch.zeros(D, dtype=torch.float64, device=X.device)
    ss = torch.zeros(D, D, dtype=torch.float64, device=X.device)
    for i in range(0, N, chunk):
        xc = X[i:i + chunk].to(torch.float64)
        s += xc.sum(0)
        ss += xc.T @ xc
    mu = s / N
    cov = ss / N - torch.outer(mu, mu)
    return mu, (cov + cov.T) / 2


# A pixel whose L_t[n, n] is below this fraction of the largest diagonal entry counts as degenerate.
DEGENERATE_REL = 1e-3
# Masks kept in memory per DataStats: enough for every step of a 10-step run up to D = 3 x 64 x 64 on a GPU.
MASK_CACHE_BYTES = 1 << 30


class DataStats:
    """Gaussian statistics of one dataset and the per-timestep quantities derived from them.

    mean: (D,); eigvals: (D,) descending, clipped at 0; eigvecs: (D, D) columns u_k. Stored float32 on `device`.
    Masks are cached per (t, threshold) because they depend only on these statistics and t.
    """

    def __init__(self, mean: torch.Tensor, eigvals: torch.Tensor, eigvecs: torch.Tensor):
        self.mean, self.eigvals, self.eigvecs = mean, eigvals, eigvecs
        self._masks: dict[tuple[float, float], torch.Tensor] = {}

    @classmethod
    def from_data(cls, X: torch.Tensor) -> "DataStats":
        """X: (N, D) on any device. Eigendecomposition in float64."""
        D = int(X.shape[1])
        # ss, cov and eigh's eigenvectors + workspace: about four (D, D) float64 matrices at once
        check_memory(4 * D * D * 8 + min(int(X.shape[0]), 4096) * D * 8, f"the ({D}, {D}) float64 data covariance",
                     "use a lower-resolution dataset", X.device)
        mu, cov = mean_and_cov(X)
        lam, U = torch.linalg.eigh(cov)                   # ascending
        lam, U = lam.flip(0).clamp_min(0.0), U.flip(1)
        return cls(mu.float(), lam.float(), U.float().contiguous())

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], device: torch.device) -> "DataStats":
        return cls(*(torch.from_numpy(np.asarray(arrays[k])).to(device) for k in ("mean", "eigvals", "eigvecs")))

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {k: getattr(self, k).cpu().numpy() for k in ("mean", "eigvals", "eigvecs")}

    @property
    def D(self) -> int:
        return int(self.mean.shape[0])

    def shrinkage(self, abar: float) -> torch.Tensor:
        """(D,) Wiener factors s_k = abar l_k / (abar l_k + 1 - abar)."""
        lam = self.eigvals.double()
        return (abar * lam / (abar * lam + (1.0 - abar))).float()

    def wiener(self, x_t: torch.Tensor, abar: float) -> torch.Tensor:
        """Gaussian posterior mean. x_t: (B, D) -> (B, D)."""
        U, mu = self.eigvecs, self.mean
        z = (x_t / math.sqrt(abar) - mu) @ U               # (B, D) coefficients along u_k
        return mu + (z * self.shrinkage(abar)) @ U.T

    def locality_operator(self, abar: float) -> torch.Tensor:
        """(D, D) L_t = U diag(s) U^T, built in float64 for accuracy."""
        U = self.eigvecs.double()
        s = self.shrinkage(abar).double()
        return (U * s) @ U.T

    def mask(self, t: int, abar: float, threshold: float) -> torch.Tensor:
        """(D, D) binary PCA-locality mask M_t (float32, on the stats' device), cached per (t, threshold).

        Column m of M_t lists the pixels n whose residuals enter the posterior of output pixel m.
        threshold = 0 gives the all-ones mask (the PCA-locality denoiser then equals Optimal).
        """
        key = (int(t), float(threshold))
        if key not in self._masks:
            if threshold <= 0:
                M = torch.ones(self.D, self.D, device=self.mean.device)
            else:
                check_memory(4 * self.D * self.D * 8, f"the ({self.D}, {self.D}) PCA-locality mask",
                             "use a lower-resolution dataset", self.mean.device)
                L = self.locality_operator(abar)
                diag = torch.diagonal(L).clone()
                # Degenerate pixels (almost constant in the data, e.g. MNIST's black border: L[n, n] ~ 1e-10)
                # would make L[n, m] / L[n, n] huge and set max |M0| alone, leaving every other pixel a
                # neighbourhood of ~20 scattered pixels. Their rows are dropped (their residual is the same
                # for every training image, so it cancels in the softmax anyway); each pixel keeps itself.
                degenerate = diag < DEGENERATE_REL * diag.max()
                M0 = (L / torch.where(degenerate, torch.ones_like(diag), diag)[:, None]).abs()  # row n / L[n, n]
                M0[degenerate] = 0.0
                M0.fill_diagonal_(1.0)
                M = (M0 >= threshold * M0.max()).float()
            self._masks[key] = M.contiguous()
            self._evict_masks(keep=key)
        return self._masks[key]

    def _evict_masks(self, keep: tuple) -> None:
        """Bound the mask cache to MASK_CACHE_BYTES (oldest first; a 100-step run at D = 3072 would hold ~3.8 GB)."""
        per = 4 * self.D * self.D
        while len(self._masks) > max(1, MASK_CACHE_BYTES // per):
            oldest = next(k for k in self._masks if k != keep)
            del self._masks[oldest]

    def gaussian_trajectory_coeffs(self, abar_t: float, abar_T: float) -> tuple[torch.Tensor, float]:
        """Closed-form PF-ODE of the Gaussian (Wang & Vastola): per-eigenvector scale (D,) taking the
        coefficient of (x - sqrt(abar) mu) along u_k from time T to t, and the scale of the residual
        outside the kept eigenvectors: sqrt((1 + abar_t (l_k - 1)) / (1 + abar_T (l_k - 1))) and
        sqrt((1 - abar_t) / (1 - abar_T))."""
        lam = self.eigvals.double()
        scale = torch.sqrt((1 + abar_t * (lam - 1)) / (1 + abar_T * (lam - 1)))
        return scale.float(), math.sqrt((1 - abar_t) / (1 - abar_T))

    def teleport(self, x_T: torch.Tensor, abar_T: float, abar_t: float) -> torch.Tensor:
        """Jump the PF-ODE of N(mu, Sigma) from x_T (B, D) at abar_T to abar_t in closed form. Returns (B, D).

        Along u_k: x - sqrt(abar) mu evolves by the Gaussian scale; all D eigenvectors are kept here, so the
        residual term (used when only the top eigenvectors are kept) vanishes."""
        U, mu = self.eigvecs, self.mean
        scale, _ = self.gaussian_trajectory_coeffs(abar_t, abar_T)
        z = (x_T - math.sqrt(abar_T) * mu) @ U               # (B, D)
        return math.sqrt(abar_t) * mu + (z * scale) @ U.T
