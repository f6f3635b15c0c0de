"""How partial sums over training images merge: `Comm`, the identity in one process, and the merges
that `run.distributed.DistComm` turns into collectives under `--shard corpus`.

A corpus split across R ranks holds rows [r N / R, (r + 1) N / R) on rank r. Every sum over the N
images is then a sum over the rank's rows followed by a merge:

  softmax sums    all-reduce the max, then s = sum_r s_r exp(mx_r - M) (log-sum-exp merge)
  plain sums      all-reduce
  top-k           each rank's top k (value, dataset index) pairs are all-gathered; the best k kept
  columns         each rank's (B, N_r) columns are all-gathered into the (B, N) of the dataset

In one process every merge returns its input unchanged, so one process pays nothing for it.
"""

from __future__ import annotations

import math

import torch

from .posterior import shift_s1
from .summaries import k_mass


class Comm:
    """The collectives of a group of ranks; this base class is one process (rank 0 of 1), where
    each is the identity. `phase` labels what the bytes a subclass counts are spent on."""

    rank, world = 0, 1

    def __init__(self):
        self.phase = "setup"
        self.bytes: dict[str, int] = {}

    def all_reduce(self, t: torch.Tensor, op: str = "sum") -> torch.Tensor:
        """In place: the elementwise sum (or max) of t over the ranks."""
        return t

    def all_gather(self, t: torch.Tensor) -> torch.Tensor:
        """(R, *t.shape): every rank's t, in rank order."""
        return t[None]

    def gather_object(self, obj) -> list | None:
        """Every rank's obj, in rank order, on rank 0 (None elsewhere)."""
        return [obj]


LOCAL = Comm()  # the one-process Comm every unsharded corpus uses


def pack_dtype(total: int) -> torch.dtype:
    """The dtype that gathers (value, dataset index) pairs: float32 holds every index exactly
    below 2^24 rows, float64 beyond."""
    return torch.float32 if total < 2**24 else torch.float64


def merge_softmax(comm: Comm, acc):
    """The exact softmax sums over the union of every rank's rows (`StreamingSoftmax`, in place).

    acc.mx: (B, P); s0, s1, s_sub: (B, P); sx, sx2: (B, D). A rank without rows passes mx = -inf
    and zero sums. M = max_r mx_r, then each s = sum_r s_r exp(mx_r - M)."""
    if comm.world == 1:
        return acc
    M = acc.mx.clone()
    comm.all_reduce(M, "max")
    r = torch.exp(acc.mx - M)  # (B, P), 0 on a rank without rows
    acc.s1 = shift_s1(acc.s1, acc.s0, acc.mx, M)  # s1 is kept relative to the max
    names = [n for n in ("s0", "s1", "sx", "s_sub", "sx2") if getattr(acc, n) is not None]
    parts = [getattr(acc, n) * r for n in names]
    sums = torch.cat(parts, 1)  # (B, sum of widths)
    comm.all_reduce(sums)
    for n, part in zip(names, torch.split(sums, [p.shape[1] for p in parts], 1)):
        setattr(acc, n, part)
    acc.mx = M
    return acc


def global_topk(
    comm: Comm, v: torch.Tensor, offset: int, total: int, k: int, largest: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """The k largest (or smallest) values over all ranks' columns: (values (B, k), dataset indices
    (B, k)). v: (B, n) this rank's columns, column j being row offset + j of `total` rows."""
    top = v.topk(min(k, v.shape[1]), dim=1, largest=largest)
    if comm.world == 1:
        return top.values, top.indices + offset
    B, n = top.values.shape
    fill = -math.inf if largest else math.inf
    pack = torch.full((B, k, 2), fill, dtype=pack_dtype(total), device=v.device)
    pack[:, :n, 0], pack[:, :n, 1] = top.values, top.indices + offset
    every = comm.all_gather(pack).permute(1, 0, 2, 3).reshape(B, -1, 2)  # (B, R k, 2)
    best = every[..., 0].topk(k, dim=1, largest=largest).indices  # (B, k)
    return every[..., 0].gather(1, best).to(v.dtype), every[..., 1].gather(1, best).long()


def gather_columns(comm: Comm, v: torch.Tensor, total: int) -> torch.Tensor:
    """(B, total): every rank's columns (B, N_r) side by side in rank order (shards of sizes that
    differ by at most one, as `run.sharded.shard_bounds` cuts them)."""
    if comm.world == 1:
        return v
    width = -(-total // comm.world)
    pad = v.new_zeros(v.shape[0], width)
    pad[:, : v.shape[1]] = v
    every = comm.all_gather(pad)  # (R, B, width)
    sizes = [(r + 1) * total // comm.world - r * total // comm.world for r in range(comm.world)]
    return torch.cat([every[r, :, :n] for r, n in enumerate(sizes)], 1)


def merged_k_mass(comm: Comm, w: torch.Tensor, ps: tuple[float, ...], total: int) -> torch.Tensor:
    """(B, P) fewest images holding mass p of the global weights (`core.summaries.k_mass`), from
    each rank's weights w (B, N_r) of its rows.

    One process sorts. Across ranks: w is non-negative float32, whose int32 bit patterns order
    like the values; bisect on the bit pattern v for the largest weight with mass(w >= v) >= p
    times the total (one all-reduce per halving, at most 32); k_p is the number of weights >= v."""
    if comm.world == 1:
        return torch.stack([k_mass(w, p) for p in ps], 1)
    B = w.shape[0]
    bits = w.float().contiguous().view(torch.int32).long()  # (B, N_r)
    wd = w.double()
    mass_all = comm.all_reduce(wd.sum(1))
    hi = comm.all_reduce(bits.amax(1) + 1, "max")
    target = mass_all[:, None] * torch.tensor(ps, dtype=torch.float64, device=w.device)  # (B, P)
    lo, hi = torch.zeros_like(target, dtype=torch.long), hi[:, None].expand_as(target).clone()
    while bool((hi - lo > 1).any()):  # identical on every rank: the masses are all-reduced
        mid = (lo + hi) // 2  # (B, P)
        mass = comm.all_reduce((wd[:, None, :] * (bits[:, None, :] >= mid[..., None])).sum(-1))
        ok = mass >= target
        lo, hi = torch.where(ok, mid, lo), torch.where(ok, hi, mid)
    count = comm.all_reduce((bits[:, None, :] >= lo[..., None]).sum(-1))  # (B, P)
    return count.clamp(1, total).reshape(B, len(ps))
