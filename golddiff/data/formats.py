"""Decoders of the on-disk formats: idx (MNIST, Fashion-MNIST) and CIFAR-10 python batches."""

from __future__ import annotations

import gzip
import io
import pickle
import struct
import tarfile
import zlib
from pathlib import Path

import numpy as np

from .download import CIFAR_BATCHES

# ----------------------------------------------------------------------------- idx (MNIST, Fashion-
# MNIST)


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """An idx file of unsigned bytes (gzip or raw, told apart by its first bytes) as a uint8 array.

    Header: two zero bytes, type code 0x08 (ubyte), the number of dimensions, then each size as a
    big-endian uint32. Raises ValueError naming the file for a bad gzip stream, header or length.
    """
    raw = Path(path).read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise ValueError(
                f"{path} is not a complete gzip file ({e}); replace it with a fresh copy."
            ) from None
    if len(raw) < 4 + 4 * ndim or raw[:2] != b"\0\0" or raw[2] != 0x08 or raw[3] != ndim:
        raise ValueError(
            f"{path} does not start with an idx header for {ndim}-D unsigned bytes "
            f"(got {raw[:4].hex() or 'nothing'}); replace it with the original idx file."
        )
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    head, need = 4 + 4 * ndim, int(np.prod(dims))
    if len(raw) - head != need:
        raise ValueError(
            f"{path} holds {len(raw) - head} data bytes but its header {list(dims)} needs {need}; "
            f"replace it with an untruncated copy."
        )
    return np.frombuffer(raw, np.uint8, offset=head).reshape(dims)


def decode_idx(files: list[Path], n_classes: int = 10) -> dict[str, np.ndarray]:
    images, labels = read_idx(files[0], 3), read_idx(files[1], 1)
    if images.shape[0] != labels.shape[0]:
        raise ValueError(
            f"{files[0]} has {images.shape[0]} images but {files[1]} has {labels.shape[0]} labels; "
            f"use the matching pair of files."
        )
    if labels.size and labels.max() >= n_classes:
        raise ValueError(
            f"{files[1]} holds label {labels.max()} outside 0..{n_classes - 1}; "
            f"replace it with the original labels file."
        )
    return {"images": images[:, None].copy(), "labels": labels.astype(np.int64)}


# ----------------------------------------------------------------------------- CIFAR-10 python
# batches

CIFAR_CLASSES = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
]


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles only plain containers and numpy arrays (a CIFAR batch), never arbitrary code."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a CIFAR batch")


def _read_cifar_batch(data: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
    """One pickled batch -> images (n, 3, 32, 32) uint8, labels (n,) int64. Raises ValueError naming
    `where`."""

    try:
        d = _ArrayUnpickler(io.BytesIO(data), encoding="bytes").load()
        x = np.asarray(d[b"data"], dtype=np.uint8)
        y = np.asarray(d[b"labels"], dtype=np.int64)
    except Exception as e:  # any unpickling failure means a bad file
        raise ValueError(
            f"{where} is not a CIFAR-10 python batch ({type(e).__name__}: {e}); "
            f"replace it with the original file."
        ) from None
    if (
        x.ndim != 2
        or x.shape[1] != 3 * 32 * 32
        or y.shape != (x.shape[0],)
        or (y.size and y.max() > 9)
    ):
        raise ValueError(
            f"{where} holds data of shape {list(x.shape)} and {y.size} labels, not n x 3072 bytes "
            f"with n labels in 0..9; replace it with the original file."
        )
    return x.reshape(-1, 3, 32, 32), y  # rows are 1024 R, 1024 G, 1024 B, row-major


def decode_cifar(files: list[Path]) -> dict[str, np.ndarray]:
    src = files[0]
    blobs = []
    if src.is_dir():
        blobs = [((src / b).read_bytes(), str(src / b)) for b in CIFAR_BATCHES]
    else:
        try:
            with tarfile.open(src, "r:gz") as tar:
                members = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}
                for b in CIFAR_BATCHES:
                    if b not in members:
                        raise ValueError(
                            f"{src} has no {b}; replace it with the original "
                            "cifar-10-python.tar.gz."
                        )
                    blobs.append((tar.extractfile(members[b]).read(), f"{src}:{b}"))
        except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
            raise ValueError(
                f"{src} is not a readable tar.gz ({e}); replace it with a fresh copy."
            ) from None
    parts = [_read_cifar_batch(data, where) for data, where in blobs]
    return {
        "images": np.concatenate([p[0] for p in parts]),
        "labels": np.concatenate([p[1] for p in parts]),
    }
