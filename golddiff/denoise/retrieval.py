"""Proxy space and the coarse / fine candidate search behind GoldDiff, with selectable backends.

Proxy P: average pooling of each image to low_res x low_res (28 -> 14, 32 -> 16, 64 -> 16).
Distances are the noisy-query distances of the posterior: ||q - sqrt(abar) p_i||^2.
Since ||q - s p_i||^2 = s^2 ||q / s - p_i||^2, a plain L2 index over the p_i searched with q / s
returns the same ranking; the faiss backends rely on that.

Backends (`BACKENDS`):
  torch      exact: one matmul + topk per block of queries, on the corpus device (GPU when it is
  there).
  faiss      exact: faiss IndexFlatL2 (a faiss GPU index when faiss sees a GPU and the corpus is on
  CUDA).
  faiss-ivf  approximate: faiss IndexIVFFlat with `nlist` lists (default round(sqrt(N))), `nprobe`
  lists
             probed per query (default: enough lists to hold about 4 k of the screened points, see
             `auto_nprobe`). Trained once and cached on disk under cache.cache_dir()/faiss.
Searches restricted to a pool (GoldDiff's random pool of m_t indices per sample) always take the
exact torch
path, whatever the backend: one (B, N) distance matmul with the rows outside the pool masked out.
Measured on
Fashion-MNIST (N=60,000, d=196, B=8, k=6,000, 2 CPU threads) it takes 8-10 ms for any pool size,
against
11-26 ms for a faiss IDSelectorBitmap search per sample and 50-260 ms for gathering the pooled rows.
"""

from __future__ import annotations

import hashlib
import math
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..core.posterior import sq_dists
from ..data.cache import atomic_write, cache_dir, inside, remove_stale_temps

BACKENDS = ("torch", "faiss", "faiss-ivf")
APPROXIMATE = ("faiss-ivf",)
GPU_MAX_K = (
    2048  # faiss GPU indexes return at most this many neighbours; larger k goes through torch
)
PROBE_MULT = 4.0  # auto nprobe: probe lists expected to hold PROBE_MULT * k of the screened points
BLOCK_ELEMS = 16 * 1024 * 1024  # elements of one (rows, N) distance block (~64 MB in float32)


def proxy_factor(shape: tuple[int, int, int], low_res: int) -> int:
    """Pooling factor for (C, H, W) -> low_res; raises ValueError when it does not divide."""
    _, H, W = shape
    if low_res < 1 or H % low_res or W % low_res or H // low_res != W // low_res:
        raise ValueError(
            f"Proxy resolution {low_res} does not divide the {H}x{W} images; "
            f"choose a low_res that divides {H} (e.g. {H // 2 if H % 2 == 0 else H})."
        )
    return H // low_res


def to_proxy(x: torch.Tensor, shape: tuple[int, int, int], low_res: int) -> torch.Tensor:
    """(B, D) images -> (B, d) proxies, d = C * low_res^2, by average pooling."""
    f = proxy_factor(shape, low_res)
    if f == 1:
        return x
    C, H, W = shape
    return F.avg_pool2d(x.reshape(-1, C, H, W), f).reshape(x.shape[0], -1)


def gathered_sq_dists(
    q: torch.Tensor, X: torch.Tensor, sqnorm: torch.Tensor, idx: torch.Tensor, scale: float
) -> torch.Tensor:
    """||q_b - scale x_{idx[b, j]}||^2. q: (B, d); X: (N, d); idx: (B, k). Returns (B, k)."""
    Xg = X[idx]  # (B, k, d)
    dots = torch.einsum("bd,bkd->bk", q, Xg)
    return (
        q.square().sum(1, keepdim=True) - 2.0 * scale * dots + scale * scale * sqnorm[idx]
    ).clamp_min_(0.0)


