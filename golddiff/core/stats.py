"""Data statistics: mean, covariance eigendecomposition, Wiener shrinkage, PCA-locality masks,
Gaussian PF-ODE.

Wiener (Wang & Vastola 2023, the Gaussian posterior mean):
  x0_hat = mu + U diag(s) U^T (x_t / sqrt(abar) - mu),  s_k = abar l_k / (abar l_k + 1 - abar)
PCA locality (Lukoianov et al. 2025; GoldDiff, Shang et al. 2026, uses the same mask):
  L_t = U diag(s) U^T;  M0[n, m] = L_t[n, m] / L_t[n, n];  M_t = 1[|M0| >= threshold * max |M0|]
Two mask rules (`MASK_RULES`): "stable" (this project's default, degenerate rows dropped, float64)
and "published" (the official GoldDiff code's construction: a float32 covariance accumulated over
the data, a float32 SVD, a global max; `published_factors`); see docs/DESIGN.md, "Deviations".
Gaussian PF-ODE in closed form (Wang & Vastola 2024, "analytical teleportation"): `teleport`.
"""

from __future__ import annotations

import math
import threading
from typing import Callable, Iterable

import numpy as np
import torch

from ..data.memory import check_memory


def moments_of(chunks: Iterable[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """sum_i x_i (D,) and sum_i x_i x_i^T (D, D) of rows that arrive as (c, D) chunks (streamed from
    disk for an out-of-core corpus: the N rows are never held at once), in float64 on the chunks'
    device. Sums add across shards (a corpus split across ranks all-reduces them)."""
    sum_x = sum_xx = None
    for part in chunks:
        rows = part.to(torch.float64)  # (c, D)
        if sum_x is None:
            D = rows.shape[1]
            sum_x = torch.zeros(D, dtype=torch.float64, device=rows.device)  # (D,)
            sum_xx = torch.zeros(D, D, dtype=torch.float64, device=rows.device)  # (D, D)
        sum_x += rows.sum(0)
        sum_xx += rows.T @ rows
    return sum_x, sum_xx


def moments(X: torch.Tensor, chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """`moments_of` the rows of X (N, D), in chunks of `chunk` rows."""
    return moments_of(X[i : i + chunk] for i in range(0, X.shape[0], chunk))


def published_factors(
    rows: Callable[[int], Iterable[torch.Tensor]],
    N: int,
    all_reduce: Callable[[torch.Tensor], torch.Tensor] = lambda t: t,
) -> dict[str, torch.Tensor]:
    """U (D, D), S (D,), Vh (D, D): the float32 SVD of the data covariance built as the official
    GoldDiff code builds it, on the rows' device. rows(b) yields the N rows in order as (c, D)
    float32 chunks of at most b rows; they are read in PUBLISHED_BATCH-row batches, twice:
      mean  = (float32 sum over batches of the batch's column sums) / N
      Sigma = (float32 sum over batches of centred^T centred, centred = batch - mean) / (N - 1)
    `all_reduce` sums the two float32 accumulators over ranks (a sharded corpus: equal to one
    process up to float32 round-off, since the batches differ)."""
    total = None
    for x in rows(PUBLISHED_BATCH):
        part = x.sum(dim=0)  # (D,) float32
        total = part if total is None else total + part
    if total is None:
        raise ValueError("The published mask rule needs at least one image.")
    D = total.shape[0]
    check_memory(
        5 * D * D * 4,
        f"the ({D}, {D}) float32 covariance and SVD of the published mask rule",
        "use a lower-resolution dataset or mask_rule='stable'",
        total.device,
    )
    mean = all_reduce(total) / N  # (D,)
    acc = torch.zeros(D, D, dtype=torch.float32, device=total.device)  # (D, D)
    for x in rows(PUBLISHED_BATCH):
        centred = x - mean.unsqueeze(0)  # (c, D)
        acc += centred.T @ centred
    U, S, Vh = torch.linalg.svd(all_reduce(acc) / (N - 1))
    return {"U": U, "S": S, "Vh": Vh}


def cov_from_moments(
    s: torch.Tensor, ss: torch.Tensor, N: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (D,) and covariance (D, D), divisor N, from the sums of `moments` over N rows."""
    mu = s / N
    cov = ss / N - torch.outer(mu, mu)
    return mu, (cov + cov.T) / 2


# A pixel whose L_t[n, n] is below this fraction of the largest diagonal entry counts as degenerate.
DEGENERATE_REL = 1e-3
# The published rule's guard: a diagonal entry |L_t[n, n]| below this is replaced by 1 before
# dividing.
PUBLISHED_EPS = 1e-6
# Rows per batch of the published rule's covariance passes: the batch size of the official code's
# data loaders (its configurations for MNIST, Fashion-MNIST, CIFAR-10, CelebA-HQ and AFHQ).
PUBLISHED_BATCH = 256
MASK_RULES = ("stable", "published")
# Masks kept in memory per DataStats: enough for every step of a 10-step run up to D = 3 x 64 x 64
# on a GPU.
MASK_CACHE_BYTES = 1 << 30


class DataStats:
    """Gaussian statistics of one dataset and the per-timestep quantities derived from them.

    mean: (D,); eigvals: (D,) descending, clipped at 0, of the covariance with divisor N; eigvecs:
    (D, D)
    columns u_k. Stored float32 on `device`. n: the number of images (the published mask rule needs
    N - 1).
    Masks are cached per (t, threshold, rule) because they depend only on these statistics and t;
    the cache is
    guarded by a lock (app sessions share one DataStats from threads).
    """

    def __init__(
        self, mean: torch.Tensor, eigvals: torch.Tensor, eigvecs: torch.Tensor, n: int | None = None
    ):
        self.mean, self.eigvals, self.eigvecs, self.n = mean, eigvals, eigvecs, n
        self._masks: dict[tuple, torch.Tensor] = {}
        self._lock = threading.Lock()
        # () -> `published_factors` of the data these statistics describe, called once when the
        # published mask rule is first used (set by from_data and by the corpus)
        self.published_source: Callable[[], dict[str, torch.Tensor]] | None = None
        self._published: dict[str, torch.Tensor] | None = None
        self._published_lock = threading.Lock()

    @classmethod
    def from_data(cls, X: torch.Tensor) -> "DataStats":
        """X: (N, D) on any device, read in chunks of 4096 rows. Eigendecomposition in float64."""
        N, D = int(X.shape[0]), int(X.shape[1])
        stats = cls.from_chunks((X[i : i + 4096] for i in range(0, N, 4096)), N, D, X.device)
        rows = lambda b: (X[i : i + b].float() for i in range(0, N, b))  # noqa: E731
        stats.published_source = lambda: published_factors(rows, N)
        return stats

    @classmethod
    def from_chunks(
        cls, chunks: Iterable[torch.Tensor], N: int, D: int, device: torch.device | None = None
    ) -> "DataStats":
        """Statistics of N rows streamed as (c, D) chunks (out-of-core corpora and `from_data`)."""
        # the sums, cov and eigh's eigenvectors + workspace: about four (D, D) float64 matrices
        check_memory(
            4 * D * D * 8 + min(N, 4096) * D * 8,
            f"the ({D}, {D}) float64 data covariance",
            "use a lower-resolution dataset",
            device,
        )
        return cls.from_moments(*moments_of(chunks), N)

    @classmethod
    def from_moments(cls, s: torch.Tensor, ss: torch.Tensor, n: int) -> "DataStats":
        """From the float64 sums of `moments` over n rows. Eigendecomposition in float64."""
        mu, cov = cov_from_moments(s, ss, n)
        lam, U = torch.linalg.eigh(cov)  # ascending
        lam, U = lam.flip(0).clamp_min(0.0), U.flip(1)
        return cls(mu.float(), lam.float(), U.float().contiguous(), int(n))

    @classmethod
    def from_arrays(
        cls, arrays: dict[str, np.ndarray], device: torch.device, n: int | None = None
    ) -> "DataStats":
        parts = (
            torch.from_numpy(np.asarray(arrays[k])).to(device)
            for k in ("mean", "eigvals", "eigvecs")
        )
        return cls(*parts, n=n)

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
        z = (x_t / math.sqrt(abar) - mu) @ U  # (B, D) coefficients along u_k
        return mu + (z * self.shrinkage(abar)) @ U.T

    def locality_operator(self, abar: float) -> torch.Tensor:
        """(D, D) L_t = U diag(s) U^T, built in float64 for accuracy."""
        U = self.eigvecs.double()
        shrink = self.shrinkage(abar).double()  # (D,) s_k
        return (U * shrink) @ U.T

    def mask(self, t: int, abar: float, threshold: float, rule: str = "stable") -> torch.Tensor:
        """(D, D) binary PCA-locality mask M_t (float32, on the stats' device), cached per (t,
        threshold, rule).

        Column m of M_t lists the pixels n whose residuals enter the posterior of output pixel m.
        threshold = 0 gives the all-ones mask (the PCA-locality denoiser then equals Optimal).
        rule: "stable" (`_stable_m0`) or "published" (`_published_m0`).
        """
        if rule not in MASK_RULES:
            raise ValueError(f"Unknown mask rule '{rule}'; choose one of: {', '.join(MASK_RULES)}.")
        key = (int(t), float(threshold), rule)
        with self._lock:
            M = self._masks.get(key)
        if M is not None:
            return M
        if threshold <= 0:
            M = torch.ones(self.D, self.D, device=self.mean.device)
        else:
            check_memory(
                4 * self.D * self.D * 8,
                f"the ({self.D}, {self.D}) PCA-locality mask",
                "use a lower-resolution dataset",
                self.mean.device,
            )
            if rule == "stable":
                M = (self.locality_strength(abar, rule) >= threshold).float()
            else:  # as published: the float32 max times the threshold
                M0 = self._published_m0(abar)  # (D, D) float32
                M = (M0 >= M0.max() * threshold).float()
        with self._lock:
            self._masks[key] = M.contiguous()
            self._evict_masks(keep=key)
            return self._masks[key]

    def locality_strength(self, abar: float, rule: str = "stable") -> torch.Tensor:
        """(D, D) |M0| / max |M0| under `rule`: the continuous strength that the mask thresholds,
        M_t = 1[strength >= threshold]. Column m is pixel m's neighbourhood (How it works draws it).
        """
        M0 = self._stable_m0(abar) if rule == "stable" else self._published_m0(abar)
        return M0 / M0.max()

    def _stable_m0(self, abar: float) -> torch.Tensor:
        """|M0| of this project's rule, in float64. Degenerate pixels (almost constant in the data,
        e.g. MNIST's black border: L[n, n] ~ 1e-10) would make L[n, m] / L[n, n] huge and set max
        |M0| alone, leaving every other pixel a neighbourhood of ~20 scattered pixels. Their rows
        (L[n, n] < DEGENERATE_REL * max diag) are dropped: their residual is the same for every
        training image, so it cancels in the softmax anyway. Each pixel keeps itself (M0[m, m] = 1).
        Returns (D, D) float64."""
        L = self.locality_operator(abar)  # (D, D) float64
        diag = torch.diagonal(L).clone()
        degenerate = diag < DEGENERATE_REL * diag.max()
        M0 = (
            L / torch.where(degenerate, torch.ones_like(diag), diag)[:, None]
        ).abs()  # row n / L[n, n]
        M0[degenerate] = 0.0
        M0.fill_diagonal_(1.0)
        return M0

    def _published_m0(self, abar: float) -> torch.Tensor:
        """|M0| of the official GoldDiff code's rule, reproduced for comparison: the float32 SVD
        U diag(S) Vh of the covariance accumulated over the data in float32 (`published_factors`),
        L = U diag(s) Vh in float32 with s = abar S / ((1 - abar) + abar S) (abar in float32), each
        row divided by its diagonal entry (entries with |L[n, n]| < PUBLISHED_EPS replaced by 1).
        At float32 round-off the near-constant pixels set the global max, so the mask is much
        sparser than the stable rule's at low noise (docs/DESIGN.md, "Deviations"). Returns (D, D)
        float32."""
        f = self.published()
        a = torch.tensor(abar, dtype=torch.float32, device=f["S"].device)
        shrink = a * f["S"] / ((1 - a) + a * f["S"])  # (D,)
        L = (f["U"] * shrink.unsqueeze(0)) @ f["Vh"]  # (D, D) float32
        diag = torch.diagonal(L).clone()
        diag[diag.abs() < PUBLISHED_EPS] = 1.0
        return (L / diag.unsqueeze(1)).abs()

    def published(self) -> dict[str, torch.Tensor]:
        """The published rule's float32 SVD factors U, S, Vh (`published_factors`), built once."""
        with self._published_lock:
            if self._published is None:
                if self.published_source is None:
                    raise ValueError(
                        "mask_rule='published' needs the images themselves (its covariance is "
                        "accumulated over the data); build the statistics with DataStats.from_data "
                        "or through a corpus."
                    )
                f = self.published_source()
                self._published = {k: v.to(self.mean.device, torch.float32) for k, v in f.items()}
            return self._published

    def _evict_masks(self, keep: tuple) -> None:
        """Bound the mask cache to MASK_CACHE_BYTES (oldest first; a 100-step run at D = 3072 would
        hold ~3.8 GB)."""
        per = 4 * self.D * self.D
        while len(self._masks) > max(1, MASK_CACHE_BYTES // per):
            oldest = next(k for k in self._masks if k != keep)
            del self._masks[oldest]

    def gaussian_trajectory_coeffs(
        self, abar_t: float, abar_T: float
    ) -> tuple[torch.Tensor, float]:
        """Closed-form PF-ODE of the Gaussian (Wang & Vastola): per-eigenvector scale (D,) taking
        the coefficient of (x - sqrt(abar) mu) along u_k from time T to t, and the scale of the
        residual outside the kept eigenvectors: sqrt((1 + abar_t (l_k - 1)) / (1 + abar_T (l_k -
        1))) and sqrt((1 - abar_t) / (1 - abar_T))."""
        lam = self.eigvals.double()
        scale = torch.sqrt((1 + abar_t * (lam - 1)) / (1 + abar_T * (lam - 1)))
        return scale.float(), math.sqrt((1 - abar_t) / (1 - abar_T))

    def teleport(self, x_T: torch.Tensor, abar_T: float, abar_t: float) -> torch.Tensor:
        """Jump the PF-ODE of N(mu, Sigma) from x_T (B, D) at abar_T to abar_t in closed form.
        Returns (B, D).

        Along u_k: x - sqrt(abar) mu evolves by the Gaussian scale; all D eigenvectors are kept
        here, so the residual term (used when only the top eigenvectors are kept) vanishes."""
        U, mu = self.eigvecs, self.mean
        scale, _ = self.gaussian_trajectory_coeffs(abar_t, abar_T)
        z = (x_T - math.sqrt(abar_T) * mu) @ U  # (B, D)
        return math.sqrt(abar_t) * mu + (z * scale) @ U.T
