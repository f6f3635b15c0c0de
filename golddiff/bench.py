"""Side-by-side timing and fidelity of methods from the same start noise.

`compare(...)` is the one place where methods are run against each other: the CLI `bench` table and the
app's Compare page both call it. Fidelity is measured against the full-scan PCA-locality denoiser:
final samples from the same x_T, and one step at the same x_t (the reference trajectory's states).
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from .data import Dataset
from .denoisers import make_denoiser
from .diagnostics import mse01, r2
from .sampler import Trajectory, sample
from .schedule import NoiseSchedule

REFERENCE = "pca"


@dataclass
class MethodResult:
    method: str
    trajectory: Trajectory
    ms_per_step: float                               # median wall time of a denoiser call (ms)
    phase_ms: dict                                   # median ms of screen / select / aggregate
    final_mse: float | None = None                   # vs the reference's final samples (mean over images)
    final_r2: float | None = None
    onestep_mse: list = field(default_factory=list)  # per step: method at the reference's x_t vs reference
    onestep_r2: list = field(default_factory=list)


def _onestep(method_den, ref: Trajectory, seed: int) -> tuple[list, list]:
    """Feed the reference trajectory's x_t to a method; per-step mean MSE and r^2 against the reference x0."""
    g = torch.Generator().manual_seed(seed)
    mses, r2s = [], []
    dev = method_den.device
    for rec in ref.records:
        x = torch.from_numpy(rec.x_t.reshape(rec.x_t.shape[0], -1)).to(dev)
        out = method_den.denoise(x, rec.t, generator=g)
        b = torch.from_numpy(rec.x0_hat.reshape(x.shape[0], -1)).to(dev)
        mses.append(float(mse01(out.x0_hat, b).mean()))
        r2s.append(float(r2(out.x0_hat, b).mean()))
    return mses, r2s


def compare(data: Dataset, methods: list[str], steps: int = 10, n: int = 8, seed: int = 0,
            params: dict | None = None, device=None, onestep: bool = True,
            callback: Callable[[str, object], None] | None = None) -> dict[str, MethodResult]:
    """Run each method from the same x_T; fidelity against full-scan PCA (always run first).

    callback(method, record) is forwarded from each sampler for progress. Returns {method: MethodResult}.
    """
    params = params or {}
    schedule = NoiseSchedule()
    order = [REFERENCE] + [m for m in methods if m != REFERENCE]
    results: dict[str, MethodResult] = {}
    for m in order:
        den = make_denoiser(m, data, schedule, device=device, **params)
        traj = sample(den, schedule, steps=steps, n=n, seed=seed,
                      callback=None if callback is None else (lambda rec, m=m: callback(m, rec)))
        times = traj.scalars("time_step") * 1000
        phases = {p: float(np.median(traj.scalars(f"time_{p}") * 1000)) for p in ("screen", "select", "aggregate")}
        res = MethodResult(m, traj, float(np.median(times)), phases)
        ref = results.get(REFERENCE, res).trajectory
        a = torch.from_numpy(traj.samples.reshape(n, -1))
        b = torch.from_numpy(ref.samples.reshape(n, -1))
        res.final_mse, res.final_r2 = float(mse01(a, b).mean()), float(r2(a, b).mean())
        if onestep:
            res.onestep_mse, res.onestep_r2 = ([0.0] * steps, [1.0] * steps) if m == REFERENCE else \
                _onestep(den, ref, seed)
        results[m] = res
    return {m: results[m] for m in order if m in methods or m == REFERENCE}


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", default="mnist-5k")
    p.add_argument("--methods", default="pca,golddiff,optimal,wiener,hybrid")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--n", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="also write the results as JSON")


def main(args) -> int:
    from . import load_dataset
    from .__main__ import method_params
    from .data import pick_device
    ds = load_dataset(args.dataset)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    res = compare(ds, methods, args.steps, args.n, args.seed, method_params(args), pick_device(args.device))
    ref = res[REFERENCE].ms_per_step
    print(f"{'method':<10} {'ms/step':>9} {'speedup':>8} {'final r2':>9} {'min 1-step r2':>13}")
    for m, r in res.items():
        print(f"{m:<10} {r.ms_per_step:9.1f} {ref / r.ms_per_step:8.1f} {r.final_r2:9.4f} {min(r.onestep_r2):13.4f}")
    return 0