def exact_topk(
    q: torch.Tensor,
    X: torch.Tensor,
    sqnorm: torch.Tensor,
    scale: float,
    k: int,
    pool: torch.Tensor | None = None,
) -> torch.Tensor:
    """Indices (B, k) of the k smallest ||q_b - scale x_i||^2 over all N rows, or over pool[b] (B,
    m) when given.

    Blocks of queries so that a (rows, N) distance block stays under BLOCK_ELEMS; rows outside
    the pool are masked to +inf before topk. k must be <= N (and <= m with a pool).
    """
    B, N = q.shape[0], X.shape[0]
    rows = max(1, BLOCK_ELEMS // max(1, N))
    out = []
    for i in range(0, B, rows):
        d = sq_dists(q[i : i + rows], X, sqnorm, scale)  # (b, N)
        if pool is not None:
            outside = torch.ones_like(d, dtype=torch.bool).scatter_(1, pool[i : i + rows], False)
            d.masked_fill_(outside, math.inf)
        out.append(d.topk(k, dim=1, largest=False).indices)
    return torch.cat(out)


def default_nlist(N: int) -> int:
    """IVF lists: round(sqrt(N)) (245 for N = 60,000: about 245 proxies per list)."""
    return max(1, round(math.sqrt(N)))


def auto_nprobe(nlist: int, k: int, m: int) -> int:
    """Lists to probe so that they hold about PROBE_MULT * k of the m screened points (at most
    nlist).

    GoldDiff asks for k ~ N/10 neighbours, so an IVF search must probe a large share of the lists:
    measured on
    Fashion-MNIST proxies (k = 6,000, nlist = 245) the mean recall of the exact top-k is 0.95-0.97
    at 2 k,
    0.99 at 3 k and >= 0.996 at 4 k.
    """
    return int(min(nlist, max(1, math.ceil(PROBE_MULT * k * nlist / max(1, m)))))


def check_backend(backend: str, nlist: int | None = None, nprobe: int | None = None) -> None:
    """Raise ValueError for an unknown backend, an unusable nlist / nprobe, or a missing faiss
    package."""
    if backend not in BACKENDS:
        raise ValueError(
            f"Unknown search backend '{backend}'; choose one of: {', '.join(BACKENDS)}."
        )
    for name, v in (("nlist", nlist), ("nprobe", nprobe)):
        if v is None:
            continue
        if backend not in APPROXIMATE:
            raise ValueError(
                f"{name} applies only to the 'faiss-ivf' backend; drop it or choose "
                f"backend 'faiss-ivf'."
            )
        if int(v) != v or v < 1:
            raise ValueError(f"{name}={v} must be a positive integer.")
    if backend.startswith("faiss"):
        try:
            import faiss  # noqa: F401
        except ImportError:
            raise ValueError(
                f"Backend '{backend}' needs the faiss package; install faiss-cpu "
                f"(or faiss-gpu) or choose backend 'torch'."
            ) from None


def _faiss_gpu(device: torch.device) -> bool:
    """True when the corpus is on CUDA and the installed faiss sees a GPU."""
    import faiss

    return device.type == "cuda" and hasattr(faiss, "index_cpu_to_gpu") and faiss.get_num_gpus() > 0


class ProxyIndex:
    """The proxy database of a dataset: P x_i (N, d), ||P x_i||^2 and, for faiss backends, an index
    over P.

    Built once per (dataset, low_res, backend, nlist) by Corpus.proxy and reused by every step.
    `search(q, scale, k, pool, nprobe)` returns the k nearest proxies to each query among `pool` (B,
    m) indices, or among all N when pool is None.

    X: (N, D) images on the corpus device; name: dataset name for the on-disk IVF cache key;
    P: optional precomputed proxies (N, d) to share between backends of the same low_res.
    """

    def __init__(
        self,
        X: torch.Tensor,
        shape: tuple[int, int, int],
        low_res: int,
        backend: str = "torch",
        nlist: int | None = None,
        name: str = "data",
        P: torch.Tensor | None = None,
    ):
        check_backend(backend, nlist)
        self.shape, self.low_res, self.backend = shape, low_res, backend
        self.P = (to_proxy(X, shape, low_res) if P is None else P).contiguous()  # (N, d)
        self.sqnorm = self.P.square().sum(1)  # (N,)
        self.nlist = None
        self.gpu = False
        self.cache_path: Path | None = None
        self._faiss = None
        if backend == "faiss-ivf":
            self.nlist = int(default_nlist(self.N) if nlist is None else nlist)
            if self.nlist > self.N:
                raise ValueError(
                    f"nlist={self.nlist} is larger than the dataset's N={self.N}; "
                    f"choose nlist <= {self.N} (default round(sqrt(N)) = {default_nlist(self.N)})."
                )
        if backend.startswith("faiss"):
            self._faiss = self._build_faiss(name)

    @property
    def N(self) -> int:
        return int(self.P.shape[0])

    @property
    def d(self) -> int:
        return int(self.P.shape[1])

    @property
    def approximate(self) -> bool:
        return self.backend in APPROXIMATE

    def _build_faiss(self, name: str):
        """IndexFlatL2 (not cached on disk: adding N rows takes milliseconds) or a trained
        IndexIVFFlat cached on disk by (name, N, shape, low_res, nlist, hash of P); moved to the
        GPU when faiss has one.
        """
        import faiss

        Pn = np.ascontiguousarray(self.P.detach().float().cpu().numpy())  # (N, d) float32
        if self.backend == "faiss":
            index = faiss.IndexFlatL2(self.d)
            index.add(Pn)
        else:
            digest = hashlib.sha1(Pn.tobytes()).hexdigest()[:12]
            safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name)
            C, H, W = self.shape
            self.cache_path = (
                cache_dir()
                / "faiss"
                / f"{safe}-n{self.N}-{C}x{H}x{W}-p{self.low_res}-ivf{self.nlist}-{digest}.index"
            )
            index = _load_ivf(self.cache_path, self.N, self.d, self.nlist)
            if index is None:
                index = faiss.IndexIVFFlat(faiss.IndexFlatL2(self.d), self.d, self.nlist)
                index.train(Pn)
                index.add(Pn)
                _save_index(self.cache_path, index)
        if _faiss_gpu(self.P.device):
            self._res = faiss.StandardGpuResources()
            index = faiss.index_cpu_to_gpu(self._res, self.P.device.index or 0, index)
            self.gpu = True
        return index

    def query(self, x_t: torch.Tensor) -> torch.Tensor:
        """(B, D) -> (B, d) proxy of the noisy query."""
        return to_proxy(x_t, self.shape, self.low_res)

    def uses_index(self, k: int, pool: torch.Tensor | None) -> bool:
        """Whether `search` goes through the faiss index (else the exact torch path)."""
        return (
            self._faiss is not None
            and pool is None
            and k < self.N
            and not (self.gpu and k > GPU_MAX_K)
        )

    def nprobe_for(self, k: int, nprobe: int | None) -> int | None:
        """The nprobe an IVF search of k neighbours over all N uses (None for other backends)."""
        if self.backend != "faiss-ivf":
            return None
        return (
            int(min(self.nlist, nprobe))
            if nprobe is not None
            else auto_nprobe(self.nlist, k, self.N)
        )

    def search(
        self,
        q: torch.Tensor,
        scale: float,
        k: int,
        pool: torch.Tensor | None = None,
        nprobe: int | None = None,
        exact: bool = False,
    ) -> torch.Tensor:
        """Indices (B, k) into the dataset of the k smallest ||q - scale P x_i||^2, i in pool (B, m)
        or all N.

        q: (B, d) proxy queries on the corpus device. With a pool of m <= k the pool itself is
        returned. exact=True forces the exact torch path (used to measure the recall of the
        approximate backend).
        """
        if pool is not None:
            if pool.shape[1] <= k:
                return pool
            return exact_topk(q, self.P, self.sqnorm, scale, k, pool)
        k = min(k, self.N)
        if exact or not self.uses_index(k, pool):
            return exact_topk(q, self.P, self.sqnorm, scale, k)
        import faiss

        qs = np.ascontiguousarray(
            (q / scale).detach().float().cpu().numpy()
        )  # (B, d): same ranking
        params = None
        if self.backend == "faiss-ivf":
            n = self.nprobe_for(k, nprobe)
            if self.gpu:
                self._faiss.nprobe = n
            else:
                params = faiss.SearchParametersIVF(nprobe=n)
        _, idx = self._faiss.search(qs, k, params=params)  # (B, k) int64, -1 = none
        idx = torch.from_numpy(idx).to(q.device)
        if (idx < 0).any():  # fewer than k found in the probed lists: fill from the exact path
            idx = _fill_missing(idx, exact_topk(q, self.P, self.sqnorm, scale, k))
        return idx


