"""The corpus (a dataset placed on a device with what every method needs) and the scans over it.

Global posterior (empirical Bayes, the "optimal" denoiser): w_i = softmax_i(-||x_t - sqrt(abar)
x_i||^2 / (2 (1 - abar) tau)), `global_posterior` / `global_scan`. PCA-locality posterior per output
pixel over all N (`locality_scan`, Lukoianov et al. 2025) or over a golden subset
(`locality_subset`, GoldDiff, Shang et al. 2026). Scans stream over chunks of images with an exact
online log-sum-exp: never a (B, N, D) tensor.
"""

from __future__ import annotations

import math
import threading
from typing import Iterator

import numpy as np
import torch

from ..core.interrupt import checkpoint
from ..core.posterior import (
    CHUNK_ELEMS,
    StreamingSoftmax,
    chunk_rows,
    global_logits,
    mask_operator,
    pixel_chunk_sums,
    pixel_logits,
    pixel_posterior,
    row_posterior,
)
from ..core.stats import DataStats
from ..data.cache import cached_arrays, fingerprint
from ..data.datasets import PROXY_F32_BYTES, Dataset
from ..data.device import pick_device
from ..data.memory import check_memory
from .faiss_index import index_bytes
from .retrieval import ProxyIndex, proxy_factor, to_proxy


