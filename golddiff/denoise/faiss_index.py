"""The faiss IVF index behind the `faiss-ivf` backend: built from a sample, cached on disk, IVF-PQ
for large corpora, and searches restricted to a pool of ids.

IVF-Flat stores every proxy (N * d * 4 bytes); above PQ_BYTES of them the index stores product-
quantized codes instead (IVF-PQ, `pq_subquantizers(d)` bytes per proxy, 4 dimensions per byte), and
`ProxyIndex` re-ranks its candidates by the exact proxy distance.
"""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import numpy as np
import torch

from ..data.cache import atomic_write, cache_dir, fingerprint, inside, remove_stale_temps

PQ_BYTES = 512 * 1024 * 1024  # flat IVF vectors above this: IVF-PQ codes instead
TRAIN_PER_LIST = 40  # training sample per list when N is large (faiss asks for >= 39)
ADD_ROWS = 65536  # proxies converted to float32 and added at a time


def pq_subquantizers(d: int) -> int:
    """PQ code bytes per proxy: the largest divisor of d that is at most d / 4 (4 dims per byte)."""
    return max(m for m in range(1, max(1, d // 4) + 1) if d % m == 0)


def uses_pq(N: int, d: int) -> bool:
    return N * d * 4 > PQ_BYTES


def index_bytes(N: int, d: int, backend: str) -> int:
    """Bytes a faiss index of N proxies of dimension d holds (vectors or PQ codes, and ids)."""
    if not backend.startswith("faiss"):
        return 0
    if backend == "faiss-ivf" and uses_pq(N, d):
        return N * (pq_subquantizers(d) + 8)
    return N * (d * 4 + 8)


def add_all(index, P: torch.Tensor) -> None:
    """Add the N proxies P (N, d) to a faiss index, ADD_ROWS float32 rows at a time."""
    for i in range(0, P.shape[0], ADD_ROWS):
        index.add(np.ascontiguousarray(P[i : i + ADD_ROWS].float().cpu().numpy()))


def _cache_path(P: torch.Tensor, shape, low_res: int, nlist: int, name: str) -> Path:
    """Keyed by (name, N, shape, low_res, nlist, flat or PQ, a digest of P)."""
    N, d = P.shape
    if P.dtype == torch.float32 and P.numel() <= 1 << 26:
        digest = hashlib.sha1(P.detach().cpu().numpy().tobytes()).hexdigest()[:12]
    else:  # a strided fingerprint: hashing every byte of a large corpus would take seconds
        digest = fingerprint(P)[:12]
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name)
    C, H, W = shape
    kind = f"ivfpq{nlist}x{pq_subquantizers(d)}" if uses_pq(N, d) else f"ivf{nlist}"
    return cache_dir() / "faiss" / f"{safe}-n{N}-{C}x{H}x{W}-p{low_res}-{kind}-{digest}.index"


def load_ivf(P: torch.Tensor, shape, low_res: int, nlist: int, name: str):
    """(the trained IVF index over P (N, d), its cache path): read from the disk cache, or trained
    and written there atomically. Trained on all of P up to faiss's own 256 points per list, else
    on a fixed random sample of TRAIN_PER_LIST per list."""
    import faiss

    N, d = int(P.shape[0]), int(P.shape[1])
    path = _cache_path(P, shape, low_res, nlist, name)
    index = _read_ivf(path, N, d, nlist)
    if index is not None:
        return index, path
    quantizer = faiss.IndexFlatL2(d)
    if uses_pq(N, d):
        index = faiss.IndexIVFPQ(quantizer, d, nlist, pq_subquantizers(d), 8)
    else:
        index = faiss.IndexIVFFlat(quantizer, d, nlist)
    train = P
    if N > 256 * nlist:
        pick = np.sort(np.random.default_rng(0).choice(N, TRAIN_PER_LIST * nlist, replace=False))
        train = P[torch.from_numpy(pick).to(P.device)]
    index.train(np.ascontiguousarray(train.float().cpu().numpy()))
    add_all(index, P)
    _save_index(path, index)
    return index, path


def _read_ivf(path: Path, N: int, d: int, nlist: int):
    """The cached IVF index at `path` when it is a readable index of the expected type and size
    inside the cache, else None (the caller rebuilds it): a damaged file, an index of another type
    or a path outside the cache is never used."""
    import faiss

    p = inside(path.parent, path.name)
    try:
        if p is None or not p.is_file():
            return None
        index = faiss.read_index(str(p))
    except (RuntimeError, OSError):
        return None  # unreadable cache: rebuild and overwrite it
    want = faiss.IndexIVFPQ if uses_pq(N, d) else faiss.IndexIVFFlat
    if not isinstance(index, want):
        return None  # a valid index of another type
    if index.ntotal != N or index.d != d or index.nlist != nlist:
        return None
    return index


def _save_index(path: Path, index) -> None:
    """Write the index atomically; when the cache cannot take it (read-only, not a folder, disk
    full) keep it in memory only, with a warning, as the array cache does."""
    import faiss

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(path.parent)  # left by a killed writer
        atomic_write(path, lambda tmp: faiss.write_index(index, str(tmp)))
    except (OSError, RuntimeError) as e:
        warnings.warn(
            f"The faiss index cache {path.parent} is not writable ({e}); the index is kept in "
            "memory only.",
            stacklevel=3,
        )


def search_within(index, qs: np.ndarray, k: int, nprobe: int, pool: np.ndarray) -> np.ndarray:
    """One IVF search (1, k) of query qs (1, d) among the ids in pool (m,) (a faiss
    IDSelectorBitmap; -1 where fewer than k are found)."""
    import faiss

    bits = np.zeros(index.ntotal, dtype=bool)
    bits[pool] = True
    packed = np.packbits(bits, bitorder="little")  # bit i of byte i >> 3 is id i
    sel = faiss.IDSelectorBitmap(len(packed), faiss.swig_ptr(packed))
    params = faiss.SearchParametersIVF(nprobe=nprobe, sel=sel)
    return index.search(qs, k, params=params)[1]
