"""Speed against fidelity of GoldDiff's golden subset (`python -m golddiff bench --frontier`).

One run: the full-scan PCA-locality reference once, then GoldDiff with the adaptive subset at each
tolerance and with the published schedule at each k_max (k_min = k_max / 2, the paper's ratio), all
from the same x_T. Speedup is the same-run ratio of median ms per denoiser call. Fidelity as in
`bench.compare`: final samples against the reference's (mean and worst sample r^2) and one step at
the reference's x_t (the minimum over steps of the mean r^2).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable

import numpy as np
import torch

from ..core.schedule import NoiseSchedule
from ..core.summaries import r2
from ..data.datasets import Dataset
from ..denoise.methods import make_denoiser
from .bench import REFERENCE, as_params, onestep_fidelity
from .sampler import Trajectory, sample

TOLERANCES = (0.03, 0.01, 0.003)
K_MAXES = (6000, 3000, 1500, 750)


def frontier_configs(tolerances, k_maxes, N: int) -> list[tuple[str, dict]]:
    """(label, params overrides) of each point: adaptive per tolerance, schedule per k_max <= N."""
    out = [(f"adaptive tol {t:g}", dict(subset="adaptive", tolerance=float(t))) for t in tolerances]
    for k in k_maxes:
        k = min(int(k), N)
        over = dict(subset="schedule", k_min=max(1, k // 2), k_max=k)
        out.append((f"schedule k {over['k_min']}/{k}", over))
    return out


def _timed(den, steps: int, n: int, seed: int, callback) -> tuple[Trajectory, float, float, float]:
    """The run, its median wall and CPU ms per denoiser call, and its total CPU ms."""
    traj = sample(den, steps=steps, n=n, seed=seed, callback=callback)
    med = [float(np.median(traj.scalars(f) * 1000)) for f in ("time_step", "cpu_step")]
    return traj, med[0], med[1], float(np.sum(traj.scalars("cpu_step") * 1000))


def frontier(
    data: Dataset,
    tolerances=TOLERANCES,
    k_maxes=K_MAXES,
    steps: int = 10,
    n: int = 8,
    seed: int = 0,
    params=None,
    device=None,
    callback: Callable[[str, object], None] | None = None,
) -> dict:
    """The frontier as a JSON-ready dict: {"reference_ms", "points": [{label, ms_per_step, speedup,
    final_r2, final_r2_min, onestep_r2_min, mean_k, k_per_step, and the same ratio in process CPU
    time: cpu_ms_per_step, cpu_speedup, and of the whole run's CPU time: cpu_total_speedup}]}."""
    base = as_params(params)
    schedule = NoiseSchedule()
    ref_den = make_denoiser(REFERENCE, data, schedule, device=device, params=base)
    cb = None if callback is None else (lambda rec: callback(REFERENCE, rec))
    ref, ref_ms, ref_cpu, ref_total = _timed(ref_den, steps, n, seed, cb)
    b = torch.from_numpy(ref.samples.reshape(n, -1))
    points = []
    for label, over in frontier_configs(tolerances, k_maxes, data.N):
        den = make_denoiser("golddiff", data, schedule, device=device, params=replace(base, **over))
        cb = None if callback is None else (lambda rec, lb=label: callback(lb, rec))
        traj, ms, cpu, total = _timed(den, steps, n, seed, cb)
        final = r2(torch.from_numpy(traj.samples.reshape(n, -1)), b)  # (n,)
        _, one = onestep_fidelity(den, ref, seed)
        k = [float(np.mean(r.k_b)) if r.k_b is not None else float(r.k_t) for r in traj.records]
        points.append(
            {
                "label": label,
                **over,
                "ms_per_step": ms,
                "speedup": ref_ms / max(ms, 1e-9),
                "cpu_ms_per_step": cpu,
                "cpu_speedup": ref_cpu / max(cpu, 1e-9),
                "cpu_total_speedup": ref_total / max(total, 1e-9),
                "final_r2": float(final.mean()),
                "final_r2_min": float(final.min()),
                "onestep_r2_min": float(min(one)),
                "mean_k": float(np.mean(k)),
                "k_per_step": k,
            }
        )
    t = [int(r.t) for r in ref.records]
    return {
        "reference": REFERENCE,
        "reference_ms": ref_ms,
        "reference_cpu_ms": ref_cpu,
        "t": t,
        "points": points,
    }


def pareto(points: list[dict], key: str = "speedup") -> list[dict]:
    """The points no other point beats on both points[key] (a speedup) and final r^2, by speedup."""

    def beats(q: dict, p: dict) -> bool:
        ge = q[key] >= p[key] and q["final_r2"] >= p["final_r2"]
        return q is not p and ge and (q[key] > p[key] or q["final_r2"] > p["final_r2"])

    keep = [p for p in points if not any(beats(q, p) for q in points)]
    return sorted(keep, key=lambda p: p[key])


def format_frontier(js: dict) -> str:
    """The frontier table as text (one row per point, * = on the Pareto front)."""
    front = {id(p) for p in pareto(js["points"])}
    head = (
        f"{'config':<24} {'ms/step':>9} {'speedup':>8} {'cpu_x':>7} {'total_x':>7} "
        f"{'final_r2':>9} {'worst':>7} "
        f"{'min_1step_r2':>13} {'mean_k':>8}"
    )
    title = (
        f"frontier vs full-scan {js['reference']} ({js['reference_ms']:.1f} ms/step; cpu_x: the "
        f"speedup in process CPU time, {js.get('reference_cpu_ms', float('nan')):.1f} ms/step; "
        "total_x: in the CPU time of the whole run)"
    )
    lines = [title, head, "-" * len(head)]
    for p in js["points"]:
        mark = "*" if id(p) in front else " "
        lines.append(
            f"{p['label']:<23}{mark} {p['ms_per_step']:9.1f} {p['speedup']:8.2f} "
            f"{p.get('cpu_speedup', float('nan')):7.2f} "
            f"{p.get('cpu_total_speedup', float('nan')):7.2f} "
            f"{p['final_r2']:9.4f} {p['final_r2_min']:7.4f} {p['onestep_r2_min']:13.4f} "
            f"{p['mean_k']:8.0f}"
        )
    lines.append("* on the Pareto front (no other point is both faster and closer)")
    return "\n".join(lines)
