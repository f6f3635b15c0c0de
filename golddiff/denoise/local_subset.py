"""A golden subset retrieved per neighbourhood (`subset="local"`, this project).

GoldDiff (Shang et al. 2026) ranks images by one global distance but aggregates with one
PCA-locality posterior per output pixel (Lukoianov et al. 2025), whose support is the images that
are close on that pixel's neighbourhood, not on the whole image. This subset is built to match:

1. screen: the proxy grid (low_res x low_res per channel) is cut into PATCHES x PATCHES patches;
   for each patch p every image gets its plain proxy distance on that patch,
   ||q_p - sqrt(abar) P_p x_i||^2, and the top r of each patch are kept. The head R is the union
   over patches (sample by sample).
2. tail: m images drawn uniformly without replacement from the complement of R, each with the log
   weight log((N - |R|) / m), so that the images no patch found still count in every pixel's
   softmax (an importance-weighted uniform tail, in the spirit of Niedoba et al. 2024). At high
   noise, where the per-pixel posteriors are flat over thousands of images, the tail is what
   carries the estimate; at low noise the head holds nearly all of the mass.
3. aggregate: the exact per-pixel softmax over R and the tail with those offsets, through the one
   kernel (`Corpus.posterior`), so in one process and out of core the same code runs.

Sizes follow k_max: r = k_max // HEAD_PER_K per patch and m = k_max // TAIL_PER_K.
"""

from __future__ import annotations

import math
import time

import torch

from .output import DenoiseOutput
from .streams import DRAWS, SampleStreams

PATCHES = 2  # patches per side of the proxy grid (2: the four quadrants)
HEAD_PER_K = 20  # r = k_max // HEAD_PER_K images per patch
TAIL_PER_K = 10  # m = k_max // TAIL_PER_K uniform tail images


def local_sizes(k_max: int, N: int) -> tuple[int, int]:
    """(r, m): images kept per patch and uniform tail size, for this k_max and N images."""
    return min(N, max(1, k_max // HEAD_PER_K)), max(0, k_max // TAIL_PER_K)


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


def patch_head(
    q: torch.Tensor, P: torch.Tensor, scale: float, slices: list[torch.Tensor], r: int
) -> list[torch.Tensor]:
    """The head R of each sample: the union over patches of the r images nearest on that patch.

    q: (B, d) proxy queries; P: (N, d) proxies; slices: flat proxy indices of each patch.
    Distance on patch p: ||q_p||^2 - 2 scale <q_p, P_p,i> + scale^2 ||P_p,i||^2 (the ||q_p||^2
    term is the same for every image and left out). Returns B sorted index tensors.
    """
    r = min(r, P.shape[0])
    found = []
    for sl in slices:
        Pp = P[:, sl.to(P.device)].float()  # (N, |p|)
        qp = q[:, sl.to(q.device)].float()  # (B, |p|)
        part = (scale * scale) * Pp.square().sum(1)[None, :] - 2.0 * scale * (qp @ Pp.T)  # (B, N)
        found.append(torch.topk(part, r, dim=1, largest=False).indices)  # (B, r)
    allp = torch.cat(found, dim=1)  # (B, |slices| r)
    return [torch.unique(row) for row in allp]


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


def local_subset(
    q: torch.Tensor,
    P: torch.Tensor,
    scale: float,
    shape: tuple[int, int, int],
    low_res: int,
    k_max: int,
    generators: list[torch.Generator | None],
) -> tuple[list[torch.Tensor], list[torch.Tensor], list[int]]:
    """Each sample's golden subset: (rows, offsets, head sizes). rows[b] (k_b,) dataset indices,
    head first then tail; offsets[b] (k_b,) per-image log weights (0 on the head). q: (B, d)
    proxy queries; P: (N, d) proxies of all N images; scale = sqrt(abar)."""
    C, N = shape[0], P.shape[0]
    r, m = local_sizes(k_max, N)
    heads = patch_head(q, P, scale, patch_slices(C, low_res), r)
    rows, offsets, sizes = [], [], []
    for b, head in enumerate(heads):
        tail, w = uniform_tail(N, head, m, generators[b])
        rows.append(torch.cat([head, tail]))
        off = torch.zeros(rows[-1].shape[0], device=q.device)
        off[head.shape[0] :] = w
        offsets.append(off)
        sizes.append(int(head.shape[0]))
    return rows, offsets, sizes


def local_denoise(den, x_t: torch.Tensor, t: int, abar: float, generator) -> DenoiseOutput:
    """One step of GoldDiffDenoiser `den` with subset="local": screen (`local_subset`), then the
    exact per-pixel softmax over each sample's rows with their log weights (`Corpus.posterior`)."""
    corpus, p = den.corpus, den.params
    if corpus.sharded:
        raise ValueError(
            "subset='local' does not run under --shard corpus yet; use --shard samples or "
            "subset='schedule'."
        )
    M = den.mask(t, abar)
    index = corpus.proxy(p.low_res, p.backend, p.nlist)
    t0 = time.perf_counter()
    gens = (
        generator.generators(DRAWS, t)
        if isinstance(generator, SampleStreams)
        else [generator] * x_t.shape[0]
    )
    rows, offs, heads = local_subset(
        index.query(x_t), index.P, math.sqrt(abar), corpus.shape, p.low_res, den.k_max, gens
    )
    _sync(den.device)
    t1 = time.perf_counter()
    acc = corpus.posterior(x_t, M, abar, den.temperature, subset=rows, offsets=offs)
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
        m_t=corpus.total,
        k_t=int(round(float(k_b.float().mean()))),
        k_b=k_b,
        timings={"screen": t1 - t0, "select": 0.0, "aggregate": t2 - t1},
    )


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
