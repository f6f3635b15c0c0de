"""Speed against fidelity at the full scan's own states (`python -m golddiff bench --frontier`).

The protocol keeps a denoiser's local error apart from the chaos of a trajectory, where one
early difference can carry a sample to another image:

1. per seed, the full-scan PCA-locality reference (Lukoianov et al. 2025) samples once from x_T,
   and its states x_t and estimates x0_hat are kept;
2. every configuration samples its own trajectory from the same x_T, with the diagnostics off, so
   that the clock measures the DDIM loop alone; whole runs are timed in process CPU time (all
   threads; not inflated when other jobs share the cores) and in wall time;
3. at each reference state x_t, the configuration takes one step; its x0_hat against the
   reference's is the one-step r^2 of that step (mean over samples and the worst sample);
4. its final samples are compared with the reference's final samples (mean and worst sample).

Samples pool over the seeds (seeds 0, 1 with n = 8: sixteen samples). The speedups are ratios of
the reference's whole-run time to the configuration's, summed over the seeds.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Callable

import numpy as np
import torch

from ..core.schedule import NoiseSchedule
from ..core.summaries import r2
from ..data.datasets import Dataset
from ..denoise.methods import make_denoiser
from ..denoise.streams import SampleStreams
from .bench import REFERENCE, as_params, onestep_samples
from .sampler import Trajectory, sample

TOLERANCES = (0.03, 0.01)
K_MAXES = (6000, 3000, 1500)
LOCAL_K_MAXES = (12000, 6000, 3000)
SEEDS = (0, 1)


def frontier_configs(
    tolerances, k_maxes, N: int, local_k_maxes=LOCAL_K_MAXES, closed_form: bool = True
) -> list[tuple[str, str, dict]]:
    """(label, method, params overrides) of each point: the published schedule per k_max (k_min =
    k_max / 2, the paper's ratio), adaptive per tolerance, local per k_max, and the closed forms
    (wiener, optimal) that bracket them."""
    out = []
    for k in k_maxes:
        k = min(int(k), N)
        out.append((f"schedule k {max(1, k // 2)}/{k}", "golddiff",
                    dict(subset="schedule", k_min=max(1, k // 2), k_max=k)))
    for t in tolerances:
        out.append((f"adaptive tol {t:g}", "golddiff", dict(subset="adaptive", tolerance=float(t))))
    for k in local_k_maxes:
        k = min(int(k), N)
        out.append((f"local k {k}", "golddiff",
                    dict(subset="local", k_min=max(1, k // 2), k_max=k)))
    if closed_form:
        out += [("wiener", "wiener", {}), ("optimal", "optimal", {})]
    labels = [c[0] for c in out]
    return [c for i, c in enumerate(out) if c[0] not in labels[:i]]  # k_max clipped to N: once


def timed_run(den, steps: int, n: int, seed: int, callback) -> tuple[Trajectory, float, float]:
    """One whole sampling run with the diagnostics off: (trajectory, CPU s, wall s)."""
    c0, w0 = time.process_time(), time.perf_counter()
    traj = sample(den, steps=steps, n=n, seed=seed, callback=callback, diagnostics="none")
    return traj, time.process_time() - c0, time.perf_counter() - w0


def _k_per_step(traj: Trajectory) -> list[float]:
    """Mean golden-subset size per step (k_b where it varies by sample; N-wide methods: nan)."""
    return [
        float(np.mean(r.k_b)) if r.k_b is not None
        else float(r.k_t) if r.k_t is not None else float("nan")
        for r in traj.records
    ]


def frontier(
    data: Dataset,
    tolerances=TOLERANCES,
    k_maxes=K_MAXES,
    steps: int = 10,
    n: int = 8,
    seeds=SEEDS,
    params=None,
    device=None,
    callback: Callable[[str, object], None] | None = None,
    local_k_maxes=LOCAL_K_MAXES,
    closed_form: bool = True,
) -> dict:
    """The protocol (module docstring) as a JSON-ready dict: {"reference", "t", "samples",
    "seeds", "reference_cpu_s", "reference_wall_s", "points": [{label, method, the overrides,
    cpu_s, wall_s, cpu_total_speedup, speedup (wall), onestep_r2 and onestep_r2_worst (per step:
    mean and worst sample), onestep_r2_min (the worst step's mean), final_r2, final_r2_min,
    k_per_step, mean_k}]}. callback(label, record) reports progress."""
    base = as_params(params)
    schedule = NoiseSchedule()
    configs = frontier_configs(tolerances, k_maxes, data.N, local_k_maxes, closed_form)
    dens = {REFERENCE: make_denoiser(REFERENCE, data, schedule, device=device, params=base)}
    for label, method, over in configs:
        dens[label] = make_denoiser(method, data, schedule, device=device,
                                    params=replace(base, **over))
    for label, _, _ in configs:  # build the masks, proxies and indexes outside the clock
        sample(dens[label], steps=steps, n=1, seed=seeds[0], diagnostics="none")
    acc = {label: dict(cpu=0.0, wall=0.0, one=[], final=[], k=[]) for label in dens}
    for seed in seeds:
        cb = None if callback is None else (lambda rec, s=seed: callback(f"{REFERENCE} s{s}", rec))
        ref, cpu, wall = timed_run(dens[REFERENCE], steps, n, seed, cb)
        acc[REFERENCE]["cpu"] += cpu
        acc[REFERENCE]["wall"] += wall
        b = torch.from_numpy(ref.samples.reshape(n, -1))
        for label, _, _ in configs:
            lb = f"{label} s{seed}"
            cb = None if callback is None else (lambda rec, lb=lb: callback(lb, rec))
            traj, cpu, wall = timed_run(dens[label], steps, n, seed, cb)
            a = acc[label]
            a["cpu"] += cpu
            a["wall"] += wall
            a["final"].append(r2(torch.from_numpy(traj.samples.reshape(n, -1)), b).numpy())
            streams = SampleStreams(seed, range(n))  # the run's own per-sample draws
            a["one"].append(onestep_samples(dens[label], ref, streams)[1])  # (S, n)
            a["k"].append(_k_per_step(traj))
    R = acc[REFERENCE]
    points = []
    for label, method, over in configs:
        a = acc[label]
        one = np.concatenate(a["one"], axis=1)  # (S, n * seeds)
        final = np.concatenate(a["final"])  # (n * seeds,)
        k = np.mean(a["k"], axis=0)
        points.append({
            "label": label, "method": method, **over,
            "cpu_s": a["cpu"], "wall_s": a["wall"],
            "cpu_total_speedup": R["cpu"] / max(a["cpu"], 1e-9),
            "speedup": R["wall"] / max(a["wall"], 1e-9),
            "onestep_r2": one.mean(1).tolist(), "onestep_r2_worst": one.min(1).tolist(),
            "onestep_r2_min": float(one.mean(1).min()),
            "final_r2": float(final.mean()), "final_r2_min": float(final.min()),
            "k_per_step": k.tolist(),
            "mean_k": float(np.nanmean(k)) if np.isfinite(k).any() else None,
        })
    return {
        "reference": REFERENCE,
        "t": [int(r.t) for r in ref.records],
        "samples": n * len(seeds),
        "seeds": [int(s) for s in seeds],
        "reference_cpu_s": R["cpu"],
        "reference_wall_s": R["wall"],
        "points": points,
    }


def pareto(points: list[dict], key: str = "cpu_total_speedup", fid: str = "onestep_r2_min"):
    """The points no other point beats on both points[key] (a speedup) and points[fid] (a
    fidelity), in order of speedup."""

    def beats(q: dict, p: dict) -> bool:
        ge = q[key] >= p[key] and q[fid] >= p[fid]
        return q is not p and ge and (q[key] > p[key] or q[fid] > p[fid])

    keep = [p for p in points if not any(beats(q, p) for q in points)]
    return sorted(keep, key=lambda p: p[key])


def format_frontier(js: dict) -> str:
    """The protocol's tables as text: one row per point (* = on the Pareto front of whole-run CPU
    speedup against the worst step's one-step r^2), then the one-step r^2 of every step."""
    front = {id(p) for p in pareto(js["points"])}
    head = (f"{'config':<20}  {'cpu_x':>6} {'wall_x':>6} {'1-step min':>10} {'final':>7} "
            f"{'worst':>7} {'mean_k':>7}")
    title = (f"vs full-scan {js['reference']} over {js['samples']} samples (seeds "
             f"{', '.join(map(str, js['seeds']))}): whole runs, diagnostics off, reference "
             f"{js['reference_cpu_s']:.3g} s CPU / {js['reference_wall_s']:.3g} s wall")
    lines = [title, head, "-" * len(head)]
    for p in js["points"]:
        mark = "*" if id(p) in front else " "
        k = "-" if p["mean_k"] is None else f"{p['mean_k']:.0f}"
        lines.append(f"{p['label']:<20}{mark} {p['cpu_total_speedup']:6.1f} {p['speedup']:6.1f} "
                     f"{p['onestep_r2_min']:10.3f} {p['final_r2']:7.3f} {p['final_r2_min']:7.3f} "
                     f"{k:>7}")
    lines.append("* on the Pareto front (no other point is both faster and closer at every step)")
    lines += ["", "one-step r^2 at the reference's states, mean over samples (worst sample):",
              f"{'config':<20} " + " ".join(f"{t:>11}" for t in js["t"])]
    for p in js["points"]:
        pairs = zip(p["onestep_r2"], p["onestep_r2_worst"])
        cells = " ".join(f"{m:.3f}({w:.2f})" for m, w in pairs)
        lines.append(f"{p['label']:<20} {cells}")
    return "\n".join(lines)
