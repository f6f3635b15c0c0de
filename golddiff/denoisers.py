"""The five x0-denoisers behind one interface: optimal, wiener, pca, golddiff, hybrid.

`make_denoiser(name, data, schedule, **params).denoise(x_t, t, generator)` returns a `DenoiseOutput`:
the x0 estimate plus the raw material the diagnostics need (golden subset, per-pixel entropy, timings).
"""
from __future__ import annotations

import math
import numbers
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from .cache import cached_arrays, fingerprint
from .data import Dataset, pick_device
from .posterior import (CHUNK_ELEMS, StreamingSoftmax, chunk_rows, chunk_stats_T, global_logits,
                        locality_logits_T, mask_operator, posterior_T)
from .retrieval import ProxyIndex, check_backend, fine_select, proxy_factor, search_recall
from .memory import check_memory
from .schedule import NoiseSchedule
from .stats import DataStats

METHODS = ("optimal", "wiener", "pca", "golddiff", "hybrid")
POOL_MODES = ("random", "nearest", "auto")
# Hybrid default: Wiener below this SNR. Measured on Fashion-MNIST (one step at the same x_t against the
# full-scan PCA-locality denoiser), Wiener's r^2 is 0.999 / 0.992 at SNR 0.0003 / 0.0015 (t = 900, 800) and
# falls to 0.965 at SNR 0.007, 0.87 by SNR 0.08; so only the first steps of a 10-step run go Gaussian.
SNR_SWITCH = 0.005


@dataclass
class DenoiseOutput:
    x0_hat: torch.Tensor                          # (B, D) the x0 estimate
    method: str                                   # the method that made it (hybrid: "wiener" or "golddiff")
    pixel_entropy: torch.Tensor | None = None     # (B, D) per-pixel posterior entropy H(m), nats
    subset: torch.Tensor | None = None            # (B, k_t) dataset indices of the golden subset S_t
    subset_weight: torch.Tensor | None = None     # (B, k_t) mean over pixels of each subset image's weight
    m_t: int | None = None                        # coarse pool size
    k_t: int | None = None                        # golden subset size
    timings: dict = field(default_factory=dict)   # seconds: screen, select, aggregate
    search_recall: torch.Tensor | None = None     # (B,) share of the exact proxy top-k_max an approximate
                                                  # search found (None when the search was exact)
    pool_nearest: torch.Tensor | None = None      # (B,) bool: the sample screened all N (nearest) this step


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Corpus:
    """A dataset placed on a device with what every method needs: X (N, D), ||x_i||^2, statistics, proxies.

    Built once per (dataset, device) by `get_corpus` and shared by all denoisers; never mutated after build
    except for its lazily filled caches (statistics, masks, proxy indexes).
    """

    def __init__(self, data: Dataset, device: torch.device):
        self.data, self.device = data, device
        self.shape = data.shape                                     # (C, H, W)
        src = data.flat()
        copies = src.device != torch.device(device) or src.dtype != torch.float32 or not src.is_contiguous()
        check_memory((src.numel() if copies else 0) * 4 + src.shape[0] * 8,
                     f"placing '{data.name}' (N={src.shape[0]}, D={src.shape[1]}) on {device}",
                     "use a smaller dataset (fewer images or a lower resolution)", device)
        self.X = src.to(device, torch.float32).contiguous()        # (N, D)
        # ||x_i||^2 in row chunks: X.square() would briefly hold a second (N, D) copy
        self.sqnorm = torch.cat([self.X[i:i + 65536].square().sum(1) for i in range(0, self.N, 65536)])  # (N,)
        self._stats: DataStats | None = None
        self._proxy: dict[tuple, ProxyIndex] = {}

    @property
    def N(self) -> int:
        return int(self.X.shape[0])

    @property
    def D(self) -> int:
        return int(self.X.shape[1])

    @property
    def stats(self) -> DataStats:
        if self._stats is None:
            # disk cache (cache.cached_arrays) keyed by name, N, shape and a strided content fingerprint
            shape = "x".join(map(str, self.shape))
            key = f"stats/v1/{self.data.name}/N{self.N}/{shape}/{fingerprint(self.data.images)}"
            arrays = cached_arrays(key, lambda: DataStats.from_data(self.X).to_arrays())
            self._stats = DataStats.from_arrays({k: v.copy() for k, v in arrays.items()}, self.device)
        return self._stats

    def proxy(self, low_res: int, backend: str = "torch", nlist: int | None = None) -> ProxyIndex:
        """The proxy database + search index for (low_res, backend, nlist), built once; proxies are shared."""
        key = (low_res, backend, nlist)
        if key not in self._proxy:
            P = next((ix.P for (lr, _, _), ix in self._proxy.items() if lr == low_res), None)
            d = self.D // max(1, proxy_factor(self.shape, low_res) ** 2)
            # proxies (N, d) + norms, and a CPU float32 copy of them inside a faiss index
            check_memory(self.N * (d * 4 * ((P is None) + backend.startswith("faiss")) + 4),
                         f"the proxy index of '{self.data.name}' (N={self.N}, d={d}, {backend})",
                         "lower --low-res or use a smaller dataset", self.device)
            self._proxy[key] = ProxyIndex(self.X, self.shape, low_res, backend, nlist, self.data.name, P)
        return self._proxy[key]


