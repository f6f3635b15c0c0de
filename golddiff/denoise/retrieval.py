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
  faiss-ivf  approximate: faiss IndexIVFFlat (IVF-PQ for large corpora, see faiss_index.py) with
             `nlist` lists (default round(sqrt(N))) and `nprobe` lists probed per query (default:
             enough lists to hold a multiple of k of the screened points that grows at low SNR, see
             `auto_nprobe`). Trained once and cached on disk under cache.cache_dir()/faiss.
Searches restricted to a pool (GoldDiff's random pool of m_t indices per sample) take the exact
torch path, whatever the backend: one (B, N) distance matmul with the rows outside the pool masked
out (out-of-core corpora gather the pool's proxies or search the IVF index within the pool).
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..core.logits import sq_dists
from .faiss_index import add_all, load_ivf, search_within, uses_pq
from .params import APPROXIMATE, BACKENDS, DenoiserParams, default_nlist  # noqa: F401
GPU_MAX_K = (
    2048  # faiss GPU indexes return at most this many neighbours; larger k goes through torch
)
PROBE_MULT = 4.0  # auto nprobe: probe lists expected to hold PROBE_MULT * k of the screened points
PROBE_MULT_LOW = 24.0  # ... and this many where SNR < PROBE_SNR (see auto_nprobe)
PROBE_SNR = 0.3
BLOCK_ELEMS = 16 * 1024 * 1024  # elements of one (rows, N) distance block (~64 MB in float32)
REFINE = 4  # IVF-PQ returns REFINE * k by code distance; the exact proxy distance keeps k
GATHER_ELEMS = 8 * 1024 * 1024  # out-of-core pools up to B * m * d elements: gather their proxies


def proxy_factor(shape: tuple[int, int, int], low_res: int) -> int:
    """Pooling factor for (C, H, W) -> low_res; ValueError when it does not divide (the rule is
    `DenoiserParams.proxy_factor`)."""
    return DenoiserParams.proxy_factor(shape, low_res)


def to_proxy(x: torch.Tensor, shape: tuple[int, int, int], low_res: int) -> torch.Tensor:
    """(B, D) images -> (B, d) proxies, d = C * low_res^2, by average pooling."""
    f = proxy_factor(shape, low_res)
    if f == 1:
        return x
    C, H, W = shape
    return F.avg_pool2d(x.reshape(-1, C, H, W), f).reshape(x.shape[0], -1)


def gathered_sq_dists(q: torch.Tensor, X, sqnorm: torch.Tensor, idx: torch.Tensor, scale: float):
    """||q_b - scale x_{idx[b, j]}||^2. q: (B, d); X: (N, d) or a corpus with rows(idx); idx: (B,
    k). Returns (B, k)."""
    Xg = X[idx].float() if isinstance(X, torch.Tensor) else X.rows(idx)  # (B, k, d)
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
    if X.dtype != torch.float32:
        return _chunked_topk(q, X, sqnorm, scale, k, pool)
    rows = max(1, BLOCK_ELEMS // max(1, N))
    out = []
    for i in range(0, B, rows):
        d = sq_dists(q[i : i + rows], X, sqnorm, scale)  # (b, N)
        if pool is not None:
            outside = torch.ones_like(d, dtype=torch.bool).scatter_(1, pool[i : i + rows], False)
            d.masked_fill_(outside, math.inf)
        out.append(d.topk(k, dim=1, largest=False).indices)
    return torch.cat(out)


def _chunked_topk(q, X, sqnorm, scale, k, pool=None) -> torch.Tensor:
    """exact_topk over row chunks of X (N, d) of any float dtype, each converted to float32: the
    (B, N) distances are never held at once. Returns (B, k) indices."""
    B, N = q.shape[0], X.shape[0]
    step = max(k, BLOCK_ELEMS // max(1, B))
    member = None
    if pool is not None:  # (B, N) bool
        member = torch.zeros(B, N, dtype=torch.bool, device=q.device).scatter_(1, pool, True)
    best_d = torch.empty(B, 0, device=q.device)
    best_i = torch.empty(B, 0, dtype=torch.long, device=q.device)
    for i in range(0, N, step):
        d = sq_dists(q, X[i : i + step].float(), sqnorm[i : i + step], scale)  # (B, c)
        if member is not None:
            d.masked_fill_(~member[:, i : i + step], math.inf)
        idx = torch.arange(i, i + d.shape[1], device=q.device).expand(B, -1)
        best_d, j = torch.cat([best_d, d], 1).topk(min(k, best_d.shape[1] + d.shape[1]), 1, False)
        best_i = torch.cat([best_i, idx], 1).gather(1, j)
    return best_i


def probe_mult(scale: float) -> float:
    """The multiple of k that auto_nprobe's lists hold at query scale sqrt(abar) (auto_nprobe)."""
    snr = math.inf if scale >= 1.0 else scale * scale / (1.0 - scale * scale)
    return PROBE_MULT if snr >= PROBE_SNR else PROBE_MULT_LOW


def auto_nprobe(nlist: int, k: int, m: int, scale: float = 1.0) -> int:
    """Lists to probe so that they hold about probe_mult(scale) * k of the m screened points (at
    most nlist).

    GoldDiff asks for k ~ N/10 neighbours, so an IVF search must probe a large share of the lists.
    At low SNR the query q / sqrt(abar) lies far from every proxy, its ranking is close to one by
    inner product, and the nearest lists' centroids hold its neighbours less tightly, so many more
    lists are needed for the same recall. The multiples were chosen from the measured recall of
    the exact top-k on Fashion-MNIST proxies along sampling trajectories (docs/BENCHMARKS.md): k is
    the number of candidates asked for (REFINE * k_max under IVF-PQ); 4 k keeps the mean recall
    >= 0.98 from SNR 0.15 up, drops below it to 0.91 (N = 60,000) and 0.74 (N = 960,000), and 24 k
    brings it back above 0.97 for every sample. PROBE_SNR = 0.3 leaves a margin above SNR 0.15.
    """
    want = probe_mult(scale) * k * nlist / max(1, m)
    return int(min(nlist, max(1, math.ceil(want))))


def check_backend(backend: str, nlist: int | None = None, nprobe: int | None = None) -> None:
    """Raise ValueError for an unknown backend, an unusable nlist / nprobe (the specs and rules of
    `DenoiserParams`), or a missing faiss package."""
    DenoiserParams.spec("backend").check(backend)
    DenoiserParams.check_ivf(backend, nlist, nprobe)
    for name, v in (("nlist", nlist), ("nprobe", nprobe)):
        DenoiserParams.spec(name).check(v)
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
    P: optional precomputed proxies (N, d) to share between backends of the same low_res (float16
    for a large out-of-core corpus); pool_index: screen random pools without a (B, N) scan (the IVF
    index with an id selector, or the pool's gathered proxies), for out-of-core corpora.
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
        pool_index: bool = False,
    ):
        check_backend(backend, nlist)
        self.shape, self.low_res, self.backend = shape, low_res, backend
        self.P = (to_proxy(X, shape, low_res) if P is None else P).contiguous()  # (N, d)
        self.sqnorm = torch.cat(
            [self.P[i : i + 65536].float().square().sum(1) for i in range(0, self.N, 65536)]
        )  # (N,)
        self.pool_index = pool_index  # pools: gathered proxies or the IVF index, not a (B, N) scan
        self.pq = backend == "faiss-ivf" and uses_pq(self.N, self.d)
        self.nlist = None
        self.gpu = False
        self.cache_path: Path | None = None
        self._faiss = None
        if backend == "faiss-ivf":
            DenoiserParams.check_nlist(nlist, self.N)
            self.nlist = int(default_nlist(self.N) if nlist is None else nlist)
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

        if self.backend == "faiss":
            index = faiss.IndexFlatL2(self.d)
            add_all(index, self.P)
        else:
            index, self.cache_path = load_ivf(self.P, self.shape, self.low_res, self.nlist, name)
        if _faiss_gpu(self.P.device):
            try:
                self._res = faiss.StandardGpuResources()
                index = faiss.index_cpu_to_gpu(self._res, self.P.device.index or 0, index)
                self.gpu = True
            except RuntimeError as e:  # e.g. a PQ code size the GPU kernels do not support
                warnings.warn(f"faiss kept the {self.backend} index on the CPU: {e}")
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

    def nprobe_for(self, k: int, nprobe: int | None, scale: float = 1.0) -> int | None:
        """The nprobe an IVF search of k neighbours over all N at query scale sqrt(abar) uses (None
        for other backends)."""
        if self.backend != "faiss-ivf":
            return None
        return (
            int(min(self.nlist, nprobe))
            if nprobe is not None
            else auto_nprobe(self.nlist, k, self.N, scale)
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
            if self.pool_index and not exact:
                return self._pool_search(q, scale, k, pool, nprobe)
            return exact_topk(q, self.P, self.sqnorm, scale, k, pool)
        k = min(k, self.N)
        if exact or not self.uses_index(k, pool):
            return exact_topk(q, self.P, self.sqnorm, scale, k)
        return self._index_search(q, scale, k, nprobe)

    def _pool_search(self, q, scale, k, pool, nprobe) -> torch.Tensor:
        """Out-of-core pool screen (B, k): the pool's gathered proxies when B * m * d is small, else
        the IVF index restricted to each pool by an id selector, else a chunked exact scan."""
        B, m = pool.shape
        if B * m * self.d <= GATHER_ELEMS:
            d = gathered_sq_dists(q, self.P, self.sqnorm, pool, scale)  # (B, m)
            return pool.gather(1, d.topk(k, dim=1, largest=False).indices)
        if self.backend == "faiss-ivf" and not self.gpu:  # GPU indexes take no id selector
            return self._index_search(q, scale, k, nprobe, pool)
        return exact_topk(q, self.P, self.sqnorm, scale, k, pool)

    def _index_search(self, q, scale, k, nprobe, pool=None) -> torch.Tensor:
        """The faiss search of the k nearest (B, k), over all N or within pool (B, m) (IVF only).
        IVF-PQ finds REFINE * k by code distance and keeps the k nearest by exact proxy distance."""
        import faiss

        qs = np.ascontiguousarray((q / scale).detach().float().cpu().numpy())  # same ranking
        m = self.N if pool is None else int(pool.shape[1])
        kk = min(m, REFINE * k if self.pq else k)
        n = None
        if self.backend == "faiss-ivf":
            n = int(min(self.nlist, nprobe)) if nprobe else auto_nprobe(self.nlist, kk, m, scale)
        if pool is None:
            params = None
            if n is not None and self.gpu:
                self._faiss.nprobe = n
            elif n is not None:
                params = faiss.SearchParametersIVF(nprobe=n)
            _, idx = self._faiss.search(qs, kk, params=params)  # (B, kk) int64, -1 = none
        else:
            pools = pool.cpu().numpy()
            idx = np.concatenate(
                [search_within(self._faiss, qs[b : b + 1], kk, n, p) for b, p in enumerate(pools)]
            )
        idx = torch.from_numpy(idx).to(q.device)
        if (idx < 0).any():  # fewer than kk found in the probed lists: fill from the exact path
            idx = _fill_missing(idx, exact_topk(q, self.P, self.sqnorm, scale, kk, pool))
        if kk > k:  # re-rank the PQ candidates by their exact proxy distance
            idx = rerank(q, self.P, self.sqnorm, idx, scale, k)
        return idx

def rerank(q, P, sqnorm, idx: torch.Tensor, scale: float, k: int) -> torch.Tensor:
    """The k of candidates idx (B, c) nearest by exact proxy distance, (B, k); the gathered (b, c,
    d) proxies are held a block of samples at a time (at most GATHER_ELEMS elements)."""
    rows = max(1, GATHER_ELEMS // max(1, idx.shape[1] * P.shape[1]))
    out = []
    for i in range(0, idx.shape[0], rows):
        d = gathered_sq_dists(q[i : i + rows], P, sqnorm, idx[i : i + rows], scale)  # (b, c)
        out.append(idx[i : i + rows].gather(1, d.topk(k, dim=1, largest=False).indices))
    return torch.cat(out)


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
    X,
    sqnorm: torch.Tensor,
    cand: torch.Tensor,
    scale: float,
    k: int,
) -> torch.Tensor:
    """Among candidates (B, c) keep the k with the smallest full-resolution ||x_t - scale x_i||^2.
    (B, k).

    When the candidates cover a large share of N (B * c >= N / 4), one (B, N) matmul and a gather
    beat gathering the (B, c, D) rows: 18 ms against 63 ms on Fashion-MNIST with B = 8, c =
    6,000, N = 60,000. X: the (N, D) rows or the corpus (its X, or `rows` when out-of-core).
    """
    if cand.shape[1] <= k:
        return cand
    B, n_cand = cand.shape
    full = X if isinstance(X, torch.Tensor) else X.X  # (N, D), None when out-of-core
    if full is not None and 4 * B * n_cand >= full.shape[0] and B * full.shape[0] <= BLOCK_ELEMS:
        d = sq_dists(x_t, full, sqnorm, scale).gather(1, cand)  # (B, c)
    else:  # gathered rows in blocks of samples: never more than BLOCK_ELEMS of (b, c, D)
        D = full.shape[1] if full is not None else int(x_t.shape[1])
        rows = max(1, BLOCK_ELEMS // max(1, n_cand * D))
        d = torch.cat(
            [
                gathered_sq_dists(x_t[i : i + rows], X, sqnorm, cand[i : i + rows], scale)
                for i in range(0, B, rows)
            ]
        )  # (B, c)
    j = d.topk(k, dim=1, largest=False).indices
    return cand.gather(1, j)
