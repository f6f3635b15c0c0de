"""A corpus split across the ranks of a torch.distributed group (`--shard corpus`), merged exactly.

Rank r of R holds rows [r N / R, (r + 1) N / R) of the dataset (`shard_bounds`). Every rank holds
the same x_t, so the DDIM loop runs unchanged on each; the denoisers below replace each sum over
the N images by the sum over the rank's own rows followed by a collective:

  statistics      sum x_i (D,) and sum x_i x_i^T (D, D), all-reduced (float64) -> mean, covariance
  softmax         w_i(m) = exp(L_i(m) - max) / sum_j exp(L_j(m) - max): all-reduce the max, then
                  the sums s0 = sum e, s1 = sum e L, sx = sum e x relative to it (log-sum-exp merge)
  screening       each rank's top k_max proxy distances (and their full-resolution distances) are
                  all-gathered; the global top k_max, then top k_t, are kept as one process would
  random pool     every rank draws sample b's pool from the same seed stream (denoise.streams)
  diagnostics     entropy / ESS from merged sums, top-n and recall from a gathered top-k, k_p by a
                  bisection on the weight whose mass test is an all-reduce (`ShardedPosterior`)

`comm` is a `run.distributed.Comm`: all_reduce(t, op), all_gather(t) -> (R, ...), rank, world,
and a `phase` label under which it counts the bytes sent.
"""

from __future__ import annotations

import math
import time

import torch

from ..core.posterior import (
    CHUNK_ELEMS,
    StreamingSoftmax,
    chunk_rows,
    global_logits,
    mask_operator,
    pixel_chunk_sums,
    pixel_logits,
    sq_dists,
)
from ..core.stats import DataStats, moments
from ..data.datasets import Dataset
from ..denoise.corpus import Corpus, global_scan, locality_scan
from ..denoise.methods import (
    DenoiseOutput,
    GoldDiffDenoiser,
    HybridDenoiser,
    OptimalDenoiser,
    PCALocalityDenoiser,
    WienerDenoiser,
)
from ..denoise.params import DenoiserParams
from ..denoise.retrieval import BLOCK_ELEMS, gathered_sq_dists
from .records import CorpusPosterior


def shard_bounds(N: int, world: int, rank: int) -> tuple[int, int]:
    """Rows [lo, hi) of rank `rank` out of `world`: contiguous blocks whose sizes differ by <= 1."""
    return rank * N // world, (rank + 1) * N // world


def pack_dtype(total: int) -> torch.dtype:
    """The dtype that gathers (distance, value, dataset index) triples: float32 holds every index
    exactly below 2^24 rows (12 bytes a candidate), float64 beyond."""
    return torch.float32 if total < 2**24 else torch.float64


def shard_corpus(data: Dataset, comm, device: torch.device) -> Corpus:
    """This rank's rows of `data` on `device`, with the statistics of all N rows (all-reduced)."""
    if data.N < comm.world:
        raise ValueError(
            f"'{data.name}' has N={data.N} images, fewer than the {comm.world} ranks; "
            f"use fewer ranks or --shard samples."
        )
    lo, hi = shard_bounds(data.N, comm.world, comm.rank)
    part = Dataset(data.name, data.images[lo:hi], data.labels[lo:hi], data.kind, data.classes)
    X = part.flat().to(device, torch.float32)  # (N_r, D)
    s, ss = moments(X)  # (D,), (D, D) float64
    D = X.shape[1]
    sums = torch.cat([s, ss.flatten()])  # (D + D * D,)
    comm.all_reduce(sums)
    stats = DataStats.from_moments(sums[:D], sums[D:].reshape(D, D), data.N)
    return Corpus(part, device, offset=lo, total=data.N, stats=stats)


# ----------------------------------------------------------------------------- merges


