"""Step-by-step DDIM sampling with an analytical denoiser; one diagnostic record per step.

    x_T ~ N(0, I) from a seeded generator
    for t in DDIM timesteps (900, 800, ..., 0):
        x0_hat = denoiser(x_t, t)                        # + diagnostics -> record -> callback(record)
        x_{t'} = sqrt(abar_t') x0_hat + sqrt(1 - abar_t') eps_hat
    return the last x0_hat
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

from .cache import atomic_write
from .denoisers import Denoiser
from .diagnostics import StepRecord, make_record
from .schedule import NoiseSchedule


@dataclass
class Trajectory:
    records: list[StepRecord]            # one per step, in sampling order (t descending)
    samples: np.ndarray                  # (B, C, H, W) final samples (the last x0_hat)
    x_T: np.ndarray                      # (B, C, H, W) starting noise
    meta: dict = field(default_factory=dict)   # dataset, method, params, seed, steps, device

    def series(self, name: str) -> np.ndarray:
        """Stack a per-sample scalar diagnostic over steps: (steps, B); NaN where a step lacks it."""
        B = self.samples.shape[0]
        rows = [np.full(B, np.nan) if getattr(r, name) is None else np.broadcast_to(
            np.asarray(getattr(r, name), dtype=float), (B,)) for r in self.records]
        return np.stack(rows)

    def scalars(self, name: str) -> np.ndarray:
        """A per-step scalar (t, snr, m_t, k_t, times) over steps: (steps,); NaN where missing."""
        return np.array([np.nan if getattr(r, name) is None else float(getattr(r, name)) for r in self.records])

    def save(self, path: str | os.PathLike) -> None:
        """Write an .npz atomically (temp file + rename)."""
        arrays = {"samples": self.samples, "x_T": self.x_T,
                  "meta": np.array(json.dumps(self.meta, default=str))}
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


def sample(denoiser: Denoiser, schedule: NoiseSchedule | None = None, steps: int = 10, n: int = 4, seed: int = 0,
           callback: Callable[[StepRecord], None] | None = None, exact_check: bool = False, top_n: int = 32,
           x_T: torch.Tensor | None = None) -> Trajectory:
    """Run DDIM (eta = 0) from seeded noise with `denoiser`; one StepRecord per step.

    n: batch size B; x_T: optional (B, D) start noise (else drawn from torch.Generator().manual_seed(seed)).
    exact_check: also run the full-scan PCA-locality reference at each x_t (costs one full scan per step).
    callback(record) is called as each record is made (progress bars in the CLI and the app).
    """
    schedule = schedule or denoiser.schedule
    c = denoiser.corpus
    if x_T is not None:
        if x_T.dim() != 2 or x_T.shape[1] != c.D or not 1 <= x_T.shape[0] <= 4096:
            raise ValueError(f"x_T has shape {tuple(x_T.shape)}; expected (B, {c.D}) with 1 <= B <= 4096.")
    elif not 1 <= int(n) <= 4096:
        raise ValueError(f"n={n} samples is outside 1..4096; choose n between 1 and 4096.")
    ts = schedule.timesteps(steps)
    g = torch.Generator().manual_seed(int(seed))
    if x_T is None:
        x_T = torch.randn(int(n), c.D, generator=g)
    x = x_T.to(c.device, torch.float32)
    # the exact check uses the method's own mask threshold (hybrid: its GoldDiff part's)
    ref_thr = getattr(getattr(denoiser, "golddiff", denoiser), "mask_threshold", 0.02)
    records = []
    for i, t in enumerate(ts):
        t0 = time.perf_counter()
        out = denoiser.denoise(x, t, generator=g)
        dt = time.perf_counter() - t0
        abar = schedule.abar(t)
        M = c.stats.mask(t, abar, ref_thr) if exact_check else None
        with torch.inference_mode():
            rec = make_record(i, t, x, out, c, abar, denoiser.temperature, top_n, M, dt)
        records.append(rec)
        if callback is not None:
            callback(rec)
        if i + 1 < len(ts):
            x = schedule.ddim_step(x, out.x0_hat, t, ts[i + 1])
    names = ("temperature", "mask_threshold", "k_min", "k_max", "low_res", "pool", "backend", "nlist", "nprobe",
             "snr_switch")
    params = {}
    for part in (denoiser, getattr(denoiser, "golddiff", None)):          # hybrid: its GoldDiff's too
        params.update({k: getattr(part, k) for k in names if part is not None and hasattr(part, k)})
    meta = {"dataset": c.data.name, "method": denoiser.name, "steps": int(steps), "n": int(x.shape[0]),
            "seed": int(seed), "device": str(c.device), "N": c.N, "shape": list(c.shape), "params": params}
    shape = (x.shape[0],) + c.shape
    return Trajectory(records, records[-1].x0_hat, x_T.cpu().numpy().reshape(shape), meta)
