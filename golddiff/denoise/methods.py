"""The five x0-denoisers behind one interface: optimal, wiener, pca, golddiff, hybrid.

`make_denoiser(name, data, schedule, params=DenoiserParams(...), **overrides).denoise(x_t, t,
generator, carry)` returns a `DenoiseOutput`: the x0 estimate plus the raw material the diagnostics
need (golden subset, per-pixel entropy, timings); carry is the previous step's `out.carry` (only
subset="local" hands images on from step to step; every other method ignores it). Sources:
optimal = the empirical-Bayes posterior mean (Karras et al. 2022); wiener = the Gaussian posterior
mean (Wang & Vastola 2023); pca = PCA-locality (Lukoianov et al. 2025); golddiff = Shang et al. 2026
(coarse-to-fine retrieval of a golden subset, then PCA-locality over it).
"""

from __future__ import annotations

import math
import time
from dataclasses import replace

import numpy as np
import torch

from ..core.logits import MASK_PATTERNS
from ..core.schedule import NoiseSchedule, pool_size, subset_size
from ..data.datasets import Dataset
from ..data.memory import check_memory
from .adaptive import DRAWS_PER_K, adaptive_aggregate, proposal_temper, proxy_proposal
from .output import DenoiseOutput
from .corpus import Corpus, get_corpus, subset_bytes
from . import local_subset
from .local_subset import local_denoise
from .params import DenoiserParams
from .retrieval import check_backend, fine_select, proxy_factor, search_recall
from .shard_screen import sharded_select
from .streams import DRAWS, SampleStreams


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _aggregate_only(
    den, x0: torch.Tensor, t0: float, H: torch.Tensor | None = None, name: str | None = None
):
    """The output of a method that only aggregates (no screen, no select), timed from t0; name:
    the method that made it (default den's own)."""
    _sync(den.device)
    timings = {"screen": 0.0, "select": 0.0, "aggregate": time.perf_counter() - t0}
    return DenoiseOutput(x0, name or den.name, pixel_entropy=H, timings=timings)


class Denoiser:
    """Base: holds the corpus, the schedule and the validated params (`DenoiserParams.validate`).
    Subclasses implement `_denoise(x_t, t, abar, generator, carry)`."""

    name = "base"

    def __init__(
        self, corpus: Corpus, schedule: NoiseSchedule, params: DenoiserParams | None = None
    ):
        self.corpus, self.schedule = corpus, schedule
        # corpus.total: all N rows of the dataset, also when this corpus holds only a shard of them
        self.params = (params or DenoiserParams()).validate(
            self.name, corpus.total, corpus.shape, 1.0 - float(schedule.abars.max())
        )

    @property
    def temperature(self) -> float:
        return self.params.temperature

    @property
    def device(self) -> torch.device:
        return self.corpus.device

    @torch.inference_mode()
    def denoise(
        self,
        x_t: torch.Tensor,
        t: int,
        generator: torch.Generator | None = None,
        carry: list[torch.Tensor] | None = None,
    ) -> DenoiseOutput:
        """x_t: (B, D) on the corpus device -> DenoiseOutput with x0_hat (B, D). carry: the
        previous step's `out.carry` along the same trajectory (None at its first step)."""
        if x_t.dim() != 2 or x_t.shape[1] != self.corpus.D:
            raise ValueError(
                f"x_t has shape {tuple(x_t.shape)}; expected (B, {self.corpus.D}) for this dataset."
            )
        if not torch.isfinite(x_t).all():
            raise ValueError(
                "x_t contains NaN or infinite values; restart sampling from finite noise."
            )
        self.corpus.comm.phase = "denoise"  # what a sharded corpus's merges are counted under
        return self._denoise(x_t, int(t), self.schedule.abar(t), generator, carry)

    def _denoise(self, x_t, t, abar, generator, carry=None) -> DenoiseOutput:
        raise NotImplementedError


class OptimalDenoiser(Denoiser):
    """Empirical-Bayes posterior mean over all N images (exact, streamed)."""

    name = "optimal"

    def _denoise(self, x_t, t, abar, generator, carry=None):
        t0 = time.perf_counter()
        acc = self.corpus.posterior(x_t, None, abar, self.temperature)
        return _aggregate_only(self, acc.mean(), t0, acc.entropy().expand(-1, self.corpus.D))