def merge_softmax(comm, acc: StreamingSoftmax) -> StreamingSoftmax:
    """The exact softmax over the union of every rank's rows from each rank's streaming sums.

    acc.mx: (B, P); s0, s1, s_sub: (B, P); sx: (B, D). A rank without rows passes mx = -inf and
    zero sums. Log-sum-exp merge: M = max_r mx_r, then s = sum_r s_r exp(mx_r - M)."""
    M = acc.mx.clone()
    comm.all_reduce(M, "max")
    r = torch.exp(acc.mx - M)  # (B, P), 0 on a rank without rows
    parts = [acc.s0 * r, acc.s1 * r, acc.sx * r] + ([] if acc.s_sub is None else [acc.s_sub * r])
    widths = [p.shape[1] for p in parts]
    sums = torch.cat(parts, 1)  # (B, P + P + D [+ P])
    comm.all_reduce(sums)
    out = StreamingSoftmax()
    out.mx = M
    out.s0, out.s1, out.sx, *sub = torch.split(sums, widths, 1)
    out.s_sub = sub[0] if sub else None
    return out


def global_topk(
    comm, v: torch.Tensor, offset: int, total: int, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The k largest values over all ranks' columns: (values (B, k), dataset indices (B, k)).

    v: (B, n) this rank's columns, column j being row offset + j of a dataset of `total` rows."""
    B, n = v.shape
    top = v.topk(min(k, n), dim=1)
    pack = torch.full((B, k, 2), -math.inf, dtype=pack_dtype(total), device=v.device)
    pack[:, : top.values.shape[1], 0] = top.values
    pack[:, : top.values.shape[1], 1] = top.indices + offset
    every = comm.all_gather(pack).permute(1, 0, 2, 3).reshape(B, -1, 2)  # (B, R k, 2)
    best = every[..., 0].topk(k, dim=1).indices  # (B, k)
    return every[..., 0].gather(1, best), every[..., 1].gather(1, best).long()


def rows_of(S: torch.Tensor, corpus: Corpus) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per sample b: (positions j in S[b], local rows S[b, j] - offset) of the rows this rank
    holds. S: (B, k) dataset indices."""
    local = S - corpus.offset
    inside = (local >= 0) & (local < corpus.N)  # (B, k)
    return [(inside[b].nonzero()[:, 0], local[b][inside[b]]) for b in range(S.shape[0])]


class ShardedPosterior(CorpusPosterior):
    """The diagnostics of `CorpusPosterior` over a corpus split across ranks, merged exactly."""

    def __init__(self, corpus: Corpus, comm):
        super().__init__(corpus)
        self.comm = comm

    def weights(self, x_t, abar, tau) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Global logits of the local rows (B, N_r) float64, their exact global weights
        (B, N_r), and the entropy H (B,) = log s0 - s1 / s0 with e = exp(L - max over all N),
        s0 = sum e, s1 = sum e (L - max) (centred: no cancellation at low noise)."""
        c = self.corpus
        logits = global_logits(x_t, c.X, c.sqnorm, abar, tau).double()  # (B, N_r)
        M = logits.amax(1)
        self.comm.all_reduce(M, "max")
        d = logits - M[:, None]
        e = torch.exp(d)
        sums = torch.stack([e.sum(1), (e * d).sum(1)], 1)  # (B, 2)
        self.comm.all_reduce(sums)
        s0, s1 = sums[:, 0], sums[:, 1]
        return logits, e / s0[:, None], torch.log(s0) - s1 / s0

    def summaries(self, x_t, abar, tau, top_n, subset, ranked=None):
        comm, c = self.comm, self.corpus
        comm.phase = "diagnostics"
        logits, w, H = self.weights(x_t, abar, tau)
        sq = w.square().sum(1)
        comm.all_reduce(sq)
        top_w, top_idx = global_topk(comm, w, c.offset, c.total, min(top_n, c.total))
        w32 = w.float()
        out = dict(
            entropy=H.float(),
            perplexity=torch.exp(H).float(),
            ess=(1.0 / sq).float(),
            top_idx=top_idx,
            top_w=top_w.float(),
        )
        out["k90"], out["k99"] = self.k_mass(w32, (0.9, 0.99)).unbind(1)
        if subset is not None:
            held = torch.zeros_like(w32)
            for b, (_, rows) in enumerate(rows_of(subset, c)):
                held[b, rows] = w32[b, rows]
            cm = held.sum(1)  # (B,)
            comm.all_reduce(cm)
            top = global_topk(comm, logits, c.offset, c.total, subset.shape[1])[1]  # (B, k)
            hits = torch.stack([torch.isin(top[b], subset[b]) for b in range(top.shape[0])])
            out.update(captured_mass=cm, recall=hits.float().mean(1))
        if ranked is not None:  # each rank fills the weights of its own rows, the sum merges them
            held = torch.zeros(ranked.shape, dtype=torch.float32, device=w32.device)
            for b, (pos, rows) in enumerate(rows_of(ranked, c)):
                held[b, pos] = w32[b, rows]
            comm.all_reduce(held)
            out["ranked_global_w"] = held
        return out

    def k_mass(self, w: torch.Tensor, ps: tuple[float, ...]) -> torch.Tensor:
        """(B, P) fewest images holding mass p of the global weights (`core.summaries.k_mass`).

        w: (B, N_r) non-negative float32, whose int32 bit patterns order like the values. Bisect
        on the bit pattern v for the largest weight value v with mass(w >= v) >= p * total (one
        all-reduce per halving, <= 32); k_p is then the number of weights >= v."""
        comm, B = self.comm, w.shape[0]
        bits = w.contiguous().view(torch.int32).long()  # (B, N_r)
        wd = w.double()
        total = wd.sum(1)
        hi = bits.amax(1) + 1
        comm.all_reduce(total)
        comm.all_reduce(hi, "max")
        target = total[:, None] * torch.tensor(ps, dtype=torch.float64, device=w.device)
        lo, hi = torch.zeros_like(target, dtype=torch.long), hi[:, None].expand_as(target).clone()
        while bool((hi - lo > 1).any()):  # identical on every rank: the masses are all-reduced
            mid = (lo + hi) // 2  # (B, P)
            mass = (wd[:, None, :] * (bits[:, None, :] >= mid[..., None])).sum(-1)  # (B, P)
            comm.all_reduce(mass)
            ok = mass >= target
            lo, hi = torch.where(ok, mid, lo), torch.where(ok, hi, mid)
        count = (bits[:, None, :] >= lo[..., None]).sum(-1)  # (B, P)
        comm.all_reduce(count)
        return count.clamp(1, self.corpus.total).reshape(B, len(ps))

    def reference(self, x_t, M, abar, tau, subset):
        self.comm.phase = "diagnostics"
        flag = None
        if subset is not None:
            flag = torch.zeros(x_t.shape[0], self.corpus.N, dtype=torch.bool, device=x_t.device)
            for b, (_, rows) in enumerate(rows_of(subset, self.corpus)):
                flag[b, rows] = True
        return merge_softmax(self.comm, locality_scan(x_t, self.corpus.X, M, abar, tau, flag))


# ----------------------------------------------------------------------------- denoisers


class ShardedOptimal(OptimalDenoiser):
    """The empirical-Bayes posterior mean over all N: each rank scans its rows, then a merge."""

    def __init__(self, corpus, schedule, params, comm):
        super().__init__(corpus, schedule, params)
        self.comm = comm

    def _denoise(self, x_t, t, abar, generator):
        self.comm.phase = "denoise"
        t0 = time.perf_counter()
        acc = merge_softmax(self.comm, global_scan(x_t, self.corpus, abar, self.temperature))
        x0, H = acc.mean(), acc.entropy().expand(-1, self.corpus.D)
        return DenoiseOutput(x0, self.name, pixel_entropy=H, timings=_only_aggregate(t0))


class ShardedPCA(PCALocalityDenoiser):
    """PCA-locality over all N: each rank's per-pixel sums over its rows, then a merge."""

    def __init__(self, corpus, schedule, params, comm):
        super().__init__(corpus, schedule, params)
        self.comm = comm

    def _denoise(self, x_t, t, abar, generator):
        self.comm.phase = "denoise"
        M = self.mask(t, abar)
        t0 = time.perf_counter()
        acc = locality_scan(x_t, self.corpus.X, M, abar, self.temperature)
        acc = merge_softmax(self.comm, acc)
        return DenoiseOutput(
            acc.mean(), self.name, pixel_entropy=acc.entropy(), timings=_only_aggregate(t0)
        )


def _only_aggregate(t0: float) -> dict:
    return {"screen": 0.0, "select": 0.0, "aggregate": time.perf_counter() - t0}


class ShardedGoldDiff(GoldDiffDenoiser):
    """GoldDiff over a sharded corpus: local screens, a gathered global selection, a merged
    per-pixel softmax. Equal to one process's GoldDiff up to float round-off."""

    def __init__(self, corpus, schedule, params, comm):
        if params is not None and params.backend not in (None, "torch"):
            raise ValueError(
                "--shard corpus screens each shard with the exact torch search; "
                "choose --backend torch."
            )
        super().__init__(corpus, schedule, params)
        self.comm = comm
        self.posterior = ShardedPosterior(corpus, comm)

    def nearest_samples(self, x_t, abar, k_t):
        if self.pool != "auto":
            return super().nearest_samples(x_t, abar, k_t)
        return torch.exp(self.posterior.weights(x_t, abar, self.temperature)[2]) < k_t  # (B,)

    def select(self, x_t, abar, allowed: torch.Tensor, k_t: int) -> torch.Tensor:
        """The golden subset S_t (B, k_t) of dataset indices: the global top k_max proxy
        distances among the allowed rows (B, N_r) bool, then their top k_t full distances."""
        c, p, s = self.corpus, self.params, math.sqrt(abar)
        index = c.proxy(p.low_res, p.backend, p.nlist)
        d = sq_dists(index.query(x_t), index.P, index.sqnorm, s)  # (B, N_r)
        d.masked_fill_(~allowed, math.inf)
        k = min(self.k_max, c.total)
        near = d.topk(min(k, c.N), dim=1, largest=False)  # (B, k_r)
        B, k_r = near.indices.shape
        if 4 * B * k >= c.total and B * c.total <= BLOCK_ELEMS:  # fine_select's formula choice,
            # so that both compute each distance with the same float32 operations
            full = sq_dists(x_t, c.X, c.sqnorm, s).gather(1, near.indices)  # (B, k_r)
        else:
            full = gathered_sq_dists(x_t, c.X, c.sqnorm, near.indices, s)  # (B, k_r)
        pack = torch.full((B, k, 3), math.inf, dtype=pack_dtype(c.total), device=d.device)
        pack[:, :k_r, 0] = near.values
        pack[:, :k_r, 1] = full.masked_fill(near.values.isinf(), math.inf)
        pack[:, :k_r, 2] = near.indices + c.offset
        every = self.comm.all_gather(pack).permute(1, 0, 2, 3).reshape(B, -1, 3)  # (B, R k, 3)
        n_ok = int(every[..., 0].isfinite().sum(1).min())  # min(k_max, pool size) per sample
        order = every[..., 0].topk(min(k, n_ok), 1, largest=False).indices  # (B, k_max)
        cand = every.gather(1, order[..., None].expand(-1, -1, 3))  # the global proxy top k_max
        keep = cand[..., 1].topk(min(k_t, cand.shape[1]), 1, largest=False).indices  # (B, k_t)
        return cand[..., 2].gather(1, keep).long()

    def aggregate(self, x_t, M, abar, S: torch.Tensor):
        """Per-pixel PCA-locality softmax over S (B, k) across ranks: x0 (B, D), entropy (B, D)
        and, when (B, k, D) would fit in a few chunks as in `locality_subset`, the mean per-pixel
        weight of each subset image (B, k)."""
        c = self.corpus
        B, D, k = x_t.shape[0], c.D, S.shape[1]
        op, s = mask_operator(M, abar, self.temperature), math.sqrt(abar)
        step, parts, held = chunk_rows(1, D), [], rows_of(S, c)
        keep = B * k * D <= 4 * CHUNK_ELEMS  # logits small enough to keep for the weights
        logits: list[torch.Tensor | None] = []  # per sample: (D, c_b) when kept
        for b, (_, rows) in enumerate(held):
            acc, kept = StreamingSoftmax(), []
            for i in range(0, rows.shape[0], step):
                XcT = c.X[rows[i : i + step]].T.contiguous()  # (D, chunk)
                L = pixel_logits(x_t[b], XcT, s, op)  # (D, chunk)
                acc.merge(*pixel_chunk_sums(L, XcT))
                kept += [L] if keep else []
            if acc.mx is None:  # none of S[b] on this rank
                z = x_t.new_zeros(D)
                acc.merge(torch.full_like(z, -math.inf), z, z, z)
            parts.append(acc)
            logits.append(torch.cat(kept, 1) if kept else None)
        local = StreamingSoftmax()
        local.mx, local.s0, local.s1, local.sx = (
            torch.stack([getattr(a, f) for a in parts]) for f in ("mx", "s0", "s1", "sx")
        )  # each (B, D)
        acc = merge_softmax(self.comm, local)
        wmean = None
        if keep:
            wmean = x_t.new_zeros(B, k)
            for b, ((pos, _), L) in enumerate(zip(held, logits)):
                if L is not None:  # w[m, i] = exp(L[m, i] - max_m) / s0_m over all ranks
                    wmean[b, pos] = (torch.exp(L - acc.mx[b][:, None]) / acc.s0[b][:, None]).mean(0)
            self.comm.all_reduce(wmean)
        return acc.mean(), acc.entropy(), wmean

    def _denoise(self, x_t, t, abar, generator):
        self.comm.phase = "denoise"
        c = self.corpus
        m_t, k_t = self.sizes(t)
        M = self.mask(t, abar)
        t0 = time.perf_counter()
        B = x_t.shape[0]
        near = self.nearest_samples(x_t, abar, k_t)  # (B,) bool
        allowed = near[:, None].expand(B, c.N).clone()  # (B, N_r): nearest samples screen all
        pool = self.draw_pool(m_t, B, generator, t) if not bool(near.all()) else None
        if pool is None:
            allowed[:] = True
        else:
            local = pool - c.offset  # (B, m_t), same pool on every rank
            for b in (~near).nonzero()[:, 0].tolist():
                allowed[b, local[b][(local[b] >= 0) & (local[b] < c.N)]] = True
        S = self.select(x_t, abar, allowed, k_t)  # (B, k_t)
        t1 = time.perf_counter()
        x0, H, wmean = self.aggregate(x_t, M, abar, S)
        t2 = time.perf_counter()
        return DenoiseOutput(
            x0,
            self.name,
            pixel_entropy=H,
            subset=S,
            subset_weight=wmean,
            pool_nearest=near,
            m_t=c.total if bool(near.all()) else m_t,
            k_t=int(S.shape[1]),
            timings={"screen": t1 - t0, "select": 0.0, "aggregate": t2 - t1},
        )


class ShardedHybrid(HybridDenoiser):
    """Wiener (statistics only, no data scan) while SNR_t < snr_switch, sharded GoldDiff after."""

    def __init__(self, corpus, schedule, params, comm):
        super().__init__(corpus, schedule, params)
        self.golddiff = ShardedGoldDiff(corpus, schedule, self.params, comm)


SHARDED = {
    "optimal": ShardedOptimal,
    "wiener": lambda corpus, schedule, params, comm: WienerDenoiser(corpus, schedule, params),
    "pca": ShardedPCA,
    "golddiff": ShardedGoldDiff,
    "hybrid": ShardedHybrid,
}


def sharded_denoiser(name: str, corpus: Corpus, schedule, params: DenoiserParams, comm):
    """The denoiser `name` over this rank's shard `corpus` (from `shard_corpus`)."""
    if name not in SHARDED:
        raise ValueError(f"Unknown method '{name}'; choose one of: {', '.join(SHARDED)}.")
    return SHARDED[name](corpus, schedule, params, comm)
