"""DDPM noise schedule, DDIM timesteps and the DDIM (eta=0) update; GoldDiff's m_t / k_t schedules.

Notation (docs/DESIGN.md): abar_t = prod_{s<=t} (1 - beta_s), SNR_t = abar_t / (1 - abar_t), sigma_t
= sqrt(1 - abar_t). Forward process (Ho et al. 2020, eq. 4): x_t = sqrt(abar_t) x0 + sigma_t eps.
DDIM (Song et al. 2021, eq. 12 with eta = 0): see `NoiseSchedule.ddim_step`. GoldDiff's pool and
subset sizes (Shang et al. 2026, the linear schedules in sigma_t): `pool_size`, `subset_size`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch


@dataclass
class NoiseSchedule:
    T: int = 1000  # number of training timesteps
    beta_start: float = 1e-4  # first beta of the linear DDPM schedule
    beta_end: float = 0.02  # last beta
    abars: torch.Tensor = field(init=False, repr=False)  # (T,) float64, abar_t for t = 0..T-1

    def __post_init__(self):
        betas = torch.linspace(self.beta_start, self.beta_end, self.T, dtype=torch.float64)
        self.abars = torch.cumprod(1.0 - betas, dim=0)

    def _check_t(self, t: int) -> int:
        t = int(t)
        if not 0 <= t < self.T:
            raise ValueError(
                f"Timestep {t} is outside 0..{self.T - 1}; pick a t inside the schedule."
            )
        return t

    def abar(self, t: int) -> float:
        """abar_t as a python float."""
        return float(self.abars[self._check_t(t)])

    def sigma(self, t: int) -> float:
        """sigma_t = sqrt(1 - abar_t): the noise standard deviation of x_t."""
        return math.sqrt(1.0 - self.abar(t))

    def snr(self, t: int) -> float:
        """SNR_t = abar_t / (1 - abar_t)."""
        a = self.abar(t)
        return a / (1.0 - a)

    def timesteps(self, steps: int) -> list[int]:
        """DDIM timesteps, descending, evenly spaced from T-1 (pure noise) down to 0 (clean), both
        included: 10 steps -> [999, 888, ..., 111, 0]; 1 step -> [T-1]. The first step always
        starts from pure noise and the steps stay distinct for any count up to T."""
        steps = int(steps)
        if not 1 <= steps <= self.T:
            raise ValueError(
                f"steps={steps} is outside 1..{self.T}; choose a number of steps in that range."
            )
        if steps == 1:
            return [self.T - 1]
        return [round(i * (self.T - 1) / (steps - 1)) for i in range(steps - 1, -1, -1)]

    def ddim_step(
        self, x_t: torch.Tensor, x0_hat: torch.Tensor, t: int, t_prev: int
    ) -> torch.Tensor:
        """One deterministic DDIM step (eta = 0) from t to t_prev < t given an x0 prediction.

        x_t, x0_hat: (B, D).  eps_hat = (x_t - sqrt(abar_t) x0_hat) / sqrt(1 - abar_t);
        x_{t_prev} = sqrt(abar_{t_prev}) x0_hat + sqrt(1 - abar_{t_prev}) eps_hat  (DDIM eq. 12, eta
        = 0).
        Returns (B, D).
        """
        a_t, a_prev = self.abar(t), self.abar(t_prev)
        eps_hat = (x_t - math.sqrt(a_t) * x0_hat) / math.sqrt(1.0 - a_t)
        return math.sqrt(a_prev) * x0_hat + math.sqrt(1.0 - a_prev) * eps_hat

    def noise(self, x0: torch.Tensor, t: int, eps: torch.Tensor) -> torch.Tensor:
        """Forward process q(x_t | x0): sqrt(abar_t) x0 + sigma_t eps. Shapes (B, D)."""
        a = self.abar(t)
        return math.sqrt(a) * x0 + math.sqrt(1.0 - a) * eps


def pool_size(N: int, k_max: int, sigma: float) -> int:
    """GoldDiff's pool size m_t = clamp(round(k_max + (N - k_max) (1 - sigma_t)), k_max, N)."""
    return int(min(N, max(k_max, round(k_max + (N - k_max) * (1.0 - sigma)))))


def subset_size(k_min: int, k_max: int, sigma: float) -> int:
    """k_t = max(k_min, round(k_max - (k_max - k_min) (1 - sigma_t))): GoldDiff's golden subset
    size."""
    return int(max(k_min, round(k_max - (k_max - k_min) * (1.0 - sigma))))
