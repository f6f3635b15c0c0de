"""The Dataset container and the one conversion between stored uint8 pixels and model space [-1, 1].

A dataset whose float32 images would pass OUT_OF_CORE_BYTES is out-of-core: its `images` is a
`U8Images` view that converts only the rows asked for from the uint8 memory map, and the float32
copy of all N never exists (`rows`, `chunks`).
"""

from __future__ import annotations

import mmap
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
import torch

from .memory import check_memory, format_bytes

OUT_OF_CORE_BYTES = 1 << 30  # float32 images above this stay uint8 on disk (memory-mapped)
PROXY_F32_BYTES = 256 * 1024 * 1024  # out-of-core proxies above this many float32 bytes: float16


class U8Images:
    """(N, C, H, W) float32 images in [-1, 1] read on demand from uint8 pixels (a memory map):
    indexing converts only the rows asked for."""

    dtype = torch.float32

    def __init__(self, u8: np.ndarray):
        self.u8 = u8  # (N, C, H, W) uint8

    @property
    def shape(self) -> torch.Size:
        return torch.Size(self.u8.shape)

    def __len__(self) -> int:
        return int(self.u8.shape[0])

    def __getitem__(self, idx) -> torch.Tensor:
        if isinstance(idx, torch.Tensor):
            idx = idx.cpu().numpy()
        return to_unit_range(self.u8[idx])


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

    @property
    def out_of_core(self) -> bool:
        """True when the images stay uint8 on disk and rows are converted on demand."""
        return isinstance(self.images, U8Images)

    def flat(self) -> torch.Tensor:
        """(N, D) view of the images (in-core datasets only: out-of-core ones use rows / chunks)."""
        if self.out_of_core:
            raise ValueError(
                f"'{self.name}' is out-of-core (N={self.N}): its images are read a few rows at a "
                f"time; use a smaller dataset for this view."
            )
        return self.images.reshape(self.N, self.D)

    def rows(self, idx: np.ndarray | torch.Tensor) -> torch.Tensor:
        """float32 rows (*idx.shape, D) in [-1, 1]; only these rows are converted."""
        if not self.out_of_core:
            return self.flat()[torch.as_tensor(idx)]
        idx = idx.cpu().numpy() if isinstance(idx, torch.Tensor) else np.asarray(idx)
        flat = self.u8.reshape(self.N, self.D)
        # the gathered pages stay resident (a random gather re-faulting them costs ~10x): at most
        # the file's N * D bytes, shared with the page cache
        return to_unit_range(flat[idx.reshape(-1)]).reshape(*idx.shape, self.D)

    def chunks(self, size: int) -> Iterator[tuple[int, torch.Tensor]]:
        """(start, float32 rows (c, D)) over all N in order, c <= size."""
        for i in range(0, self.N, size):
            if self.out_of_core:
                x = to_unit_range(self.u8[i : i + size]).reshape(-1, self.D)
                release_pages(self.u8)
                yield i, x
            else:
                yield i, self.flat()[i : i + size]

    def subset(self, n: int, seed: int = 0) -> "Dataset":
        """A random subset of n images drawn with a fixed seed (for cost-vs-N studies)."""
        if not 1 <= n <= self.N:
            raise ValueError(f"Subset size {n} must be between 1 and N={self.N} of '{self.name}'.")
        idx = np.sort(np.random.default_rng(seed).permutation(self.N)[:n])
        if self.out_of_core:  # the uint8 rows are copied (n * D bytes), never converted
            u8 = np.ascontiguousarray(self.u8[idx])
            return Dataset(
                f"{self.name}[{n}]", U8Images(u8), self.labels[idx], self.kind, self.classes, u8
            )
        return Dataset(
            f"{self.name}[{n}]", self.images[idx], self.labels[idx], self.kind, self.classes
        )


def ram_cost(N: int, shape: tuple[int, int, int]) -> str:
    """What N images of shape (C, H, W) cost once loaded: in-core the float32 images; out-of-core
    the proxies a corpus keeps (half resolution, float16 past PROXY_F32_BYTES) and its row norms,
    while the uint8 images (N * D bytes on disk) are memory-mapped."""
    D = int(np.prod(shape))
    disk = f"disk {format_bytes(N * D)}"
    if N * D * 4 <= OUT_OF_CORE_BYTES:
        return f"RAM {format_bytes(N * D * 4)} in-core, {disk}"
    d = D // 4
    proxies = N * d * (2 if N * d * 4 > PROXY_F32_BYTES else 4)
    return f"RAM {format_bytes(proxies + N * 12)} out-of-core, {disk}"


def release_pages(u8: np.ndarray) -> None:
    """Drop the pages of a read-only memory map from this process's resident set (they stay in the
    kernel's page cache and fault back in on the next read): a pass over all of an out-of-core
    dataset (`Dataset.chunks`) then never holds the whole file resident. A no-op for RAM arrays."""
    mm = getattr(u8, "_mmap", None)
    if mm is not None and hasattr(mmap, "MADV_DONTNEED") and not u8.flags.writeable:
        mm.madvise(mmap.MADV_DONTNEED)


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


def from_u8(
    name: str,
    u8: np.ndarray,
    labels: np.ndarray,
    classes: list[str],
    out_of_core: bool | None = None,
) -> Dataset:
    """A Dataset over stored uint8 pixels (N, C, H, W), kept alongside as `u8`.

    out_of_core: keep the images uint8 (rows converted on demand); None decides by size
    (float32 images above OUT_OF_CORE_BYTES). In-core, the memory guard checks the float32 copy
    before it is allocated.
    """
    labels = np.asarray(labels, np.int64)
    f32 = int(np.prod(u8.shape, dtype=np.int64)) * 4
    if out_of_core is None:
        out_of_core = f32 > OUT_OF_CORE_BYTES
    if out_of_core:
        return Dataset(name, U8Images(u8), labels, classes=classes, u8=u8)
    check_memory(
        f32,
        f"the float32 images of '{name}' (N={u8.shape[0]}, {format_bytes(f32)})",
        "use a smaller dataset or load it out-of-core",
    )
    return Dataset(name, to_unit_range(u8), labels, classes=classes, u8=u8)
