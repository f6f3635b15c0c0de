"""Augmented copies of a uint8 dataset, streamed into the on-disk cache: `fashion-mnist-x16` is
every Fashion-MNIST training image under 16 fixed shifts and flips (960,000 images).

The copies are written chunk by chunk into a memory-mapped cache file (`cache.Streamed`), so
neither the build nor a later load holds the whole set in RAM; the result loads out-of-core when
its float32 form would pass `datasets.OUT_OF_CORE_BYTES`.
"""

from __future__ import annotations

import numpy as np

from .cache import Streamed, cached_arrays, fingerprint
from .datasets import Dataset, from_u8

# (dy, dx) pixel shifts, zero filled; copies 8..15 repeat them on the left-right mirrored image
SHIFTS = ((0, 0), (0, 1), (0, -1), (1, 0), (-1, 0), (1, 1), (-1, -1), (1, -1))
COPIES = 2 * len(SHIFTS)
CHUNK = 8192  # source images per write


def transform(u8: np.ndarray, j: int) -> np.ndarray:
    """Copy j (0..15) of images u8 (n, C, H, W): shift SHIFTS[j % 8] (zero fill), mirrored
    left-right first when j >= 8. Returns a new (n, C, H, W) uint8 array."""
    src = u8[..., ::-1] if j >= len(SHIFTS) else u8
    dy, dx = SHIFTS[j % len(SHIFTS)]
    H, W = u8.shape[-2:]
    out = np.zeros_like(u8)
    out[..., max(dy, 0) : H + min(dy, 0), max(dx, 0) : W + min(dx, 0)] = src[
        ..., max(-dy, 0) : H + min(-dy, 0), max(-dx, 0) : W + min(-dx, 0)
    ]
    return out


def _fill(u8: np.ndarray, out: np.ndarray, name: str) -> None:
    """out[j * n + i] = transform(u8[i], j), written in chunks with a progress bar (stderr)."""
    from tqdm import tqdm

    n = u8.shape[0]
    with tqdm(total=COPIES * n, unit="img", desc=f"building {name}", disable=None) as bar:
        for j in range(COPIES):
            for i in range(0, n, CHUNK):
                part = transform(np.asarray(u8[i : i + CHUNK]), j)
                out[j * n + i : j * n + i + part.shape[0]] = part
                bar.update(part.shape[0])


def cache_key(name: str) -> str:
    """The cache entry of an augmented set (its stored meta names the source, so a changed source
    rebuilds it)."""
    return f"dataset/{name}/x{COPIES}"


def augmented16(
    name: str,
    u8: np.ndarray,
    labels: np.ndarray,
    classes: list[str],
    out_of_core: bool | None = None,
) -> Dataset:
    """The 16-copy dataset of u8 (n, C, H, W) uint8: built once into the cache, memory-mapped after.

    Image j * n + i is copy j of source image i (`transform`); labels repeat."""
    n = int(u8.shape[0])
    key = cache_key(name)
    meta = {"source": fingerprint(u8), "n": n, "shifts": [list(s) for s in SHIFTS]}
    arrays = cached_arrays(
        key,
        lambda: {
            "images": Streamed((COPIES * n, *u8.shape[1:]), np.uint8, lambda o: _fill(u8, o, name)),
            "labels": np.tile(np.asarray(labels, np.int64), COPIES),
        },
        meta=meta,
    )
    return from_u8(name, arrays["images"], arrays["labels"], classes, out_of_core)