_CORPORA: dict[tuple, Corpus] = {}


def get_corpus(data: Dataset, device: torch.device | str | None = None) -> Corpus:
    """The shared Corpus of `data` on `device` (built on first use)."""
    dev = pick_device(device) if not isinstance(device, torch.device) else device
    key = (data.name, data.N, data.shape, str(dev))
    c = _CORPORA.get(key)
    # same name and size but other images (e.g. Dataset.subset with another seed): rebuild, never reuse stale data
    if c is not None and not (c.data is data or c.data.images is data.images
                              or torch.equal(c.data.images, data.images)):
        del _CORPORA[key], c
        c = None
    if c is None:
        c = _CORPORA[key] = Corpus(data, dev)
    return c


# ----------------------------------------------------------------------------- aggregation kernels

def aggregation_bytes(B: int, rows: int, D: int) -> int:
    """Peak bytes of the (B, rows, D) float32 work tensors one aggregation holds at once (logits, exp,
    products: about four)."""
    return 4 * B * rows * D * 4


def subset_bytes(B: int, k: int, D: int) -> int:
    """Bytes of gathering a (B, k, D) golden subset and aggregating over it with `locality_subset`."""
    work = 3 * B * k * D * 4 if B * k * D <= 4 * CHUNK_ELEMS else aggregation_bytes(B, chunk_rows(B, D), D)
    return B * k * D * 4 + work


