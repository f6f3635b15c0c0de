"""Content hashes of arrays: a full checksum for cache entries and a cheap strided fingerprint for
cache keys."""

from __future__ import annotations

import hashlib

import numpy as np
import torch


def array_checksum(a: np.ndarray) -> str:
    """blake2b (128-bit) hex digest of the raw bytes of `a` (C order), read in 16 MB slices."""
    h = hashlib.blake2b(digest_size=16)
    flat = np.ascontiguousarray(a).reshape(-1).view(np.uint8)
    for i in range(0, flat.size, 1 << 24):
        h.update(flat[i : i + (1 << 24)].tobytes())
    return h.hexdigest()


def fingerprint(x: np.ndarray | torch.Tensor, samples: int = 65536) -> str:
    """Cheap content fingerprint: shape, dtype and the bytes of at most `samples` evenly strided
    elements."""
    flat = x.reshape(-1)
    step = max(1, flat.shape[0] // samples)
    part = flat[::step]
    part = part.detach().cpu().numpy() if isinstance(part, torch.Tensor) else np.asarray(part)
    h = hashlib.blake2b(digest_size=8)
    h.update(f"{tuple(x.shape)} {part.dtype}".encode())
    h.update(np.ascontiguousarray(part).tobytes())
    return h.hexdigest()
