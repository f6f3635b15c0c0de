"""The corpus: a dataset placed on a device with what every method needs, and the one way its
images are summed over.

`Corpus.posterior` feeds the kernel `core.posterior.posterior` the rows it holds (in memory,
memory-mapped out of core, or one rank's shard) and merges the partial sums through its `comm`
(`core.comm`: the identity in one process, the all-reduce under `--shard corpus`). Global posterior
(empirical Bayes, the "optimal" denoiser): w_i = softmax_i(-||x_t - sqrt(abar) x_i||^2 /
(2 (1 - abar) tau)); PCA-locality posterior per output pixel over all N (Lukoianov et al. 2025) or
over a golden subset (GoldDiff, Shang et al. 2026). Scans stream over chunks of images with an
exact online log-sum-exp: never a (B, N, D) tensor.
"""

from __future__ import annotations

import threading
from typing import Iterator

import numpy as np
import torch

from ..core.comm import LOCAL, Comm, merge_softmax
from ..core.logits import global_logits
from ..core.posterior import CHUNK_ELEMS, StreamingSoftmax, chunk_rows, posterior, scan_rows
from ..core.stats import DataStats, published_factors
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
    `total` rows, with the `stats` of all of them, and merges its sums through `comm` (the
    all-reduce); otherwise offset = 0, total = N and comm is the identity (`core.comm.LOCAL`).
    """

    def __init__(
        self,
        data: Dataset,
        device: torch.device,
        offset: int = 0,
        total: int | None = None,
        stats: DataStats | None = None,
        comm: Comm = LOCAL,
    ):
        self.data, self.device, self.comm = data, device, comm
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
        """float32 rows (*idx.shape, D) on the device, always a new tensor that the caller may
        overwrite; out-of-core only these rows are converted."""
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

    @property
    def sharded(self) -> bool:
        return self.comm.world > 1

    def posterior(
        self,
        x_t: torch.Tensor,
        M: torch.Tensor | None,
        abar: float,
        tau: float = 1.0,
        subset=None,
        offsets=None,
        held: torch.Tensor | None = None,
        moments: int = 1,
        weights: bool = False,
        work: dict | None = None,
    ) -> StreamingSoftmax:
        """The posterior sums at x_t (B, D) over the corpus (`core.posterior.posterior`: M None
        global, M (D, D) per pixel), merged over the ranks of a sharded corpus by `comm`.

        subset None: all N images, streamed in chunks (read from disk out of core); held: optional
        (B, k) dataset indices whose mass is kept (acc.captured()). subset: (B, k) dataset indices
        or B index tensors (k_b,), sample b's own images, with optional per-image log weights
        `offsets` of the same shapes; weights: acc.image_w, each image's mean per-pixel weight,
        (B, k) for a (B, k) subset (else one (k_b,) tensor per sample). work: reusable buffers
        for a caller that calls again and again (the adaptive subset's rounds).
        """
        if subset is None:
            return self.comm_merge(self._scan(x_t, M, abar, tau, held, moments))
        rows, offs, where = self._local(subset, offsets)
        if self.X is not None:
            acc = posterior(x_t, self.X, M, abar, tau, idx=rows, offsets=offs, moments=moments,
                            weights=weights and not self.sharded, work=work)
        else:  # out of core: each sample's rows read from disk once
            acc = StreamingSoftmax.stack([
                posterior(x_t[b : b + 1], self.rows(r), M, abar, tau,
                          idx=[torch.arange(r.shape[0], device=self.device)],
                          offsets=None if offs is None else [offs[b]], moments=moments,
                          weights=weights and not self.sharded)
                for b, r in enumerate(rows)
            ])
        acc = self.comm_merge(acc)
        if weights and self.sharded:  # normalised by the merged sums: a second, local pass
            acc.image_w = posterior(x_t, self.X, M, abar, tau, idx=rows, offsets=offs,
                                    moments=0, weights=True, lse=acc.lse()).image_w
        if weights:
            acc.image_w = self._spread_back(acc.image_w, where, subset)
        return acc

    def comm_merge(self, acc: StreamingSoftmax) -> StreamingSoftmax:
        """The sums over every rank's rows (identity in one process)."""
        return merge_softmax(self.comm, acc)

    def _scan(self, x_t, M, abar, tau, held, moments) -> StreamingSoftmax:
        """The posterior sums over all of this corpus's rows, chunk by chunk."""
        B, D, N = x_t.shape[0], self.D, self.N
        step = scan_rows(B, D, M is not None)
        if self.out_of_core:  # each chunk is converted to float32: (step, D) stays ~64 MB
            step = min(step, chunk_rows(1, D))
        c = min(step, N)
        if M is None:
            need, what = 4 * B * c * 4 + 4 * B * D * 4 + self.out_of_core * c * D * 4, (
                f"the full-scan optimal step for n={B} samples over N={N} images")
        else:
            need, what = aggregation_bytes(B, c, D) + 4 * B * D * 4, (
                f"the full-scan PCA-locality step for n={B} samples (chunks of {c} images, D={D})")
        check_memory(need, what, "lower --n", x_t.device)
        flag = None
        if held is not None:  # (B, N) bool: the held images among this corpus's rows
            flag = torch.zeros(B, N, dtype=torch.bool, device=x_t.device)
            for b, (_, r) in enumerate(zip(*self._local_rows(held))):
                flag[b, r] = True
        return posterior(x_t, self.chunks(step), M, abar, tau, flag=flag, sqnorm=self.sqnorm,
                         moments=moments)

    def _local_rows(self, S) -> tuple[list, list]:
        """Per sample b: (positions j in S[b], local rows S[b, j] - offset) of the dataset indices
        S[b] that this corpus holds."""
        pos, rows = [], []
        for s in S:
            local = s - self.offset
            inside = ((local >= 0) & (local < self.N)).nonzero()[:, 0]
            pos.append(inside)
            rows.append(local[inside])
        return pos, rows

    def _local(self, subset, offsets):
        """(rows, offsets, positions) of a subset in this corpus's own row numbers; positions None
        when the corpus holds every row (one process: the subset is used as it is)."""
        if not self.sharded:
            return subset, offsets, None
        where, rows = self._local_rows(subset)
        offs = None if offsets is None else [o[j] for o, j in zip(offsets, where)]
        return rows, offs, where

    def _spread_back(self, image_w: list, where, subset):
        """Each sample's weights of its whole subset from its (k_b,) weights of the rows on this
        rank (one process: as they are): a (B, k) tensor for a (B, k) subset, else one (k_b,)
        tensor per sample. Every image is held by one rank, so the ranks' sums fill it."""
        if where is None:
            return torch.stack(image_w) if isinstance(subset, torch.Tensor) else image_w
        sizes = [int(s.shape[0]) for s in subset]
        out = torch.zeros(sum(sizes), dtype=image_w[0].dtype, device=self.device)  # (sum k_b,)
        start = 0
        for j, w, k in zip(where, image_w, sizes):
            out[start + j] = w
            start += k
        out = self.comm.all_reduce(out)
        if isinstance(subset, torch.Tensor):
            return out.view(subset.shape)
        return list(out.split(sizes))

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
        if self._stats.published_source is None:
            self._stats.published_source = self._published_factors
        return self._stats

    def _published_factors(self) -> dict[str, torch.Tensor]:
        """The published mask rule's float32 SVD of the covariance accumulated over these rows (all
        ranks' under --shard corpus), disk-cached in one process."""
        rows = lambda b: (x for _, x in self.chunks(b))  # noqa: E731
        if self.sharded:
            return published_factors(rows, self.total, self.comm.all_reduce)
        shape = "x".join(map(str, self.shape))
        src = self.data.u8 if self.out_of_core else self.data.images
        key = f"stats-published/v1/{self.data.name}/N{self.N}/{shape}/{fingerprint(src)}"

        def build() -> dict[str, np.ndarray]:
            return {k: v.cpu().numpy() for k, v in published_factors(rows, self.N).items()}

        return {k: torch.from_numpy(np.array(v)) for k, v in cached_arrays(key, build).items()}

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


# ----------------------------------------------------------------------------- memory


def aggregation_bytes(B: int, rows: int, D: int) -> int:
    """Peak bytes of the (B, rows, D) float32 work tensors one aggregation holds at once (logits,
    exp, products: about four)."""
    return 4 * B * rows * D * 4


def subset_bytes(B: int, k: int, D: int) -> int:
    """Bytes of gathering a (B, k, D) golden subset and aggregating over it
    (`Corpus.posterior` with a subset)."""
    work = (
        3 * B * k * D * 4
        if B * k * D <= 4 * CHUNK_ELEMS
        else aggregation_bytes(B, chunk_rows(B, D), D)
    )
    return B * k * D * 4 + work