class Corpus:
    """A dataset placed on a device with what every method needs: X (N, D), ||x_i||^2, statistics,
    proxies.

    Built once per (dataset, device) by `get_corpus` and shared by all denoisers; never mutated
    after build except for its lazily filled caches (statistics, masks, proxy indexes).

    A shard (torch.distributed, `run.sharded`) holds rows offset .. offset + N of a dataset of
    `total` rows, with the `stats` of all of them; otherwise offset = 0 and total = N.
    """

    def __init__(
        self,
        data: Dataset,
        device: torch.device,
        offset: int = 0,
        total: int | None = None,
        stats: DataStats | None = None,
    ):
        self.data, self.device = data, device
        self.shape = data.shape  # (C, H, W)
        self.out_of_core = data.out_of_core  # X stays uint8 on disk; rows converted on demand
        if self.out_of_core:
            check_memory(
                data.N * 8,
                f"the row norms of '{data.name}' (N={data.N}, out-of-core)",
                "use a smaller dataset",
                device,
            )
            self.X = None
        else:
            src = data.flat()
            copies = (
                src.device != torch.device(device)
                or src.dtype != torch.float32
                or not src.is_contiguous()
            )
            check_memory(
                (src.numel() if copies else 0) * 4 + src.shape[0] * 8,
                f"placing '{data.name}' (N={src.shape[0]}, D={src.shape[1]}) on {device}",
                "use a smaller dataset (fewer images or a lower resolution)",
                device,
            )
            self.X = src.to(device, torch.float32).contiguous()  # (N, D)
        # ||x_i||^2 in row chunks: X.square() would briefly hold a second (N, D) copy
        self.sqnorm = torch.cat([x.square().sum(1) for _, x in self.chunks(16384)])  # (N,)
        self.offset, self.total = int(offset), int(self.N if total is None else total)
        self._stats: DataStats | None = stats
        self._proxy: dict[tuple, ProxyIndex] = {}
        self._lock = threading.RLock()  # app sessions fill these caches from several threads

    @property
    def N(self) -> int:
        return self.data.N

    @property
    def D(self) -> int:
        return self.data.D

    def rows(self, idx: torch.Tensor) -> torch.Tensor:
        """float32 rows (*idx.shape, D) on the device; out-of-core only these rows are converted."""
        if self.X is not None:
            return self.X[idx]
        return self.data.rows(idx).to(self.device)

    def chunks(self, size: int) -> Iterator[tuple[int, torch.Tensor]]:
        """(start, float32 rows (c, D) on the device) over all N in order, c <= size."""
        if self.X is not None:
            for i in range(0, self.N, size):
                yield i, self.X[i : i + size]
        else:
            for i, x in self.data.chunks(size):
                yield i, x.to(self.device)

    def _proxies(self, low_res: int) -> torch.Tensor:
        """(N, d) proxies built chunk by chunk (out-of-core); float16 when float32 would pass
        PROXY_F32_BYTES."""
        d = self.D // max(1, proxy_factor(self.shape, low_res) ** 2)
        dtype = torch.float16 if self.N * d * 4 > PROXY_F32_BYTES else torch.float32
        P = torch.empty(self.N, d, dtype=dtype, device=self.device)
        for i, x in self.chunks(16384):  # (c, D) float32, 51 MB at D = 784
            P[i : i + x.shape[0]] = to_proxy(x, self.shape, low_res)
        return P

    @property
    def stats(self) -> DataStats:
        with self._lock:
            return self._stats_locked()

    def _stats_locked(self) -> DataStats:
        if self._stats is None:
            # disk cache (cache.cached_arrays) keyed by name, N, shape and a strided content
            # fingerprint
            shape = "x".join(map(str, self.shape))
            src = self.data.u8 if self.out_of_core else self.data.images
            key = f"stats/v1/{self.data.name}/N{self.N}/{shape}/{fingerprint(src)}"
            arrays = cached_arrays(key, lambda: self._build_stats().to_arrays())
            self._stats = DataStats.from_arrays(
                {k: v.copy() for k, v in arrays.items()}, self.device, self.N
            )
        return self._stats

    def _build_stats(self) -> DataStats:
        if self.X is not None:
            return DataStats.from_data(self.X)
        return DataStats.from_chunks((x for _, x in self.chunks(4096)), self.N, self.D)

    def proxy(self, low_res: int, backend: str = "torch", nlist: int | None = None) -> ProxyIndex:
        """The proxy database + search index for (low_res, backend, nlist), built once; proxies are
        shared."""
        with self._lock:
            return self._proxy_locked((low_res, backend, nlist))

    def _proxy_locked(self, key: tuple) -> ProxyIndex:
        low_res, backend, nlist = key
        if key not in self._proxy:
            P = next((ix.P for (lr, _, _), ix in self._proxy.items() if lr == low_res), None)
            d = self.D // max(1, proxy_factor(self.shape, low_res) ** 2)
            p_bytes = 2 if self.out_of_core and self.N * d * 4 > PROXY_F32_BYTES else 4
            # proxies (N, d) + norms, and the vectors (or codes) inside a faiss index
            check_memory(
                self.N * (d * p_bytes * (P is None) + 4) + index_bytes(self.N, d, backend),
                f"the proxy index of '{self.data.name}' (N={self.N}, d={d}, {backend})",
                "lower --low-res or use a smaller dataset",
                self.device,
            )
            if P is None and self.out_of_core:
                P = self._proxies(low_res)
            self._proxy[key] = ProxyIndex(
                self.X, self.shape, low_res, backend, nlist, self.data.name, P, self.out_of_core
            )
        return self._proxy[key]