class WienerDenoiser(Denoiser):
    """Closed-form Gaussian posterior mean from the data mean and covariance."""

    name = "wiener"

    def _denoise(self, x_t, t, abar, generator, carry=None):
        t0 = time.perf_counter()
        return _aggregate_only(self, self.corpus.stats.wiener(x_t, abar), t0)


class PCALocalityDenoiser(Denoiser):
    """PCA-locality denoiser (Lukoianov et al.): one exact softmax per output pixel over all N (full
    scan)."""

    name = "pca"

    def mask(self, t: int, abar: float) -> torch.Tensor:
        """(D, D) the PCA-locality mask M_t of this denoiser's threshold and rule."""
        return self.corpus.stats.mask(t, abar, self.params.mask_threshold, self.params.mask_rule)

    def _denoise(self, x_t, t, abar, generator, carry=None):
        M = self.mask(t, abar)
        t0 = time.perf_counter()
        acc = self.corpus.posterior(x_t, M, abar, self.temperature)
        return _aggregate_only(self, acc.mean(), t0, acc.entropy())


class GoldDiffDenoiser(PCALocalityDenoiser):
    """GoldDiff (Shang et al. 2026), one step as the paper's coarse-to-fine recipe:
    1. pool: m_t images drawn uniformly (`core.schedule.pool_size`), or all N (nearest);
    2. coarse screen: the k_max nearest in the proxy space, ||P x_t - sqrt(abar) P x_i||^2;
    3. fine selection: the k_t nearest of those at full resolution (`core.schedule.subset_size`),
       the golden subset S_t;
    4. aggregation: the exact PCA-locality posterior (Lukoianov et al. 2025) over S_t alone.
    subset="adaptive" replaces 1-3 by importance draws (`denoise.adaptive`)."""

    name = "golddiff"

    def __init__(self, corpus, schedule, params=None):
        super().__init__(corpus, schedule, params)
        p = self.params
        if corpus.sharded and p.backend != "torch":
            raise ValueError(
                "--shard corpus screens each shard with the exact torch search; "
                "choose --backend torch."
            )
        check_backend(p.backend)  # faiss installed when a faiss backend is asked for
        self.k_min, self.k_max, self.low_res, self.pool = p.k_min, p.k_max, p.low_res, p.pool
        corpus.proxy(
            p.low_res, p.backend, p.nlist
        )  # build (or load) the proxy index now, not mid-sampling

    def sizes(self, t: int) -> tuple[int, int]:
        """(m_t, k_t) at timestep t."""
        sigma = self.schedule.sigma(t)
        return pool_size(self.corpus.total, self.k_max, sigma), subset_size(
            self.k_min, self.k_max, sigma
        )

    def draw_pool(
        self,
        m_t: int,
        B: int,
        generator: torch.Generator | SampleStreams | None,
        t: int = 0,
    ) -> torch.Tensor | None:
        """(B, m_t) dataset indices drawn uniformly without replacement per sample, or None when
        m_t = N (all N of the dataset, also when this corpus holds a shard). The rows come back
        sorted.

        With SampleStreams (the sampler's), sample b's pool at step t comes from its own seed
        stream, so every rank of a sharded corpus draws the same pool. With a torch.Generator one
        62-bit seed is taken from it and numpy's Generator.choice(replace=False) draws each
        sample's m_t-subset exactly uniformly and independently (Floyd's algorithm for small m_t,
        a partial Fisher-Yates shuffle otherwise), at a cost of O(m_t) per sample where
        torch.randperm would pay O(N).
        """
        N = self.corpus.total
        if m_t >= N:
            return None
        if isinstance(generator, SampleStreams):
            return torch.from_numpy(generator.pools(N, m_t, t)).to(self.device)
        rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,), generator=generator)))
        pool = np.stack(
            [np.sort(rng.choice(N, m_t, replace=False, shuffle=False)) for _ in range(B)]
        )
        return torch.from_numpy(pool).to(self.device)

    def nearest_samples(self, x_t: torch.Tensor, abar: float, k_t: int) -> torch.Tensor:
        """(B,) bool: which samples screen all N (nearest) instead of a random pool of m_t.

        random / nearest: all False / all True. auto: a sample goes nearest once its exact global
        posterior has concentrated onto fewer images than the subset holds (perplexity exp(H) <
        k_t; one (B, D) @ (D, N) product). Before that the posterior is flat and a random pool is
        its unbiased Monte-Carlo sample; after it the nearest images are the support.
        """
        B = x_t.shape[0]
        if self.pool != "auto":
            return torch.full((B,), self.pool == "nearest", dtype=torch.bool, device=self.device)
        acc = self.corpus.posterior(x_t, None, abar, self.temperature, moments=0)
        return torch.exp(acc.entropy()[:, 0]) < k_t  # (B,)

    def _denoise(self, x_t, t, abar, generator, carry=None):
        if self.params.subset == "adaptive":
            return self._adaptive(x_t, t, abar, generator)
        if self.params.subset == "local":
            if local_subset.regime(abar / (1.0 - abar)) == "gauss":  # the closed form
                t0 = time.perf_counter()
                return _aggregate_only(self, self.corpus.stats.wiener(x_t, abar), t0, name="wiener")
            return local_denoise(self, x_t, t, abar, generator, carry)
        corpus, sqrt_abar, p = self.corpus, math.sqrt(abar), self.params
        m_t, k_t = self.sizes(t)
        B, D = x_t.shape
        # the largest allocations of this step, refused before any is made: the random pools
        # (B, m_t) int64 (numpy and torch) and the golden subset's aggregation
        check_memory(
            16 * B * m_t + subset_bytes(B, k_t, D),
            f"the ({B}, {k_t}, {D}) golden subset at t={t}",
            "lower --n or --k-max",
            self.device,
        )
        M = self.mask(t, abar)
        index = corpus.proxy(p.low_res, p.backend, p.nlist)
        # 1. coarse: pool of m_t (random) or all N (nearest), screened in the proxy space down to
        # k_max
        t0 = time.perf_counter()
        near = self.nearest_samples(x_t, abar, k_t)  # (B,) bool
        pool = (
            self.draw_pool(m_t, B, generator, t) if not bool(near.all()) else None
        )  # (B, m_t) or None
        q = index.query(x_t)  # (B, d)
        recall = None
        if corpus.sharded:  # each rank screens its rows; the global top k_max, then k_t
            S = sharded_select(corpus, index, x_t, q, sqrt_abar, near, pool, self.k_max, k_t)
            t1 = time.perf_counter()
        else:
            cand = torch.empty(
                B, min(self.k_max, corpus.N), dtype=torch.long, device=self.device
            )  # (B, k_max)
            for rows, pool_b in ((near, None), (~near, pool)):  # the two screening groups
                if bool(rows.any()):
                    group_pool = None if pool_b is None else pool_b[rows]
                    cand[rows] = index.search(q[rows], sqrt_abar, self.k_max, group_pool, p.nprobe)
            _sync(self.device)
            t1 = time.perf_counter()
            # 2. fine: full-resolution distance, keep the k_t nearest -> golden subset S_t
            S = fine_select(x_t, corpus, corpus.sqnorm, cand, sqrt_abar, k_t)  # (B, k_t)
        _sync(self.device)
        t2 = time.perf_counter()
        # 3. aggregate: exact per-pixel PCA-locality softmax over S_t only
        acc = corpus.posterior(x_t, M, abar, self.temperature, subset=S, weights=True)
        x0, H, wmean = acc.mean(), acc.entropy(), acc.image_w
        _sync(self.device)
        t3 = time.perf_counter()
        # diagnostics (untimed): recall of an approximate search against the exact proxy top-k_max
        if (
            not corpus.sharded
            and index.approximate
            and bool(near.any())
            and index.uses_index(cand.shape[1], None)
        ):
            recall = torch.full((B,), float("nan"), device=self.device)
            recall[near] = search_recall(
                cand[near], index.search(q[near], sqrt_abar, cand.shape[1], None, exact=True)
            )
        return DenoiseOutput(
            x0,
            self.name,
            pixel_entropy=H,
            subset=S,
            subset_weight=wmean,
            search_recall=recall,
            pool_nearest=near,
            m_t=corpus.total if bool(near.all()) else m_t,
            k_t=int(S.shape[1]),
            timings={"screen": t1 - t0, "select": t2 - t1, "aggregate": t3 - t2},
        )

    def _adaptive(self, x_t, t, abar, generator):
        """subset="adaptive" (denoise/adaptive.py): importance draws from a proxy proposal, per
        sample until the estimated error is below the tolerance; the proposal is the screen."""
        corpus, p = self.corpus, self.params
        if corpus.X is None:
            raise ValueError(
                f"subset='adaptive' needs '{corpus.data.name}' in memory, and it is out-of-core "
                f"(N={corpus.N}); use subset='schedule' or a smaller dataset."
            )
        M = self.mask(t, abar)
        index = corpus.proxy(p.low_res, p.backend, p.nlist)
        t0 = time.perf_counter()
        temper = proposal_temper(self.mask_density(M))
        factor = proxy_factor(corpus.shape, p.low_res)
        q = proxy_proposal(corpus, x_t, index, factor, abar, temper)  # (B, N) over the dataset
        _sync(self.device)
        t1 = time.perf_counter()
        if isinstance(generator, SampleStreams):  # each sample's draws from its own stream
            generator = generator.generators(DRAWS, t)
        res = adaptive_aggregate(
            x_t,
            corpus,
            M,
            abar,
            self.temperature,
            q,
            p.tolerance,
            DRAWS_PER_K * self.k_max,
            generator,
        )
        _sync(self.device)
        t2 = time.perf_counter()
        return DenoiseOutput(
            res.x0_hat,
            self.name,
            pixel_entropy=res.entropy,
            subset=res.subset,
            subset_offset=res.offsets,
            m_t=corpus.total,
            k_t=int(round(float(res.k_b.float().mean()))),
            k_b=res.k_b,
            error_est=res.error_est,
            timings={"screen": t1 - t0, "select": 0.0, "aggregate": t2 - t1},
        )

    @staticmethod
    def mask_density(M: torch.Tensor) -> float:
        """Share of nonzero entries of the mask M (D, D) (cached with its pattern)."""
        return MASK_PATTERNS.get(M)["density"]

    @torch.inference_mode()
    def screen_recall(self, states: list[tuple[torch.Tensor, float]]) -> list[list[float]] | None:
        """Recall of the approximate (faiss-ivf) screen of all N against the exact proxy top-k_max,
        per state [(x_t (B, D), abar), ...] and sample: [[recall of sample b, ...], ...]; None when
        the screen is exact."""
        p = self.params
        index = self.corpus.proxy(p.low_res, p.backend, p.nlist)
        k = min(self.k_max, self.corpus.N)
        if not index.approximate or not index.uses_index(k, None):
            return None
        out = []
        for x_t, abar in states:
            q, s = index.query(x_t.to(self.device)), math.sqrt(abar)
            found = index.search(q, s, k, None, p.nprobe)
            out.append(search_recall(found, index.search(q, s, k, None, exact=True)).tolist())
        return out


