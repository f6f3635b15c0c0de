"""Sampling across processes with torch.distributed (torchrun): --shard samples or --shard corpus.

    samples   rank r runs samples [r n / R, (r + 1) n / R) with the whole corpus; each sample has
              its own seed stream, so the samples do not depend on R; rank 0 gathers them in order
    corpus    every rank runs all n samples over its N / R rows of the corpus; each step merges the
              ranks exactly (run.sharded, core.comm), so every rank holds the same x_t and
              rank 0 keeps it

Launch: `python -m torch.distributed.run --nproc-per-node R -m golddiff sample --shard ...`. The
process group uses gloo on the CPU and NCCL on CUDA (one GPU per local rank) and has a timeout:
a rank that fails or stops answering makes every collective of the others raise, and `Comm`
turns that into a `PeerFailure` with one sentence, instead of a hang.
"""

from __future__ import annotations

import os
import pickle
import time
from contextlib import contextmanager
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist

from ..core.schedule import NoiseSchedule
from ..data.datasets import Dataset
from ..data.device import pick_device
from ..core.comm import Comm
from ..denoise.methods import denoiser_on, make_denoiser
from ..denoise.params import DenoiserParams
from .records import StepRecord
from .sampler import Trajectory, sample
from .sharded import shard_bounds, shard_corpus

SHARD_MODES = ("samples", "corpus")
TIMEOUT_S = 300.0  # default process-group timeout: a collective waits this long for a peer


class PeerFailure(RuntimeError):
    """Another rank failed, exited or stopped answering within the process group's timeout."""


