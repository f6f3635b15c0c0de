"""A golden subset retrieved per neighbourhood (`subset="local"`, this project).

GoldDiff (Shang et al. 2026) ranks images by one global distance but aggregates with one
PCA-locality posterior per output pixel (Lukoianov et al. 2025), whose support is the images that
are close on that pixel's neighbourhood, not on the whole image. This subset is built to match:

0. Gaussian and flat regimes: below GAUSS_SNR (the SNR abar / (1 - abar); the hybrid's default
   switch) the closed-form Wiener denoiser of the data's mean and covariance (Wang & Vastola 2023)
   is the full scan to within r^2 0.995 and costs no pass over the data, so it makes the step
   (`GoldDiffDenoiser` takes it before `local_denoise`).
   Up to FLAT_SNR the posterior of every pixel still spreads over thousands of images, and a
   uniform sample of k_max // FLAT_PER_K images is as faithful as any screen (GoldDiff's random
   pool does the same there); steps 1-3 are skipped.
1. screen: the proxy grid (low_res x low_res per channel) is cut into PATCHES x PATCHES patches;
   for each patch p every image gets its plain proxy distance on that patch,
   ||q_p - sqrt(abar) P_p x_i||^2, and the r1 nearest of each patch are kept. Their union is the
   sample's candidate pool C (a few thousand images).
2. refine: at anchor pixels a (every ANCHOR_STRIDE-th pixel in each direction, every channel),
   each candidate gets the masked distance of that pixel's own posterior,
   sum_n M_t[n, a] (x_t,n - sqrt(abar) x_i,n)^2, the exact logit of the PCA-locality softmax at
   a up to its scale; the r2 nearest of each anchor form the head R. This is where the subset
   follows the neighbourhoods: images that fit one region well but the whole image poorly.
3. tail: m images drawn uniformly without replacement from the complement of R, each with the log
   weight log((N - |R|) / m), so that the images no screen found still count in every pixel's
   softmax (an importance-weighted uniform tail, in the spirit of Niedoba et al. 2024). At high
   noise, where the per-pixel posteriors are flat over thousands of images, the tail is what
   carries the estimate. From TAIL_SNR up the head holds all but a vanishing share of the mass and
   a tail image's weight times (N - |R|) / m is only noise, so there is no tail; its budget goes
   to the head (r2 = k_max // HEAD_PER_K_NO_TAIL instead of k_max // HEAD_PER_K).
Sharp regime: from SHARP_SNR (t <= 111 on the 10-step grid) each pixel's posterior sits on one or
   two images of its own neighbourhood, and they differ from pixel to pixel more than 7 x 7
   anchors can follow (even exact anchor heads over all N lose r^2 0.01 there), while the mask is
   sparse (about 5% of entries) and the kernel's sparse product makes every image cheap. So the
   pool itself is the subset: the SHARP_PATCHES x SHARP_PATCHES patches' nearest images, no
   refinement, no tail. From POINT_SNR (the last step, t = 0) each pixel's posterior is a point
   mass and a much smaller pool of the same screen (k_max // 100 per patch, at least 50) is the
   full scan to r^2 1.000.
Carry: a step hands on to the next the images of its subset whose mean per-pixel weight is at
   least CARRY_WEIGHT (`carry_out`), and the next screened step (below POINT_SNR) joins them to its
   head (`with_carry`), with weight 0 like every head image, so the tail is drawn from the rest as
   before. The images a pixel's posterior held at t + 1 are where that pixel's posterior looks at t,
   and a patch screen on a noisy x_t misses many of them; the previous step already weighed them
   exactly, so they cost nothing to find. The sampler and the one-step protocol pass `out.carry`
   from each call to the next along one trajectory.
4. aggregate: the exact per-pixel softmax over R and the tail with those offsets, through the one
   kernel (`Corpus.posterior`), which also gives each image's mean weight for the carry.

In one process, out of core and over a sharded corpus (`--shard corpus`) the same code runs: each
rank scores the rows it holds and `nearest_r` keeps the global nearest with one tie rule (lowest
dataset index), so the ranks pick what one process picks; the kernel merges the ranks' sums.
Sizes follow k_max and the regime (`local_plan`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import NamedTuple

import torch

from ..core.comm import Comm, pack_dtype
from .output import DenoiseOutput
from .streams import DRAWS, SampleStreams

PATCHES = 2  # patches per side of the proxy grid (2: the four quadrants)
ANCHOR_STRIDE = 4  # an anchor pixel every 4 pixels in each direction (7 x 7 on 28 x 28)
POOL_PER_K = 5  # r1 = k_max // POOL_PER_K candidates per patch
HEAD_PER_K = 150  # r2 = k_max // HEAD_PER_K head images per anchor
HEAD_PER_K_NO_TAIL = 100  # ... and from TAIL_SNR, with no tail, k_max // HEAD_PER_K_NO_TAIL
TAIL_PER_K = 10  # m = k_max // TAIL_PER_K uniform tail images
GAUSS_SNR = 0.005  # below this SNR (t >= 777 on the 10-step grid) the Wiener closed form
FLAT_SNR = 0.02  # below this SNR (t = 666 on the 10-step grid) the posterior is flat: no screen
FLAT_PER_K = 4  # ... and the subset is k_max // FLAT_PER_K images drawn uniformly
TAIL_SNR = 1.0  # from this SNR (t <= 222) no uniform tail
SHARP_SNR = 5.0  # from this SNR (t <= 111) the pool is the subset, no refinement
SHARP_PATCHES = 3  # ... screened on 3 x 3 patches
SHARP_POOL_PER_K = 9  # ... k_max // SHARP_POOL_PER_K per patch
POINT_SNR = 100.0  # from this SNR (t = 0) ...
POINT_POOL_PER_K = 100  # ... k_max // POINT_POOL_PER_K per patch,
POINT_POOL_MIN = 50  # ... and at least this many (mnist-5k's k_max 500 would leave 5: r^2 0.991)
CARRY_WEIGHT = 3e-4  # an image whose mean per-pixel weight is at least this goes on to the next
# step (3e-4 x 784 pixels: a quarter of one pixel's posterior, or the same spread over more pixels)


def regime(snr: float) -> str:
    """The regime of a local-subset step at this SNR, the one place its thresholds are compared:
    "gauss" (the Wiener closed form), "flat" (a uniform draw), "tail" (quadrant screen, anchor
    head, uniform tail), "anchors" (the same, no tail), "sharp" (3 x 3 patch pool as the subset)
    or "point" (the same screen, a small pool)."""
    for name, upto in (("gauss", GAUSS_SNR), ("flat", FLAT_SNR), ("tail", TAIL_SNR),
                       ("anchors", SHARP_SNR), ("sharp", POINT_SNR)):
        if snr < upto:
            return name
    return "point"


@dataclass(frozen=True)
class LocalPlan:
    """How one screened step builds its subset: patches per side of the proxy grid, candidates
    per patch (r1), head images per anchor (r2; None: the pool is the subset, no refinement) and
    uniform tail images (m)."""

    patches: int
    per_patch: int
    per_anchor: int | None
    tail: int


def local_plan(k_max: int, N: int, snr: float) -> LocalPlan:
    """The plan of a screened step at this SNR (from FLAT_SNR up), for k_max and N images. At
    k_max 6000: (2, 1200, 40, 600) below TAIL_SNR, (2, 1200, 60, 0) below SHARP_SNR, (3, 666,
    None, 0) below POINT_SNR, (3, 60, None, 0) from there (at least POINT_POOL_MIN per patch,
    at most the sharp regime's)."""
    def per(k: int, least: int = 1) -> int:
        return min(N, max(least, k_max // k))

    kind = regime(snr)
    if kind == "point":
        r1 = min(per(SHARP_POOL_PER_K), per(POINT_POOL_PER_K, POINT_POOL_MIN))  # <= sharp's
        return LocalPlan(SHARP_PATCHES, r1, None, 0)
    if kind == "sharp":
        return LocalPlan(SHARP_PATCHES, per(SHARP_POOL_PER_K), None, 0)
    r1 = per(POOL_PER_K)
    if kind == "anchors":
        return LocalPlan(PATCHES, r1, min(r1, per(HEAD_PER_K_NO_TAIL)), 0)
    return LocalPlan(PATCHES, r1, min(r1, per(HEAD_PER_K)), max(0, k_max // TAIL_PER_K))


def patch_slices(C: int, side: int, patches: int = PATCHES) -> list[torch.Tensor]:
    """Flat proxy indices (C * side^2 layout, channel-major) of each patch of a patches x patches
    cut of the side x side grid; every channel of a patch belongs to it. Edges split as evenly as
    possible, so every proxy pixel is in exactly one patch."""
    edges = [round(j * side / patches) for j in range(patches + 1)]
    grid = torch.arange(C * side * side).view(C, side, side)
    return [
        grid[:, edges[a] : edges[a + 1], edges[b] : edges[b + 1]].reshape(-1)
        for a in range(patches)
        for b in range(patches)
        if edges[a + 1] > edges[a] and edges[b + 1] > edges[b]
    ]


def patch_proxies(P: torch.Tensor, slices: list[torch.Tensor]) -> list[tuple[torch.Tensor, ...]]:
    """Per patch: (its proxy columns (N, |p|) float32 contiguous, their squared norms (N,)),
    cut once per proxy table and set of patches (`_PATCHES`) rather than at every step."""
    key = (id(P), tuple(tuple(sl.tolist()) for sl in slices))
    if key not in _PATCHES:
        while len(_PATCHES) >= _PATCH_TABLES:
            _PATCHES.pop(next(iter(_PATCHES)))
        cut = [P[:, sl.to(P.device)].float().contiguous() for sl in slices]
        _PATCHES[key] = (P, [(Pp, Pp.square().sum(1)) for Pp in cut])  # P held: its id stays
    return _PATCHES[key][1]


_PATCHES: dict = {}  # (id of a proxy table, patches) -> (the table, its patch cuts)
_PATCH_TABLES = 2  # tables kept (each cut costs as much memory as its table)


def patch_pool(
    q: torch.Tensor,
    P: torch.Tensor,
    scale: float,
    slices: list[torch.Tensor],
    r: int,
    comm: Comm | None = None,
    offset: int = 0,
    total: int | None = None,
) -> list[torch.Tensor]:
    """Each sample's candidate pool C: the union over patches of the r images nearest on that
    patch (step 1).

    q: (B, d) proxy queries; P: (N, d) proxies, rows offset .. offset + N of `total` images
    (a shard of the corpus under `--shard corpus`, whose ranks' candidates `comm` gathers);
    slices: flat proxy indices of each patch. Distance on patch p: ||q_p||^2 - 2 scale
    <q_p, P_p,i> + scale^2 ||P_p,i||^2 (the ||q_p||^2 term is the same for every image and left
    out). Returns B sorted tensors of dataset indices.
    """
    comm = comm or Comm()
    total = P.shape[0] if total is None else total
    cols = torch.arange(P.shape[0], device=P.device) + offset
    found = []
    for sl, (Pp, sq) in zip(slices, patch_proxies(P, slices)):  # Pp: (N, |p|)
        qp = q[:, sl.to(q.device)].float()  # (B, |p|)
        part = (scale * scale) * sq[None, :] - 2.0 * scale * (qp @ Pp.T)  # (B, N)
        found.append(nearest_r(comm, part, cols, min(r, total), total))  # (B, r)
    allp = torch.cat(found, dim=1)  # (B, |slices| r)
    return [torch.unique(row) for row in allp]


def anchor_pixels(shape: tuple[int, int, int], stride: int = ANCHOR_STRIDE) -> torch.Tensor:
    """Flat indices (channel-major C x H x W) of the anchor pixels: every `stride`-th row and
    column, starting stride // 2 in (at least one per side), in every channel."""
    C, H, W = shape
    rows = torch.arange(min(stride // 2, H - 1), H, stride)
    cols = torch.arange(min(stride // 2, W - 1), W, stride)
    grid = (rows[:, None] * W + cols[None, :]).reshape(-1)  # (A_c,)
    return torch.cat([grid + ch * H * W for ch in range(C)])


def anchor_head(
    corpus, x_t: torch.Tensor, scale: float, pool: torch.Tensor, M_a: torch.Tensor, r: int
) -> torch.Tensor:
    """One sample's head R (step 2): the union over anchors a of the r candidates of `pool` with
    the smallest masked distance sum_n M_a[n, a] (x_t,n - scale x_i,n)^2. x_t: (D,); pool: (c,)
    sorted dataset indices; M_a: (D, A) the mask's anchor columns. Over a sharded corpus each
    rank scores the candidates it holds."""
    local = pool - corpus.offset
    mine = (local >= 0) & (local < corpus.N)
    X = corpus.rows(local[mine])  # (c_r, D), a fresh copy: overwritten in place below
    d = X.mul_(-scale).add_(x_t[None, :]).square_() @ M_a  # (x_t - scale x_i)^2 @ M_a: (c_r, A)
    r = min(r, pool.shape[0])
    near = nearest_r(corpus.comm, d.T.contiguous(), pool[mine], r, corpus.total)  # (A, r)
    return torch.unique(near)


def smallest_r(v: torch.Tensor, r: int) -> torch.Tensor:
    """(B, r) column positions of the r smallest values of each row of v (B, n), ascending; ties
    at the r-th value go to the lowest columns, so the choice does not depend on how topk orders
    equal values (digits' integer pixels tie often) or on how the corpus is split."""
    if r == 0:
        return torch.zeros(v.shape[0], 0, dtype=torch.long, device=v.device)
    vals, cols = v.topk(r, dim=1, largest=False)
    thr = vals[:, -1:]  # (B, 1) the r-th smallest
    if bool(((v <= thr).sum(1) == r).all()):  # no tie across the r-th value: topk's set is the set
        return cols.sort(dim=1).values
    below = v < thr
    eq = v == thr
    pick = below | (eq & (eq.cumsum(1) <= r - below.sum(1, keepdim=True)))  # r per row
    return pick.nonzero()[:, 1].view(v.shape[0], r)


def nearest_r(comm: Comm, d: torch.Tensor, idx: torch.Tensor, r: int, total: int) -> torch.Tensor:
    """(B, r) dataset indices of the r smallest distances over every rank's columns. d: (B, n)
    this rank's columns; idx: (n,) their dataset indices (of `total`), ascending, and below every
    index a later rank holds; r: at most the number of columns of all ranks together. Each rank
    keeps its own nearest (`smallest_r`); the gathered candidates, in rank order, are in ascending
    index order, so the same tie rule over them gives what one process picks."""
    cols = smallest_r(d, min(r, d.shape[1]))  # (B, r_n)
    if comm.world == 1:
        return idx[cols]
    B = d.shape[0]
    pack = torch.full((B, r, 2), torch.inf, dtype=pack_dtype(total), device=d.device)
    pack[:, : cols.shape[1], 0] = d.gather(1, cols).to(pack.dtype)
    pack[:, : cols.shape[1], 1] = idx[cols].to(pack.dtype)
    every = comm.all_gather(pack).permute(1, 0, 2, 3).reshape(B, -1, 2)  # (B, R r, 2)
    best = smallest_r(every[..., 0], r)  # (B, r)
    return every[..., 1].gather(1, best).long()


def uniform_tail(
    N: int, head: torch.Tensor, m: int, generator: torch.Generator | None
) -> tuple[torch.Tensor, float]:
    """m images drawn uniformly without replacement from the N - |head| not in head (sorted),
    and the log weight log((N - |head|) / m) each of them carries; (empty, 0) when m = 0 or the
    head holds all N."""
    rest = N - int(head.shape[0])
    m = min(m, rest)
    if m <= 0:
        return head.new_zeros(0), 0.0
    keep = torch.ones(N, dtype=torch.bool)
    keep[head.cpu()] = False
    others = torch.nonzero(keep).squeeze(1)  # (N - |head|,)
    pick = torch.randperm(rest, generator=generator)[:m]
    return others[pick].sort().values.to(head.device), math.log(rest / m)


class LocalSubset(NamedTuple):
    """Each sample's golden subset from `local_subset`: rows[b] (k_b,) dataset indices, head first
    then tail; offsets[b] (k_b,) per-image log weights (0 on the head); pools[b] its candidates
    screened (on a flat step the uniform draw); heads[b] the head's size (0 on a flat step);
    carried[b] how many head images came only from the previous step's carry (no screen of this
    step found them)."""

    rows: list[torch.Tensor]
    offsets: list[torch.Tensor]
    pools: list[int]
    heads: list[int]
    carried: list[int]


def takes_carry(snr: float) -> bool:
    """Whether a step at this SNR joins the previous step's carry to its head: the screened steps
    below POINT_SNR (a flat step is a uniform draw; the last step's small pool is already the full
    scan to r^2 1.000)."""
    return regime(snr) in ("tail", "anchors", "sharp")


def with_carry(head: torch.Tensor, carry: torch.Tensor | None) -> tuple[torch.Tensor, int]:
    """(head joined with the carried images, sorted and without repeats; how many of them were not
    in head)."""
    if carry is None or carry.shape[0] == 0:
        return head, 0
    joined = torch.unique(torch.cat([head, carry.to(head.device)]))
    return joined, int(joined.shape[0] - head.shape[0])


def local_subset(
    den,
    x_t: torch.Tensor,
    abar: float,
    M: torch.Tensor,
    generators: list[torch.Generator | None],
    carry: list[torch.Tensor] | None = None,
) -> LocalSubset:
    """Each sample's golden subset (steps 0-3). x_t: (B, D); M: (D, D) the PCA-locality mask M_t;
    carry: optional, per sample, the dataset indices the previous step hands on (`carry_out`),
    joined to the head where `takes_carry`. Every rank draws the same tail from the same
    generators."""
    corpus, p = den.corpus, den.params
    N, scale, snr = corpus.total, math.sqrt(abar), abar / (1.0 - abar)
    B = x_t.shape[0]
    if regime(snr) in ("gauss", "flat"):  # step 0: a flat posterior, a uniform sample of it
        none = torch.zeros(0, dtype=torch.long, device=x_t.device)
        draws = [uniform_tail(N, none, den.k_max // FLAT_PER_K, g) for g in generators]
        rows = [d for d, _ in draws]
        offsets = [torch.full((d.shape[0],), w, device=x_t.device) for d, w in draws]
        sizes = [int(r.shape[0]) for r in rows]
        return LocalSubset(rows, offsets, sizes, [0] * B, [0] * B)  # pool = draw
    carry = carry if carry is not None and takes_carry(snr) else [None] * B
    index = corpus.proxy(p.low_res, p.backend, p.nlist)
    plan = local_plan(den.k_max, N, snr)
    slices = patch_slices(corpus.shape[0], p.low_res, plan.patches)
    q = index.query(x_t)
    pools = patch_pool(q, index.P, scale, slices, plan.per_patch, corpus.comm, corpus.offset, N)
    screened = [int(c.shape[0]) for c in pools]
    if plan.per_anchor is None:  # sharp regime: the pool (and the carry) is the subset
        joined = [with_carry(c, k) for c, k in zip(pools, carry)]
        rows = [r for r, _ in joined]
        zeros = [torch.zeros(r.shape[0], device=x_t.device) for r in rows]
        return LocalSubset(rows, zeros, screened, [int(r.shape[0]) for r in rows],
                           [n for _, n in joined])
    M_a = M[:, anchor_pixels(corpus.shape).to(M.device)].to(x_t.dtype)  # (D, A)
    rows, offsets, sizes, carried = [], [], [], []
    for b, pool in enumerate(pools):
        head = anchor_head(corpus, x_t[b], scale, pool, M_a, plan.per_anchor)
        head, n_carried = with_carry(head, carry[b])
        tail, w = uniform_tail(N, head, plan.tail, generators[b])
        rows.append(torch.cat([head, tail]))
        off = torch.zeros(rows[-1].shape[0], device=x_t.device)
        off[head.shape[0] :] = w
        offsets.append(off)
        sizes.append(int(head.shape[0]))
        carried.append(n_carried)
    return LocalSubset(rows, offsets, screened, sizes, carried)


def carry_out(rows: list[torch.Tensor], image_w: list[torch.Tensor]) -> list[torch.Tensor]:
    """Per sample, the images this step hands to the next: the rows whose mean over pixels of
    their posterior weight (`StreamingSoftmax.image_w`) is at least CARRY_WEIGHT."""
    return [r[w.to(r.device) >= CARRY_WEIGHT] for r, w in zip(rows, image_w)]


def local_denoise(
    den, x_t: torch.Tensor, t: int, abar: float, generator, carry=None
) -> DenoiseOutput:
    """One step of GoldDiffDenoiser `den` with subset="local": screen and refine
    (`local_subset`, joining the previous step's `carry`), then the exact per-pixel softmax over
    each sample's rows with their log weights (`Corpus.posterior`), whose image weights give the
    carry to the next step."""
    corpus = den.corpus
    M = den.mask(t, abar)
    t0 = time.perf_counter()
    gens = (
        generator.generators(DRAWS, t)
        if isinstance(generator, SampleStreams)
        else [generator] * x_t.shape[0]
    )
    sub = local_subset(den, x_t, abar, M, gens, carry)
    rows, offs = sub.rows, sub.offsets
    _sync(den.device)
    t1 = time.perf_counter()
    # a step hands on where the next can take it: SNR only rises, so after a point step comes none
    hands_on = takes_carry(abar / (1.0 - abar))
    acc = corpus.posterior(x_t, M, abar, den.temperature, subset=rows, offsets=offs,
                           weights=hands_on)
    _sync(den.device)
    t2 = time.perf_counter()
    k_b = torch.tensor([int(r.shape[0]) for r in rows], device=den.device)
    width = int(k_b.max())
    subset = torch.stack([torch.cat([r, r[:1].expand(width - r.shape[0])]) for r in rows])
    offset = torch.stack([torch.cat([o, o[:1].expand(width - o.shape[0])]) for o in offs])
    return DenoiseOutput(
        acc.mean(),
        den.name,
        pixel_entropy=acc.entropy(),
        subset=subset,
        subset_offset=offset,
        m_t=int(round(sum(sub.pools) / len(sub.pools))),
        k_t=int(round(float(k_b.float().mean()))),
        k_b=k_b,
        m_b=torch.tensor(sub.pools, device=den.device),
        c_b=torch.tensor(sub.carried, device=den.device),
        carry=carry_out(rows, acc.image_w) if hands_on else None,
        timings={"screen": t1 - t0, "select": 0.0, "aggregate": t2 - t1},
    )


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