def global_scan(x_t: torch.Tensor, c: Corpus, abar: float, tau: float) -> StreamingSoftmax:
    """Exact global posterior mean by streaming over chunks of N (memory O(B * chunk)). x_t: (B, D)."""
    acc = StreamingSoftmax()
    B = x_t.shape[0]
    step = max(1024, CHUNK_ELEMS // max(1, B * 8))
    check_memory(4 * B * min(step, c.N) * 4 + 4 * B * c.D * 4,
                 f"the full-scan optimal step for n={B} samples over N={c.N} images", "lower --n", x_t.device)
    for i in range(0, c.N, step):
        logits = global_logits(x_t, c.X[i:i + step], c.sqnorm[i:i + step], abar, tau)   # (B, c)
        acc.add(logits[..., None], c.X[i:i + step])
    return acc


def locality_scan(x_t: torch.Tensor, X: torch.Tensor, M: torch.Tensor, abar: float, tau: float,
                  flag: torch.Tensor | None = None) -> StreamingSoftmax:
    """PCA-locality posterior over all rows of X (N, D), streamed in chunks; exact per-pixel softmax.

    x_t: (B, D); M: (D, D); flag: optional (B, N) bool marking a subset whose per-pixel mass is wanted.
    """
    acc = StreamingSoftmax()
    B, (N, D) = x_t.shape[0], X.shape
    step = chunk_rows(B, D)
    check_memory(aggregation_bytes(B, min(step, N), D) + 4 * B * D * 4,
                 f"the full-scan PCA-locality step for n={B} samples (chunks of {min(step, N)} images, D={D})",
                 "lower --n", x_t.device)
    op, s, work = mask_operator(M, abar, tau), math.sqrt(abar), {}   # coef * M^T (dense or sparse), buffers
    for i in range(0, N, step):
        XcT = X[i:i + step].T.contiguous()                                   # (D, c), shared by the batch
        parts = [chunk_stats_T(locality_logits_T(x_t[b], XcT, s, op, work), XcT,
                               None if flag is None else flag[b, i:i + step], work) for b in range(B)]
        acc.merge(*(None if p[0] is None else torch.stack(p) for p in zip(*parts)))   # each (B, D)
    return acc


def locality_subset(x_t: torch.Tensor, Xs: torch.Tensor, M: torch.Tensor, abar: float, tau: float,
                    S: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """PCA-locality posterior over a per-sample subset: Xs (B, k, D), or with S (B, k) indices the corpus
    Xs = X (N, D) whose rows S[b] are sample b's subset (gathered one sample at a time, never (B, k, D)).

    Returns x0_hat (B, D), per-pixel entropy (B, D), and the mean per-pixel weight of each subset image (B, k)
    when the (B, k, D) weights fit in a few chunks (else None, computed by streaming).
    """
    B, D = x_t.shape
    k = int(S.shape[1]) if S is not None else int(Xs.shape[1])
    rows = (lambda b: Xs[S[b]]) if S is not None else (lambda b: Xs[b])     # b -> (k, D)
    op, s = mask_operator(M, abar, tau), math.sqrt(abar)      # coef * M^T, dense or sparse by density
    if B * k * D <= 4 * CHUNK_ELEMS:                           # one exact softmax per sample
        outs = [posterior_T(locality_logits_T(x_t[b], XbT, s, op), XbT)
                for b in range(B) for XbT in (rows(b).T.contiguous(),)]          # XbT: (D, k)
        return tuple(torch.stack(o) for o in zip(*outs))
    acc, work = StreamingSoftmax(), {}
    step = chunk_rows(B, D)
    for i in range(0, k, step):
        parts = []
        for b in range(B):
            XcT = rows(b)[i:i + step].T.contiguous()                         # (D, c)
            parts.append(chunk_stats_T(locality_logits_T(x_t[b], XcT, s, op, work), XcT, None, work))
        acc.merge(*(None if p[0] is None else torch.stack(p) for p in zip(*parts)))
    return acc.mean(), acc.entropy(), None


# ----------------------------------------------------------------------------- GoldDiff schedules

def pool_size(N: int, k_max: int, sigma: float) -> int:
    """m_t = clamp(round(k_max + (N - k_max) (1 - sigma_t)), k_max, N): coarse pool size."""
    return int(min(N, max(k_max, round(k_max + (N - k_max) * (1.0 - sigma)))))


def subset_size(k_min: int, k_max: int, sigma: float) -> int:
    """k_t = max(k_min, round(k_max - (k_max - k_min) (1 - sigma_t))): golden subset size."""
    return int(max(k_min, round(k_max - (k_max - k_min) * (1.0 - sigma))))


def default_low_res(shape: tuple[int, int, int]) -> int:
    """Proxy resolution as in the paper: 28 -> 14, 32 -> 16, 64 -> 16; halve other even sizes."""
    H = shape[1]
    if H >= 64 and H % 16 == 0:
        return 16
    return H // 2 if H % 2 == 0 else H


def default_params(N: int, shape: tuple[int, int, int]) -> dict:
    """GoldDiff defaults scaled to N as in the paper: k_min ~ N/20, k_max ~ N/10."""
    k_min = max(1, round(N / 20))
    return dict(k_min=k_min, k_max=max(k_min, round(N / 10)), low_res=default_low_res(shape),
                mask_threshold=0.02, temperature=1.0, pool="random", snr_switch=SNR_SWITCH, backend="torch")


# ----------------------------------------------------------------------------- denoisers

class Denoiser:
    """Base: holds the corpus and schedule. Subclasses implement `_denoise(x_t, t, abar, generator)`."""

    name = "base"

    def __init__(self, corpus: Corpus, schedule: NoiseSchedule, temperature: float = 1.0):
        if not (temperature > 0 and math.isfinite(temperature)):
            raise ValueError(f"temperature={temperature} must be a positive finite number (default 1).")
        self.corpus, self.schedule, self.temperature = corpus, schedule, float(temperature)

    @property
    def device(self) -> torch.device:
        return self.corpus.device

    @torch.inference_mode()
    def denoise(self, x_t: torch.Tensor, t: int, generator: torch.Generator | None = None) -> DenoiseOutput:
        """x_t: (B, D) on the corpus device -> DenoiseOutput with x0_hat (B, D)."""
        if x_t.dim() != 2 or x_t.shape[1] != self.corpus.D:
            raise ValueError(f"x_t has shape {tuple(x_t.shape)}; expected (B, {self.corpus.D}) for this dataset.")
        if not torch.isfinite(x_t).all():
            raise ValueError("x_t contains NaN or infinite values; restart sampling from finite noise.")
        return self._denoise(x_t, int(t), self.schedule.abar(t), generator)

    def _denoise(self, x_t, t, abar, generator) -> DenoiseOutput:
        raise NotImplementedError


class OptimalDenoiser(Denoiser):
    """Empirical-Bayes posterior mean over all N images (exact, streamed)."""

    name = "optimal"

    def _denoise(self, x_t, t, abar, generator):
        t0 = time.perf_counter()
        acc = global_scan(x_t, self.corpus, abar, self.temperature)
        x0, H = acc.mean(), acc.entropy().expand(-1, self.corpus.D)
        _sync(self.device)
        return DenoiseOutput(x0, self.name, pixel_entropy=H,
                             timings={"screen": 0.0, "select": 0.0, "aggregate": time.perf_counter() - t0})


class WienerDenoiser(Denoiser):
    """Closed-form Gaussian posterior mean from the data mean and covariance."""

    name = "wiener"

    def _denoise(self, x_t, t, abar, generator):
        t0 = time.perf_counter()
        x0 = self.corpus.stats.wiener(x_t, abar)
        _sync(self.device)
        return DenoiseOutput(x0, self.name,
                             timings={"screen": 0.0, "select": 0.0, "aggregate": time.perf_counter() - t0})


class PCALocalityDenoiser(Denoiser):
    """PCA-locality denoiser (Lukoianov et al.): one exact softmax per output pixel over all N (full scan)."""

    name = "pca"

    def __init__(self, corpus, schedule, temperature=1.0, mask_threshold=0.02):
        super().__init__(corpus, schedule, temperature)
        if not (0 <= mask_threshold <= 1):
            raise ValueError(f"mask_threshold={mask_threshold} must be in [0, 1] (paper: 0.02 for MNIST).")
        self.mask_threshold = float(mask_threshold)

    def mask(self, t: int, abar: float) -> torch.Tensor:
        return self.corpus.stats.mask(t, abar, self.mask_threshold)

    def _denoise(self, x_t, t, abar, generator):
        M = self.mask(t, abar)
        t0 = time.perf_counter()
        acc = locality_scan(x_t, self.corpus.X, M, abar, self.temperature)
        x0, H = acc.mean(), acc.entropy()
        _sync(self.device)
        return DenoiseOutput(x0, self.name, pixel_entropy=H,
                             timings={"screen": 0.0, "select": 0.0, "aggregate": time.perf_counter() - t0})


class GoldDiffDenoiser(PCALocalityDenoiser):
    """GoldDiff: coarse pool (m_t) -> proxy screen (k_max) -> full-res select (k_t) -> PCA-locality over S_t."""

    name = "golddiff"

    def __init__(self, corpus, schedule, temperature=1.0, mask_threshold=0.02, k_min=None, k_max=None,
                 low_res=None, pool="random", backend="torch", nlist=None, nprobe=None):
        super().__init__(corpus, schedule, temperature, mask_threshold)
        d = default_params(corpus.N, corpus.shape)
        for name, v in (("k_min", k_min), ("k_max", k_max), ("low_res", low_res)):
            if v is not None and not (isinstance(v, numbers.Real) and not isinstance(v, bool)
                                      and math.isfinite(v) and v == int(v)):
                raise ValueError(f"{name}={v!r} must be a whole number.")
        self.k_min = int(d["k_min"] if k_min is None else k_min)
        self.k_max = int(d["k_max"] if k_max is None else k_max)
        self.low_res = int(d["low_res"] if low_res is None else low_res)
        N = corpus.N
        if self.k_min < 1 or self.k_max < 1:
            raise ValueError(f"k_min={self.k_min} and k_max={self.k_max} must be at least 1.")
        if self.k_min > self.k_max:
            raise ValueError(f"k_min={self.k_min} is larger than k_max={self.k_max}; make k_min <= k_max.")
        if self.k_max > N:
            raise ValueError(f"k_max={self.k_max} is larger than the dataset's N={N}; choose k_max <= {N}.")
        if pool not in POOL_MODES:
            raise ValueError(f"Unknown pool mode '{pool}'; choose one of: {', '.join(POOL_MODES)}.")
        proxy_factor(corpus.shape, self.low_res)           # raises if the pooling cannot divide
        check_backend(backend, nlist, nprobe)              # raises for unknown backends / misplaced nlist, nprobe
        self.pool, self.backend = pool, backend
        self.nlist = None if nlist is None else int(nlist)
        self.nprobe = None if nprobe is None else int(nprobe)
        corpus.proxy(self.low_res, backend, self.nlist)    # build (or load) the proxy index now, not mid-sampling

    def sizes(self, t: int) -> tuple[int, int]:
        """(m_t, k_t) at timestep t."""
        sigma = self.schedule.sigma(t)
        return pool_size(self.corpus.N, self.k_max, sigma), subset_size(self.k_min, self.k_max, sigma)

    def draw_pool(self, m_t: int, B: int, generator: torch.Generator | None) -> torch.Tensor | None:
        """(B, m_t) indices drawn uniformly without replacement per sample, or None when m_t = N.

        One 62-bit seed is taken from `generator` (reproducible from the sampler's seed); numpy's
        Generator.choice(replace=False) then draws each sample's m_t-subset exactly uniformly and independently
        (Floyd's algorithm for small m_t, a partial Fisher-Yates shuffle otherwise): 0.5 ms per sample at
        N = 60,000 against 16 ms for torch.randperm(N) on a 2-core CPU. The rows come back sorted.
        """
        N = self.corpus.N
        if m_t >= N:
            return None
        rng = np.random.default_rng(int(torch.randint(0, 2 ** 62, (1,), generator=generator)))
        pool = np.stack([np.sort(rng.choice(N, m_t, replace=False, shuffle=False)) for _ in range(B)])
        return torch.from_numpy(pool).to(self.device)

    def nearest_samples(self, x_t: torch.Tensor, abar: float, k_t: int) -> torch.Tensor:
        """(B,) bool: which samples screen all N (nearest) instead of a random pool of m_t.

        random / nearest: all False / all True. auto: a sample goes nearest once its exact global posterior has
        concentrated onto fewer images than the subset holds (perplexity exp(H) < k_t; one (B, D) @ (D, N)
        product). Before that the posterior is flat and a random pool is its unbiased Monte-Carlo sample;
        after it the nearest images are the support. Measured on Fashion-MNIST (10 steps, k 3000 / 6000):
        one-step r^2 against the full scan >= 0.986 at every step, where random dips to 0.964 (t = 400) and
        nearest to 0.53 (t = 900).
        """
        B = x_t.shape[0]
        if self.pool != "auto":
            return torch.full((B,), self.pool == "nearest", dtype=torch.bool, device=self.device)
        from .diagnostics import global_posterior, perplexity   # one definition (diagnostics imports this module)
        return perplexity(global_posterior(x_t, self.corpus, abar, self.temperature)) < k_t   # (B, N) -> (B,)

    def _denoise(self, x_t, t, abar, generator):
        c, s = self.corpus, math.sqrt(abar)
        m_t, k_t = self.sizes(t)
        M = self.mask(t, abar)
        index = c.proxy(self.low_res, self.backend, self.nlist)
        # 1. coarse: pool of m_t (random) or all N (nearest), screened in the proxy space down to k_max
        t0 = time.perf_counter()
        B = x_t.shape[0]
        near = self.nearest_samples(x_t, abar, k_t)                             # (B,) bool
        pool = self.draw_pool(m_t, B, generator) if not bool(near.all()) else None   # (B, m_t) or None
        q = index.query(x_t)                                                    # (B, d)
        cand = torch.empty(B, min(self.k_max, c.N), dtype=torch.long, device=self.device)   # (B, k_max)
        recall = None
        for rows, p in ((near, None), (~near, pool)):                          # the two screening groups
            if bool(rows.any()):
                p = None if p is None else p[rows]
                cand[rows] = index.search(q[rows], s, self.k_max, p, self.nprobe)
        _sync(self.device)
        t1 = time.perf_counter()
        # 2. fine: full-resolution distance, keep the k_t nearest -> golden subset S_t
        S = fine_select(x_t, c.X, c.sqnorm, cand, s, k_t)                       # (B, k_t)
        _sync(self.device)
        t2 = time.perf_counter()
        # 3. aggregate: exact per-pixel PCA-locality softmax over S_t only
        B, D = x_t.shape
        check_memory(subset_bytes(B, int(S.shape[1]), D),
                     f"the ({B}, {int(S.shape[1])}, {D}) golden subset at t={t}", "lower --n or --k-max",
                     self.device)
        x0, H, wmean = locality_subset(x_t, c.X, M, abar, self.temperature, S=S)
        _sync(self.device)
        t3 = time.perf_counter()
        # diagnostics (untimed): recall of an approximate search against the exact proxy top-k_max
        if index.approximate and bool(near.any()) and index.uses_index(cand.shape[1], None):
            recall = torch.full((B,), float("nan"), device=self.device)
            recall[near] = search_recall(cand[near], index.search(q[near], s, cand.shape[1], None, exact=True))
        return DenoiseOutput(x0, self.name, pixel_entropy=H, subset=S, subset_weight=wmean, search_recall=recall,
                             pool_nearest=near, m_t=c.N if bool(near.all()) else m_t, k_t=int(S.shape[1]),
                             timings={"screen": t1 - t0, "select": t2 - t1, "aggregate": t3 - t2})


class HybridDenoiser(Denoiser):
    """Wiener while SNR_t < snr_switch (Gaussian regime, no data scan), GoldDiff after."""

    name = "hybrid"

    def __init__(self, corpus, schedule, temperature=1.0, snr_switch=None, **golddiff_params):
        super().__init__(corpus, schedule, temperature)
        snr_switch = SNR_SWITCH if snr_switch is None else snr_switch
        if not (snr_switch >= 0 and math.isfinite(snr_switch)):
            raise ValueError(f"snr_switch={snr_switch} must be a non-negative finite number.")
        self.snr_switch = float(snr_switch)
        self.wiener = WienerDenoiser(corpus, schedule, temperature)
        self.golddiff = GoldDiffDenoiser(corpus, schedule, temperature, **golddiff_params)

    def _denoise(self, x_t, t, abar, generator):
        inner = self.wiener if self.schedule.snr(t) < self.snr_switch else self.golddiff
        return inner._denoise(x_t, t, abar, generator)


_CLASSES = {cls.name: cls for cls in (OptimalDenoiser, WienerDenoiser, PCALocalityDenoiser, GoldDiffDenoiser,
                                      HybridDenoiser)}
_PARAMS = {
    "optimal": ("temperature",),
    "wiener": ("temperature",),
    "pca": ("temperature", "mask_threshold"),
    "golddiff": ("temperature", "mask_threshold", "k_min", "k_max", "low_res", "pool", "backend", "nlist",
                 "nprobe"),
    "hybrid": ("temperature", "mask_threshold", "k_min", "k_max", "low_res", "pool", "backend", "nlist", "nprobe",
               "snr_switch"),
}


def make_denoiser(name: str, data: Dataset, schedule: NoiseSchedule | None = None,
                  device: torch.device | str | None = None, **params) -> Denoiser:
    """Build a denoiser by name.

    One shared parameter dict can configure any method: a known parameter that this method does not use is
    ignored, a name no method knows is rejected with the list of valid ones, None means the default.
    """
    if name not in _CLASSES:
        raise ValueError(f"Unknown method '{name}'; choose one of: {', '.join(METHODS)}.")
    unknown = [k for k, v in params.items() if k not in _PARAMS[name] and v is not None
               and k not in {p for ps in _PARAMS.values() for p in ps}]
    if unknown:
        raise ValueError(f"Unknown parameter(s) {', '.join(unknown)}; valid ones for '{name}': "
                         f"{', '.join(_PARAMS[name])}.")
    kwargs = {k: v for k, v in params.items() if k in _PARAMS[name] and v is not None}
    return _CLASSES[name](get_corpus(data, device), schedule or NoiseSchedule(), **kwargs)