def _load_ivf(path: Path, N: int, d: int, nlist: int):
    """The cached IndexIVFFlat at `path` when it is a readable index of that type and size inside
    the cache, else None (the caller rebuilds it)."""
    import faiss

    p = inside(path.parent, path.name)
    try:
        if p is None or not p.is_file():
            return None
        index = faiss.read_index(str(p))
    except (RuntimeError, OSError):
        return None  # unreadable cache: rebuild and overwrite it
    if not isinstance(index, faiss.IndexIVFFlat):
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


def _fill_missing(idx: torch.Tensor, exact: torch.Tensor) -> torch.Tensor:
    """Replace the -1 entries of idx (B, k) with exact results that idx lacks, keeping rows
    duplicate-free."""
    rows = []
    for a, e in zip(idx, exact):
        found = a[a >= 0]
        extra = e[~torch.isin(e, found)][: a.shape[0] - found.shape[0]]
        rows.append(torch.cat([found, extra]))
    return torch.stack(rows)


def search_recall(found: torch.Tensor, exact: torch.Tensor) -> torch.Tensor:
    """Fraction of each exact result row found by the backend. found, exact: (B, k) -> (B,)."""
    return torch.stack([torch.isin(e, f).float().mean() for f, e in zip(found, exact)])


def fine_select(
    x_t: torch.Tensor,
    X: torch.Tensor,
    sqnorm: torch.Tensor,
    cand: torch.Tensor,
    scale: float,
    k: int,
) -> torch.Tensor:
    """Among candidates (B, c) keep the k with the smallest full-resolution ||x_t - scale x_i||^2.
    (B, k).

    When the candidates cover a large share of N (B * c >= N / 4), one (B, N) matmul and a gather
    beat gathering the (B, c, D) rows: 18 ms against 63 ms on Fashion-MNIST with B = 8, c =
    6,000, N = 60,000.
    """
    if cand.shape[1] <= k:
        return cand
    B, n_cand = cand.shape
    if 4 * B * n_cand >= X.shape[0] and B * X.shape[0] <= BLOCK_ELEMS:
        d = sq_dists(x_t, X, sqnorm, scale).gather(1, cand)  # (B, c)
    else:  # gathered rows in blocks of samples: never more than BLOCK_ELEMS of (b, c, D)
        rows = max(1, BLOCK_ELEMS // max(1, n_cand * X.shape[1]))
        d = torch.cat(
            [
                gathered_sq_dists(x_t[i : i + rows], X, sqnorm, cand[i : i + rows], scale)
                for i in range(0, B, rows)
            ]
        )  # (B, c)
    j = d.topk(k, dim=1, largest=False).indices
    return cand.gather(1, j)
