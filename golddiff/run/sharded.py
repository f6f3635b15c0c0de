"""A corpus split across the ranks of a torch.distributed group (`--shard corpus`).

Rank r of R holds rows [r N / R, (r + 1) N / R) of the dataset (`shard_bounds`), with the
statistics of all N (sum x_i (D,) and sum x_i x_i^T (D, D), all-reduced in float64). Every rank
holds the same x_t, so the DDIM loop and the denoisers run unchanged on each: the corpus's `comm`
merges every sum over images (`Corpus.posterior`, `core.comm`), GoldDiff's screen gathers each
rank's candidates (`denoise.shard_screen`), and every rank draws sample b's random pool from the
same seed stream (`denoise.streams`).
"""

from __future__ import annotations

import torch

from ..core.comm import Comm
from ..core.stats import DataStats, moments
from ..data.datasets import Dataset
from ..denoise.corpus import Corpus


def shard_bounds(N: int, world: int, rank: int) -> tuple[int, int]:
    """Rows [lo, hi) of rank `rank` out of `world`: contiguous blocks whose sizes differ by <= 1."""
    return rank * N // world, (rank + 1) * N // world


def shard_corpus(data: Dataset, comm: Comm, device: torch.device) -> Corpus:
    """This rank's rows of `data` on `device`, with the statistics of all N rows (all-reduced),
    merging its sums through `comm`."""
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
    return Corpus(part, device, offset=lo, total=data.N, stats=stats, comm=comm)
