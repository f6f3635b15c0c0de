"""The Dataset container and the one conversion
between stored uint8 pixels and model space [-1, 1]."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch


@dataclass
class Dataset:
    name: str  # registry name, e.g. "mnist-5k"
    images: torch.Tensor  # (N, C, H, W) float32 in [-1, 1], on the CPU
    labels: np.ndarray  # (N,) int64 class labels (-1 when unknown)
    kind: str = "image"  # "image" or "toy" (2-D points stored as (N, 2, 1, 1))
    classes: list[str] = field(default_factory=list)  # label names where known
    u8: np.ndarray | None = field(
        default=None, repr=False
    )  # (N, C, H, W) uint8 source (memory-mapped cache)

    @property
    def N(self) -> int:
        return int(self.images.shape[0])

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        return tuple(int(s) for s in self.images.shape[1:])

    @property
    def D(self) -> int:
        c, h, w = self.shape
        return c * h * w

    def flat(self) -> torch.Tensor:
        """(N, D) view of the images."""
        return self.images.reshape(self.N, self.D)

    def subset(self, n: int, seed: int = 0) -> "Dataset":
        """A random subset of n images drawn with a fixed seed (for cost-vs-N studies)."""
        if not 1 <= n <= self.N:
            raise ValueError(f"Subset size {n} must be between 1 and N={self.N} of '{self.name}'.")
        idx = np.sort(np.random.default_rng(seed).permutation(self.N)[:n])
        return Dataset(
            f"{self.name}[{n}]", self.images[idx], self.labels[idx], self.kind, self.classes
        )


def to_unit_range(u8: np.ndarray) -> torch.Tensor:
    """uint8 or [0, 255] float array -> float32 tensor in [-1, 1] (a new array; the input is not
    modified)."""
    x = np.array(u8, dtype=np.float32)  # one fresh copy, then in place (no temporaries)
    np.divide(x, np.float32(127.5), out=x)
    np.subtract(x, np.float32(1.0), out=x)
    return torch.from_numpy(x)


def to_uint8(x: np.ndarray | torch.Tensor) -> np.ndarray:
    """Model-space values in [-1, 1] (any shape) -> uint8 pixels 0..255 (clipped, rounded): inverse
    of `to_unit_range` up to rounding."""
    x = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    return (np.clip((x.astype(np.float32) + 1.0) * 127.5, 0.0, 255.0)).round().astype(np.uint8)


def from_u8(name: str, u8: np.ndarray, labels: np.ndarray, classes: list[str]) -> Dataset:
    """A Dataset over stored uint8 pixels (N, C, H, W), kept alongside as `u8`."""
    return Dataset(name, to_unit_range(u8), np.asarray(labels, np.int64), classes=classes, u8=u8)
