"""Step-by-step DDIM sampling with an analytical denoiser; one diagnostic record per step.

    x_T ~ N(0, I), each sample from its own seed stream (denoise.streams)
    for t in the DDIM timesteps, evenly spaced from T - 1 to 0 (10 steps: 999, 888, ..., 0):
        x0_hat = denoiser(x_t, t)                  # + diagnostics -> record -> callback(record)
        eps_hat = (x_t - sqrt(abar_t) x0_hat) / sqrt(1 - abar_t)
        x_{t'} = sqrt(abar_t') x0_hat + sqrt(1 - abar_t') eps_hat  # Song et al. 2021, Eq. 12
    return the last x0_hat

`ddim` is the one DDIM loop of the library: `sample` (with diagnostics) and the teaching pages
(plain runs, the Wiener path) all go through it.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..core.interrupt import checkpoint
from ..core.schedule import NoiseSchedule
from ..core.turns import device_turn, release_cached
from ..data.cache import atomic_write
from ..denoise.methods import Denoiser
from ..denoise.streams import DIAG, SampleStreams
from .estimate import HEAD, TAIL, nearest_head
from .records import StepRecord, check_diagnostics_memory, make_record, resolve_diagnostics

SEED_MAX = 2**63 - 1  # seeds are 0..SEED_MAX (torch and numpy generators both take these)
MAX_BATCH = 4096  # samples in one run (the streams and the per-sample records scale with it)


def check_seed(seed, name: str = "seed") -> int:
    """The seed as an int; ValueError naming `name` (e.g. "--seed") and the range otherwise."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not (
        0 <= seed <= SEED_MAX
    ):
        raise ValueError(f"{name}={seed} is outside 0..{SEED_MAX}; choose a seed in that range.")
    return int(seed)