class DistComm(Comm):
    """The collectives of one torch.distributed process group, counting the bytes of each phase.

    Bytes are the payload of this rank: the tensor for an all-reduce (a ring all-reduce moves about
    2 (R - 1) / R times that over the wire), the gathered result for an all-gather."""

    def __init__(self, timeout_s: float = TIMEOUT_S):
        super().__init__()
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self.timeout_s = timeout_s

    def _count(self, n: int) -> None:
        if self.world > 1:  # one rank sends nothing
            self.bytes[self.phase] = self.bytes.get(self.phase, 0) + int(n)

    @contextmanager
    def _guard(self):
        try:
            yield
        except RuntimeError as e:  # gloo raises RuntimeError, NCCL DistBackendError (a subclass)
            raise PeerFailure(
                f"rank {self.rank}: another rank failed, exited or did not answer within "
                f"{self.timeout_s:g} s, so the run stops ({_reason(e)})."
            ) from None

    def all_reduce(self, t: torch.Tensor, op: str = "sum") -> torch.Tensor:
        """In place: the elementwise sum (or max) of t over the ranks."""
        self._count(t.numel() * t.element_size())
        if self.world > 1:
            with self._guard():
                dist.all_reduce(t, dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
        return t

    def all_gather(self, t: torch.Tensor) -> torch.Tensor:
        """(R, *t.shape): every rank's t, in rank order."""
        self._count(self.world * t.numel() * t.element_size())
        if self.world == 1:
            return t[None]
        flat = t.contiguous().reshape(-1)
        out = torch.empty(self.world * flat.numel(), dtype=t.dtype, device=t.device)
        with self._guard():
            dist.all_gather_single(out, flat)
        return out.reshape((self.world,) + tuple(t.shape))

    def gather_object(self, obj) -> list | None:
        """Every rank's obj, in rank order, on rank 0 (None elsewhere)."""
        if self.world == 1:
            return [obj]
        self._count(len(pickle.dumps(obj)))  # pickled again by gather_object: bytes to report
        out = [None] * self.world if self.rank == 0 else None
        with self._guard():
            dist.gather_object(obj, out, dst=0)
        return out


def _reason(e: Exception) -> str:
    """The backend's reason in a few words: '[.../pair.cc:553] Connection closed by peer [addr].
    This is typically ...' -> 'Connection closed by peer [addr]'."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if text.startswith("[") and "] " in text:
        text = text.split("] ", 1)[1]
    return text.split(". ")[0].rstrip(".")[:200]


def launched() -> bool:
    """Whether this process was started by torchrun (or set up like it: RANK and WORLD_SIZE)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


@contextmanager
def session(device: str | None = None, timeout_s: float = TIMEOUT_S):
    """Join the process group torchrun set up; yields (DistComm, this rank's device). NCCL on CUDA
    (GPU = LOCAL_RANK), gloo on the CPU; every collective times out after timeout_s."""
    if not launched():
        raise ValueError(
            "--shard needs a launch by torchrun, e.g. python -m torch.distributed.run "
            "--nproc-per-node 2 -m golddiff sample --shard samples ..."
        )
    if not timeout_s > 0:
        raise ValueError(f"--timeout {timeout_s} must be a positive number of seconds.")
    dev = pick_device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(dev)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
    try:
        yield DistComm(timeout_s), dev
    finally:
        dist.destroy_process_group()


# ----------------------------------------------------------------------------- trajectories


def _merge_field(values: list, sizes: list[int], name: str):
    """One StepRecord field from every rank: per-sample arrays are concatenated in rank order,
    times take the slowest rank, m_t the smallest (a rank whose samples all went nearest reports
    N), and the rest must agree."""
    if name.startswith("time_"):
        return max(values)
    if name == "m_t":
        return None if values[0] is None else min(values)
    arrays = [v for v in values if isinstance(v, np.ndarray)]
    if not arrays:
        return values[0]
    like = arrays[0]
    parts = [
        v if v is not None else np.full((n,) + like.shape[1:], np.nan, like.dtype)
        for v, n in zip(values, sizes)
    ]  # a rank without the field (none of its samples searched approximately): NaN
    return np.concatenate(parts)


def merge_trajectories(parts: list[Trajectory]) -> Trajectory:
    """The trajectory of all samples from each rank's trajectory of its block, in rank order."""
    sizes = [p.samples.shape[0] for p in parts]
    names = list(parts[0].records[0].to_dict())
    records = [
        StepRecord(**{f: _merge_field([getattr(r, f) for r in recs], sizes, f) for f in names})
        for recs in zip(*(p.records for p in parts))
    ]
    meta = dict(parts[0].meta, n=int(sum(sizes)))
    return Trajectory(
        records,
        np.concatenate([p.samples for p in parts]),
        np.concatenate([p.x_T for p in parts]),
        meta,
    )


# ----------------------------------------------------------------------------- sampling


def sample_sharded(
    mode: str,
    comm: Comm,
    data: Dataset,
    method: str,
    params: DenoiserParams,
    device: torch.device,
    steps: int = 10,
    n: int = 8,
    seed: int = 0,
    exact_check: bool = False,
    callback=None,
    diagnostics: str | None = "auto",
) -> Trajectory | None:
    """Sample n images across comm's ranks with `--shard mode`; the trajectory on rank 0, None on
    the others. Equal to `sample(make_denoiser(method, data, ...), n=n, seed=seed)` in one
    process up to float round-off."""
    if mode not in SHARD_MODES:
        raise ValueError(f"Unknown --shard '{mode}'; choose one of: {', '.join(SHARD_MODES)}.")
    schedule, comm.phase = NoiseSchedule(), "setup"
    if mode == "samples":
        if not comm.world <= int(n) <= 4096:
            raise ValueError(
                f"--samples {n} cannot be split over {comm.world} ranks; choose between "
                f"{comm.world} and 4096 samples."
            )
        lo, hi = shard_bounds(int(n), comm.world, comm.rank)
        den = make_denoiser(method, data, schedule, device=device, params=params)
        comm.phase = "denoise"  # no collective until the gather
        traj = sample(den, schedule, steps, hi - lo, seed, callback, exact_check, first=lo,
                      diagnostics=diagnostics)
        comm.phase = "gather"
        parts = comm.gather_object(traj)
        return None if parts is None else _tag(merge_trajectories(parts), mode, comm)
    corpus = shard_corpus(data, comm, device)  # merges its sums through comm
    den = denoiser_on(method, corpus, schedule, params)
    traj = sample(den, schedule, steps, n, seed, callback, exact_check, diagnostics=diagnostics)
    comm.phase = "gather"
    times = torch.tensor(traj.scalars("time_step"), dtype=torch.float64)  # (steps,)
    comm.all_reduce(times, "max")  # a step takes as long as its slowest rank
    for r, s in zip(traj.records, times.tolist()):
        r.time_step = s
    return _tag(traj, mode, comm) if comm.rank == 0 else None


def _tag(traj: Trajectory, mode: str, comm: Comm) -> Trajectory:
    traj.meta.update(shard=mode, world_size=comm.world)
    return traj


def bench_sharded(
    mode: str,
    comm: Comm,
    data: Dataset,
    methods: list[str],
    params: DenoiserParams,
    device: torch.device,
    steps: int = 10,
    n: int = 8,
    seed: int = 0,
) -> dict | None:
    """ms per step and bytes sent per step of each method under `--shard mode`: a JSON-ready dict
    on rank 0, None on the others.

    ms/step: median over the steps of the denoiser call, slowest rank; an identical warm-up run
    fills the statistics, masks and proxy caches. Bytes: this rank's payload per step (see
    `Comm`), for the denoiser and for the diagnostics over all N; the final gather of --shard
    samples apart."""
    out = {}
    for m in methods:
        sample_sharded(mode, comm, data, m, params, device, steps, n, seed)  # warm-up
        comm.bytes.clear()
        start = time.perf_counter()
        traj = sample_sharded(mode, comm, data, m, params, device, steps, n, seed)
        wall = time.perf_counter() - start
        out[m] = {
            "ms_per_step": (
                None if traj is None else float(np.median(traj.scalars("time_step"))) * 1e3
            ),
            "wall_s": wall,
            "bytes_per_step": {k: v / steps for k, v in comm.bytes.items() if k != "gather"},
            "gather_bytes": comm.bytes.get("gather", 0),
        }
    if comm.rank != 0:
        return None
    meta = dict(dataset=data.name, N=data.N, shape=list(data.shape), steps=steps, n=n, seed=seed)
    meta.update(shard=mode, world_size=comm.world, device=str(device), torch=torch.__version__)
    return {"meta": meta, "methods": out}


def format_sharded_bench(js: dict) -> str:
    """The sharded bench as text: one row per method."""
    m = js["meta"]
    lines = [
        f"{m['dataset']}: N={m['N']}, image {tuple(m['shape'])}, {m['n']} samples x {m['steps']} "
        f"steps, --shard {m['shard']} over {m['world_size']} ranks, {m['device']}",
        f"{'method':<9} {'ms/step':>9} {'wall_s':>8} {'denoise KB/step':>16} "
        f"{'diagnostics KB/step':>20} {'gather KB':>10}",
    ]
    for name, r in js["methods"].items():
        b = r["bytes_per_step"]
        lines.append(
            f"{name:<9} {r['ms_per_step']:9.1f} {r['wall_s']:8.2f} "
            f"{b.get('denoise', 0) / 1024:16.1f} {b.get('diagnostics', 0) / 1024:20.1f} "
            f"{r['gather_bytes'] / 1024:10.1f}"
        )
    return "\n".join(lines)
