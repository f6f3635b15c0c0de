"""What a denoiser returns: the x0 estimate and the raw material of the diagnostics."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class DenoiseOutput:
    x0_hat: torch.Tensor  # (B, D) the x0 estimate
    method: str  # the method that made it (hybrid: "wiener" or "golddiff")
    pixel_entropy: torch.Tensor | None = None  # (B, D) per-pixel posterior entropy H(m), nats
    subset: torch.Tensor | None = None  # (B, k_t) dataset indices of the golden subset S_t
    # (B, k_t) mean over pixels of each subset image's weight
    subset_weight: torch.Tensor | None = None
    m_t: int | None = None  # coarse pool size
    k_t: int | None = None  # golden subset size
    timings: dict = field(default_factory=dict)  # seconds: screen, select, aggregate
    # (B,) share of the exact proxy top-k_max an approximate search found (None: exact search)
    search_recall: torch.Tensor | None = None
    # (B,) bool: the sample screened all N (nearest) this step
    pool_nearest: torch.Tensor | None = None
    k_b: torch.Tensor | None = None  # (B,) adaptive: distinct images aggregated per sample (k_t)
    m_b: torch.Tensor | None = None  # (B,) local: candidates screened per sample (its m_t)
    # (B,) local: images of S_t that only the previous step's carry brought (no screen found them)
    c_b: torch.Tensor | None = None
    # local: per sample, the dataset indices this step hands to the next (its weighty images)
    carry: list[torch.Tensor] | None = None
    # (B, k) adaptive: each subset image's log weight log C_i - log q_i (-inf on the padding)
    subset_offset: torch.Tensor | None = None
    error_est: torch.Tensor | None = None  # (B,) adaptive: estimated one-step 1 - r^2