def check_batch(n, name: str = "n") -> int:
    """The batch size B as an int; ValueError naming `name` ("--samples") outside 1..MAX_BATCH."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= MAX_BATCH:
        raise ValueError(
            f"{name}={n} samples is outside 1..{MAX_BATCH}; choose between 1 and {MAX_BATCH}."
        )
    return int(n)


# denoise(x_t (B, D), t) -> x0_hat (B, D); on_step(i, t, x_t, x0_hat) after each call
DenoiseFn = Callable[[torch.Tensor, int], torch.Tensor]


def ddim(
    denoise: DenoiseFn,
    x: torch.Tensor,
    ts: list[int],
    schedule: NoiseSchedule,
    on_step: Callable[[int, int, torch.Tensor, torch.Tensor], None] | None = None,
) -> torch.Tensor:
    """Deterministic DDIM (eta = 0) from x (B, D) at ts[0] down through ts (descending). Returns the
    last x0_hat (B, D): at ts[-1] = 0 the sample itself."""
    x0_hat = x
    for i, t in enumerate(ts):
        checkpoint()
        x0_hat = denoise(x, t)  # (B, D)
        if on_step is not None:
            on_step(i, t, x, x0_hat)
        if i + 1 < len(ts):
            x = schedule.ddim_step(x, x0_hat, t, ts[i + 1])  # x_{t_prev}
    return x0_hat


@dataclass
class Trajectory:
    records: list[StepRecord]  # one per step, in sampling order (t descending)
    samples: np.ndarray  # (B, C, H, W) final samples (the last x0_hat)
    x_T: np.ndarray  # (B, C, H, W) starting noise
    meta: dict = field(default_factory=dict)  # dataset, method, params, seed, steps, device

    def series(self, name: str) -> np.ndarray:
        """Stack a per-sample scalar diagnostic over
        steps: (steps, B); NaN where a step lacks it."""
        B = self.samples.shape[0]
        rows = [
            (
                np.full(B, np.nan)
                if getattr(r, name) is None
                else np.broadcast_to(np.asarray(getattr(r, name), dtype=float), (B,))
            )
            for r in self.records
        ]
        return np.stack(rows)

    def scalars(self, name: str) -> np.ndarray:
        """A per-step scalar (t, snr, m_t, k_t, times) over steps: (steps,); NaN where missing."""
        return np.array(
            [np.nan if getattr(r, name) is None else float(getattr(r, name)) for r in self.records]
        )

    def save(self, path: str | os.PathLike) -> None:
        """Write an .npz atomically (temp file + rename)."""
        arrays = {
            "samples": self.samples,
            "x_T": self.x_T,
            "meta": np.array(json.dumps(self.meta, default=str)),
        }
        for i, r in enumerate(self.records):
            for k, v in r.to_dict().items():
                if v is not None:
                    arrays[f"r{i}.{k}"] = np.asarray(v)

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as f:
                np.savez_compressed(f, **arrays)

        atomic_write(path, write)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Trajectory":
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            steps = 1 + max(int(k[1:].split(".")[0]) for k in z.files if k.startswith("r"))
            records = []
            for i in range(steps):
                kw = {}
                for f in fields(StepRecord):
                    key = f"r{i}.{f.name}"
                    if key in z.files:
                        v = z[key]
                        kw[f.name] = v.item() if v.ndim == 0 else v
                    else:
                        kw[f.name] = None
                records.append(StepRecord(**kw))
            return cls(records, z["samples"], z["x_T"], meta)


def sample(
    denoiser: Denoiser,
    schedule: NoiseSchedule | None = None,
    steps: int = 10,
    n: int = 4,
    seed: int = 0,
    callback: Callable[[StepRecord], None] | None = None,
    exact_check: bool = False,
    top_n: int = 32,
    x_T: torch.Tensor | None = None,
    first: int = 0,
    diagnostics: str | None = "auto",
    diagnostics_tail: int = TAIL,
    diagnostics_head: int = HEAD,
) -> Trajectory:
    """Run DDIM (eta = 0) from seeded noise with `denoiser`; one StepRecord per step.

    n: batch size B; x_T: optional (B, D) start noise. Samples first .. first + B - 1 of the run
    seeded `seed` each draw their noise and random pools from their own stream
    (`SampleStreams`), so a sample does not depend on B or on `first`: a rank that runs samples
    first.. of a sharded run (`run.distributed`) makes exactly the samples one process would.
    exact_check: also run the full-scan PCA-locality reference at each x_t (costs one full scan per
    step). callback(record) is called as each record is made (progress bars in the CLI and the app).
    Each step (denoiser and record) holds the device's turn (`core.turns.device_turn`), so runs of
    several threads on one device step one at a time; the callback runs outside it.
    diagnostics: exact (the global posterior over all N, also over a sharded corpus:
    `records.CorpusPosterior`), estimated (from the golden subset and the `diagnostics_head`
    nearest images by the proxy search plus `diagnostics_tail` images drawn uniformly from the
    rest per sample, with standard errors: `run.estimate`; its draws come from their own seed
    streams, so the samples are those of any other mode), none, or auto
    (`records.resolve_diagnostics`: estimated above EXACT_MAX_N images). meta["diagnostics"] and
    every record say which ran.
    """
    schedule = schedule or denoiser.schedule
    corpus = denoiser.corpus
    if x_T is not None:
        if x_T.dim() != 2 or x_T.shape[1] != corpus.D or not 1 <= x_T.shape[0] <= MAX_BATCH:
            raise ValueError(
                f"x_T has shape {tuple(x_T.shape)}; expected (B, {corpus.D}) with "
                f"1 <= B <= {MAX_BATCH}."
            )
    else:
        check_batch(n)
    ts = schedule.timesteps(steps)
    B = int(n) if x_T is None else int(x_T.shape[0])
    streams = SampleStreams(check_seed(seed), range(int(first), int(first) + B))
    if x_T is None:
        x_T = streams.noise(corpus.D)  # (B, D)
    mode = resolve_diagnostics(diagnostics, denoiser.name, corpus.total, corpus.sharded)
    for name, v in (("diagnostics_tail", diagnostics_tail), ("diagnostics_head", diagnostics_head)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
            raise ValueError(f"{name}={v} must be a whole number of images, 0 or more.")
    if mode == "exact":
        check_diagnostics_memory(B, corpus, corpus.device)  # before any step runs
    x = x_T.to(corpus.device, torch.float32)
    p = denoiser.params
    records: list[StepRecord] = []
    carry = None  # the images the last step handed on (subset="local"), per sample

    def step(x_t: torch.Tensor, t: int) -> torch.Tensor:
        with device_turn(corpus.device):  # runs sharing the device step one at a time
            rec, x0_hat = one_step(x_t, t)
        records.append(rec)
        if callback is not None:
            callback(rec)
        return x0_hat

    def one_step(x_t: torch.Tensor, t: int) -> tuple[StepRecord, torch.Tensor]:
        nonlocal carry
        start, cpu = time.perf_counter(), time.process_time()
        out = denoiser.denoise(x_t, t, generator=streams, carry=carry)
        carry = out.carry
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
        abar = schedule.abar(t)
        # the exact check uses the method's own mask (hybrid: its GoldDiff part's threshold and
        # rule)
        M = corpus.stats.mask(t, abar, p.mask_threshold, p.mask_rule) if exact_check else None
        with torch.inference_mode():
            estimated = mode == "estimated" and diagnostics_head > 0
            near = nearest_head(denoiser, x_t, abar, diagnostics_head) if estimated else None
            rec = make_record(
                len(records),
                t,
                x_t,
                out,
                corpus,
                abar,
                p.temperature,
                top_n,
                M,
                elapsed,
                cpu_step=cpu,
                diagnostics=mode,
                rngs=streams.rngs(DIAG, t) if mode == "estimated" else None,
                tail=int(diagnostics_tail),
                near=near,
            )
        return rec, out.x0_hat

    try:
        ddim(step, x, ts, schedule)
    finally:  # finished or stopped (a closed tab): its cached device blocks go back
        release_cached(corpus.device)
    meta = {
        "dataset": corpus.data.name,
        "method": denoiser.name,
        "steps": int(steps),
        "n": int(x.shape[0]),
        "seed": int(seed),
        "device": str(corpus.device),
        "N": corpus.total,
        "shape": list(corpus.shape),
        "params": p.used_by(denoiser.name),
        "diagnostics": mode,
    }
    if mode == "estimated":
        meta["diagnostics_tail"] = int(diagnostics_tail)
        meta["diagnostics_head"] = int(diagnostics_head)
    shape = (x.shape[0],) + corpus.shape
    return Trajectory(records, records[-1].x0_hat, x_T.cpu().numpy().reshape(shape), meta)