class _CorpusCache:
    """The Corpus of each (dataset, device) in this process, shared by every denoiser and app
    session. `CORPORA.clear()` resets it (tests); a lock serialises builds (app sessions run in
    threads)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._by_key: dict[tuple, Corpus] = {}

    def get(self, data: Dataset, device: torch.device) -> Corpus:
        key = (data.name, data.N, data.shape, str(device))
        with self._lock:
            corpus = self._by_key.get(key)
            # same name and size but other images (Dataset.subset with another seed): rebuild, never
            # reuse
            if corpus is not None and not _same_images(corpus.data, data):
                corpus = None
            if corpus is None:
                corpus = self._by_key[key] = Corpus(data, device)
            return corpus

    def clear(self) -> None:
        with self._lock:
            self._by_key.clear()


CORPORA = _CorpusCache()


def _same_images(a: Dataset, b: Dataset) -> bool:
    if a is b or a.images is b.images:
        return True
    if a.out_of_core or b.out_of_core:
        return a.out_of_core == b.out_of_core and np.array_equal(a.u8, b.u8)
    return torch.equal(a.images, b.images)


def get_corpus(data: Dataset, device: torch.device | str | None = None) -> Corpus:
    """The shared Corpus of `data` on `device` (built on first use)."""
    dev = pick_device(device) if not isinstance(device, torch.device) else device
    return CORPORA.get(data, dev)


def global_posterior(
    x_t: torch.Tensor, corpus: Corpus, abar: float, tau: float = 1.0
) -> torch.Tensor:
    """(B, N) exact global posterior weights w_i(x_t) at x_t (B, D) (GoldDiff's posterior over the
    corpus)."""
    return torch.softmax(corpus_logits(x_t, corpus, abar, tau), dim=1)


def corpus_logits(x_t: torch.Tensor, corpus: Corpus, abar: float, tau: float) -> torch.Tensor:
    """(B, N) global posterior logits (`global_logits`), over row chunks when out-of-core."""
    if corpus.X is not None:
        return global_logits(x_t, corpus.X, corpus.sqnorm, abar, tau)
    return torch.cat(
        [
            global_logits(x_t, x, corpus.sqnorm[i : i + x.shape[0]], abar, tau)
            for i, x in corpus.chunks(16384)
        ],
        dim=1,
    )


# ----------------------------------------------------------------------------- aggregation kernels


def aggregation_bytes(B: int, rows: int, D: int) -> int:
    """Peak bytes of the (B, rows, D) float32 work tensors one aggregation holds at once (logits,
    exp, products: about four)."""
    return 4 * B * rows * D * 4


def subset_bytes(B: int, k: int, D: int) -> int:
    """Bytes of gathering a (B, k, D) golden subset and aggregating over it with
    `locality_subset`."""
    work = (
        3 * B * k * D * 4
        if B * k * D <= 4 * CHUNK_ELEMS
        else aggregation_bytes(B, chunk_rows(B, D), D)
    )
    return B * k * D * 4 + work


def global_scan(x_t: torch.Tensor, corpus: Corpus, abar: float, tau: float) -> StreamingSoftmax:
    """Exact global posterior mean by streaming over
    chunks of N (memory O(B * chunk)). x_t: (B, D)."""
    acc = StreamingSoftmax()
    B = x_t.shape[0]
    step = max(1024, CHUNK_ELEMS // max(1, B * 8))
    if corpus.out_of_core:  # each chunk is converted to float32: (step, D) stays ~64 MB
        step = min(step, chunk_rows(1, corpus.D))
    check_memory(
        4 * B * min(step, corpus.N) * 4
        + 4 * B * corpus.D * 4
        + corpus.out_of_core * min(step, corpus.N) * corpus.D * 4,
        f"the full-scan optimal step for n={B} samples over N={corpus.N} images",
        "lower --n",
        x_t.device,
    )
    for i, x in corpus.chunks(step):
        checkpoint()
        logits = global_logits(x_t, x, corpus.sqnorm[i : i + x.shape[0]], abar, tau)  # (B, chunk)
        acc.add(logits[..., None], x)
    return acc


def locality_scan(
    x_t: torch.Tensor,
    X: torch.Tensor | Corpus,
    M: torch.Tensor,
    abar: float,
    tau: float,
    flag: torch.Tensor | None = None,
) -> StreamingSoftmax:
    """PCA-locality posterior over all rows of X (N, D), streamed in chunks; exact per-pixel
    softmax.

    x_t: (B, D); X: (N, D) rows or a Corpus (read chunk by chunk); M: (D, D); flag: optional (B, N)
    bool marking a subset whose per-pixel mass is wanted.
    """
    acc = StreamingSoftmax()
    B, (N, D) = x_t.shape[0], ((X.N, X.D) if isinstance(X, Corpus) else X.shape)
    step = chunk_rows(B, D)
    check_memory(
        aggregation_bytes(B, min(step, N), D) + 4 * B * D * 4,
        f"the full-scan PCA-locality step for n={B} samples "
        f"(chunks of {min(step, N)} images, D={D})",
        "lower --n",
        x_t.device,
    )
    op, sqrt_abar, work = (
        mask_operator(M, abar, tau),
        math.sqrt(abar),
        {},
    )  # coef * M^T (dense or sparse), buffers
    chunks = (
        X.chunks(step)
        if isinstance(X, Corpus)
        else ((i, X[i : i + step]) for i in range(0, N, step))
    )
    for i, Xc in chunks:
        XcT = Xc.T.contiguous()  # (D, c), shared by the batch
        checkpoint()
        parts = [
            pixel_chunk_sums(
                pixel_logits(x_t[b], XcT, sqrt_abar, op, work),
                XcT,
                None if flag is None else flag[b, i : i + step],
                work,
            )
            for b in range(B)
        ]
        acc.merge(*(None if p[0] is None else torch.stack(p) for p in zip(*parts)))  # each (B, D)
    return acc


def locality_subset(
    x_t: torch.Tensor,
    Xs: torch.Tensor,
    M: torch.Tensor,
    abar: float,
    tau: float,
    S: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """PCA-locality posterior over a per-sample subset: Xs (B, k, D), or with S (B, k) indices the
    corpus Xs = X (N, D) or the Corpus itself (`Corpus.rows`), whose rows S[b] are sample b's
    subset (gathered one sample at a time, never (B, k, D)).

    Returns x0_hat (B, D), per-pixel entropy (B, D), and the mean per-pixel weight of each subset
    image (B, k) when the (B, k, D) weights fit in a few chunks (else None, computed by streaming).
    """
    B, D = x_t.shape
    k = int(S.shape[1]) if S is not None else int(Xs.shape[1])
    rows = (lambda b: _gather(Xs, S[b])) if S is not None else (lambda b: Xs[b])  # b -> (k, D)
    op, sqrt_abar = mask_operator(M, abar, tau), math.sqrt(
        abar
    )  # coef * M^T, dense or sparse by density
    if S is not None and not op.sparse and k * D <= 2 * CHUNK_ELEMS:  # gathered once, image-major
        work = {}
        outs = [row_posterior(x_t[b], *_source(Xs, S[b]), sqrt_abar, op, work) for b in range(B)]
        return tuple(torch.stack(o) for o in zip(*outs))
    if B * k * D <= 4 * CHUNK_ELEMS:  # one exact softmax per sample
        outs = [
            pixel_posterior(pixel_logits(x_t[b], XbT, sqrt_abar, op), XbT)
            for b in range(B)
            for XbT in (rows(b).T.contiguous(),)
        ]  # XbT: (D, k)
        return tuple(torch.stack(o) for o in zip(*outs))
    acc, work = StreamingSoftmax(), {}
    step = chunk_rows(B, D)
    for i in range(0, k, step):
        checkpoint()
        parts = []
        for b in range(B):
            XcT = rows(b)[i : i + step].T.contiguous()  # (D, c)
            parts.append(
                pixel_chunk_sums(pixel_logits(x_t[b], XcT, sqrt_abar, op, work), XcT, None, work)
            )
        acc.merge(*(None if p[0] is None else torch.stack(p) for p in zip(*parts)))
    return acc.mean(), acc.entropy(), None


def _source(X: torch.Tensor | Corpus, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows tensor, indices into it) for `row_posterior`: the in-memory (N, D) X and idx, or, out
    of core, the k rows read from disk once with indices 0..k-1."""
    if isinstance(X, Corpus):
        if X.X is None:
            rows = X.rows(idx)  # (k, D)
            return rows, torch.arange(rows.shape[0], device=rows.device)
        return X.X, idx
    return X, idx


def _gather(X: torch.Tensor | Corpus, idx: torch.Tensor) -> torch.Tensor:
    """Rows idx of X (N, D) or of a Corpus: (*idx.shape, D) float32."""
    return X.rows(idx) if isinstance(X, Corpus) else X[idx]