class HybridDenoiser(Denoiser):
    """Wiener while SNR_t < snr_switch (Gaussian regime, no data scan), GoldDiff after."""

    name = "hybrid"

    def __init__(self, corpus, schedule, params=None):
        super().__init__(corpus, schedule, params)
        self.wiener = WienerDenoiser(corpus, schedule, self.params)
        self.golddiff = GoldDiffDenoiser(corpus, schedule, self.params)

    def _denoise(self, x_t, t, abar, generator, carry=None):
        inner = self.wiener if self.schedule.snr(t) < self.params.snr_switch else self.golddiff
        return inner._denoise(x_t, t, abar, generator, carry)


_CLASSES = {
    cls.name: cls
    for cls in (
        OptimalDenoiser,
        WienerDenoiser,
        PCALocalityDenoiser,
        GoldDiffDenoiser,
        HybridDenoiser,
    )
}


def make_denoiser(
    name: str,
    data: Dataset,
    schedule: NoiseSchedule | None = None,
    device: torch.device | str | None = None,
    params: DenoiserParams | None = None,
    **overrides,
) -> Denoiser:
    """Build a denoiser by name from `params` (default: DenoiserParams()) with keyword overrides.

    One shared parameter set can configure any method: a parameter that this method does not use is
    ignored, a name no method knows is rejected with the list of valid ones, None means the
    dataset's default.
    """
    _method_class(name)  # an unknown method is refused before anything loads
    DenoiserParams.from_mapping(overrides, name)  # rejects unknown names
    merged = replace(
        params or DenoiserParams(), **{k: v for k, v in overrides.items() if v is not None}
    )
    return denoiser_on(name, get_corpus(data, device), schedule, merged)


def denoiser_on(
    name: str, corpus: Corpus, schedule: NoiseSchedule | None, params: DenoiserParams | None
) -> Denoiser:
    """The denoiser `name` over a built corpus (a rank's shard under `--shard corpus`)."""
    return _method_class(name)(corpus, schedule or NoiseSchedule(), params)


def _method_class(name: str) -> type:
    return _CLASSES[DenoiserParams.check_method(name)]
