"""Side-by-side timing and fidelity of methods from the same start noise.

`compare(...)` is the one place where methods are run against each other: the CLI `bench` table and
the app's Compare page both call it. Fidelity is measured against the full-scan PCA-locality
denoiser: final samples from the same x_T, and one step at the same x_t (the reference's states).
Timings are medians over the steps of one run of the denoiser call alone (diagnostics outside it).
Peak memory (`peak_mb`) is what one method's run adds on top of what the process held before it:
  CPU:  the peak resident set (Linux VmHWM, reset through /proc/self/clear_refs before each method;
        where that cannot be reset, the growth of getrusage ru_maxrss) minus the resident set
        before the run, caches the run builds included (the first method pays for them).
  CUDA: torch.cuda.max_memory_allocated during the run minus the memory allocated before it.
"""

from __future__ import annotations

import math
import resource
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from ..core.schedule import NoiseSchedule
from ..core.summaries import mse01, r2
from ..data.datasets import Dataset
from ..data.memory import proc_bytes
from ..denoise.methods import GoldDiffDenoiser, make_denoiser
from ..denoise.params import METHODS, DenoiserParams
from .sampler import Trajectory, sample

REFERENCE = "pca"
PHASES = ("screen", "select", "aggregate")
# SNR buckets of the one-step fidelity table (upper edges; the last bucket is open).
SNR_EDGES = (0.01, 0.1, 1.0, 10.0)


@dataclass
class MethodResult:
    method: str
    trajectory: Trajectory
    ms_per_step: float  # median wall time of a denoiser call (ms)
    phase_ms: dict  # median ms of screen / select / aggregate
    final_mse: float | None = None  # vs the reference's final samples (mean over images)
    final_r2: float | None = None
    final_r2_min: float | None = None  # worst sample's final r^2
    onestep_mse: list = field(
        default_factory=list
    )  # per step: method at the reference's x_t vs reference
    onestep_r2: list = field(default_factory=list)
    step_ms: list = field(default_factory=list)  # per step: wall time of the denoiser call (ms)
    total_ms: float = 0.0  # sum of step_ms
    peak_mb: float | None = None  # memory the run added at its peak (see module docstring)
    captured_mass: list = field(
        default_factory=list
    )  # per step: mean W_S of the golden subset (NaN: none)
    speedup: float | None = None  # reference median ms/step / this method's


# ----------------------------------------------------------------------------- memory probes


def _rss_bytes() -> int | None:
    """Current resident set (VmRSS) in bytes, None where /proc is missing."""
    return proc_bytes("/proc/self/status", "VmRSS")


def _hwm_bytes() -> int | None:
    """Peak resident set since the last reset (VmHWM) in bytes."""
    return proc_bytes("/proc/self/status", "VmHWM")


class _PeakMemory:
    """Measures the peak memory one block of work adds (see the module docstring for what it
    counts)."""

    def __init__(self, device):
        self.cuda = torch.device(device).type == "cuda" if device is not None else False

    def __enter__(self):
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
            return self
        self.reset = False
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # resets VmHWM to the current RSS
            self.reset = True
        except OSError:
            pass
        self.base = (
            _rss_bytes()
            if self.reset
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        )
        return self

    def __exit__(self, *exc):
        if self.cuda:
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated() - self.base
        elif self.reset and _hwm_bytes() is not None:
            self.peak = _hwm_bytes() - self.base
        else:
            self.peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - self.base
        return False

    @property
    def mb(self) -> float:
        return max(0.0, self.peak) / 2**20


# ----------------------------------------------------------------------------- compare


def onestep_samples(method_den, ref: Trajectory, generator) -> tuple[np.ndarray, np.ndarray]:
    """Feed each state x_t of the reference trajectory to a method: (S, n) MSE and r^2 of its
    x0_hat against the reference's there, per step and sample. generator: the random draws'
    source (a torch.Generator, or the run's per-sample `SampleStreams`). A method that hands
    images on from step to step (subset="local") gets at each state what it handed on at the
    reference's previous state, as it would along that trajectory."""
    mses, r2s = [], []
    dev = method_den.device
    carry = None
    for rec in ref.records:
        x = torch.from_numpy(rec.x_t.reshape(rec.x_t.shape[0], -1)).to(dev)
        out = method_den.denoise(x, rec.t, generator=generator, carry=carry)
        carry = out.carry
        b = torch.from_numpy(rec.x0_hat.reshape(x.shape[0], -1)).to(dev)
        mses.append(mse01(out.x0_hat, b).cpu().numpy())
        r2s.append(r2(out.x0_hat, b).cpu().numpy())
    return np.stack(mses), np.stack(r2s)


def onestep_fidelity(method_den, ref: Trajectory, seed: int = 0) -> tuple[list, list]:
    """Per-step mean MSE and r^2 of `onestep_samples`, draws from one generator seeded `seed`.
    The one-step numbers of the bench and of the app's Compare page both come from here."""
    mse, fid = onestep_samples(method_den, ref, torch.Generator().manual_seed(seed))
    return [float(v) for v in mse.mean(1)], [float(v) for v in fid.mean(1)]


def as_params(params: DenoiserParams | dict | None) -> DenoiserParams:
    """DenoiserParams from a DenoiserParams, a {name: value} dict (None = default) or None."""
    return params if isinstance(params, DenoiserParams) else DenoiserParams.from_mapping(params)


def check_methods(methods: list[str]) -> list[str]:
    """Raise a one-sentence ValueError for an empty
    list or an unknown method name; return the list."""
    if not methods:
        raise ValueError(f"No method given; choose some of: {', '.join(METHODS)}.")
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise ValueError(f"Unknown method '{bad[0]}'; choose from: {', '.join(METHODS)}.")
    return methods


def compare(
    data: Dataset,
    methods: list[str],
    steps: int = 10,
    n: int = 8,
    seed: int = 0,
    params: DenoiserParams | dict | None = None,
    device=None,
    onestep: bool = True,
    callback: Callable[[str, object], None] | None = None,
) -> dict[str, MethodResult]:
    """Run each method from the same x_T; fidelity against full-scan PCA (always run first).

    callback(method, record) is forwarded from each sampler for progress. Returns {method:
    MethodResult}.
    """
    check_methods(list(methods))
    params = as_params(params)
    schedule = NoiseSchedule()
    order = [REFERENCE] + [m for m in methods if m != REFERENCE]
    results: dict[str, MethodResult] = {}
    for m in order:
        den = make_denoiser(m, data, schedule, device=device, params=params)
        with _PeakMemory(den.device) as mem:
            traj = sample(
                den,
                schedule,
                steps=steps,
                n=n,
                seed=seed,
                callback=None if callback is None else (lambda rec, m=m: callback(m, rec)),
            )
        times = traj.scalars("time_step") * 1000
        phases = {p: float(np.median(traj.scalars(f"time_{p}") * 1000)) for p in PHASES}
        res = MethodResult(
            m,
            traj,
            float(np.median(times)),
            phases,
            step_ms=[float(v) for v in times],
            total_ms=float(times.sum()),
            peak_mb=mem.mb,
            captured_mass=(
                [float(np.mean(row)) for row in traj.series("captured_mass")]
                if any(r.captured_mass is not None for r in traj.records)
                else []
            ),
        )
        ref = results.get(REFERENCE, res)
        res.speedup = ref.ms_per_step / max(res.ms_per_step, 1e-9)
        a = torch.from_numpy(traj.samples.reshape(n, -1))
        b = torch.from_numpy(ref.trajectory.samples.reshape(n, -1))
        res.final_mse, res.final_r2 = float(mse01(a, b).mean()), float(r2(a, b).mean())
        res.final_r2_min = float(r2(a, b).min())
        if onestep:  # the reference too: a check that its own states give it back (r^2 1)
            res.onestep_mse, res.onestep_r2 = onestep_fidelity(den, ref.trajectory, seed)
        results[m] = res
    return {m: results[m] for m in order if m in methods or m == REFERENCE}


def snr_buckets(snrs: list[float], values: list[float]) -> dict[str, float]:
    """Group per-step values by SNR bucket (edges SNR_EDGES): {label: min over the steps in it}."""
    out: dict[str, list] = {}
    for snr, v in zip(snrs, values):
        i = next((j for j, e in enumerate(SNR_EDGES) if snr < e), len(SNR_EDGES))
        lo = "0" if i == 0 else f"{SNR_EDGES[i - 1]:g}"
        label = f"{lo}-{SNR_EDGES[i]:g}" if i < len(SNR_EDGES) else f">={lo}"
        out.setdefault(label, []).append(v)
    return {k: float(min(v)) for k, v in out.items()}


def scaling(
    data: Dataset,
    methods: list[str],
    sizes: list[int],
    steps: int = 10,
    n: int = 8,
    seed: int = 0,
    params: DenoiserParams | dict | None = None,
    device=None,
    callback: Callable[[int, str, object], None] | None = None,
    known: dict[str, MethodResult] | None = None,
    recalls: dict[int, dict[str, list[list[float]]]] | None = None,
) -> dict[int, dict[str, float]]:
    """Median ms per denoiser step of each method on random subsets of `sizes` images: {size:
    {method: ms}}.

    GoldDiff's k_min / k_max are left to their N-scaled defaults unless `params` fixes them.
    known: `compare`'s results on all of `data` (same steps, n, seed), reused for size data.N.
    recalls: when given, filled with {size: {method: GoldDiffDenoiser.screen_recall}} (per step,
    per sample)."""
    check_methods(list(methods))
    for s in sizes:
        if not 1 <= s <= data.N:
            raise ValueError(
                f"Size {s} is outside 1..{data.N} (the dataset's N); choose --sizes within it."
            )
    out: dict[int, dict[str, float]] = {}
    schedule = NoiseSchedule()
    for s in sizes:
        sub = data if s == data.N else data.subset(s, seed)
        out[s] = {}
        for m in methods:
            den = make_denoiser(m, sub, schedule, device=device, params=as_params(params))
            if known is not None and s == data.N and m in known:
                traj = known[m].trajectory
            else:
                traj = sample(
                    den,
                    schedule,
                    steps=steps,
                    n=n,
                    seed=seed,
                    callback=None if callback is None else (lambda r, s=s, m=m: callback(s, m, r)),
                )
            out[s][m] = float(np.median(traj.scalars("time_step") * 1000))
            if recalls is not None and (rec := screen_recall(den, traj)) is not None:
                recalls.setdefault(s, {})[m] = rec
    return out


def screen_recall(den, traj) -> list[list[float]] | None:
    """Recall of an approximate (faiss-ivf) GoldDiff screen of all N against the exact proxy
    search at the states of `traj`, per step and sample; None for other methods and exact
    screens (GoldDiffDenoiser.screen_recall)."""
    inner = getattr(den, "golddiff", den)  # hybrid holds a GoldDiff denoiser
    if not isinstance(inner, GoldDiffDenoiser):
        return None
    states = [
        (torch.from_numpy(r.x_t.reshape(r.x_t.shape[0], -1)), r.abar) for r in traj.records
    ]
    return inner.screen_recall(states)


def growth_exponent(sizes: list[int], ms: list[float]) -> float | None:
    """Least-squares slope of log(ms) against log(N): 1 means cost grows linearly with N."""
    if len(sizes) < 2:
        return None
    x, y = np.log(np.asarray(sizes, float)), np.log(np.maximum(np.asarray(ms, float), 1e-9))
    return float(np.polyfit(x, y, 1)[0])


# ----------------------------------------------------------------------------- report


def to_json(
    res: dict[str, MethodResult],
    meta: dict,
    sizes: dict | None = None,
    recalls: dict | None = None,
) -> dict:
    """A JSON-ready dict of the table (no trajectories)."""
    ref = res[REFERENCE].trajectory
    snrs = [float(r.snr) for r in ref.records]
    out = {"meta": meta, "t": [int(r.t) for r in ref.records], "snr": snrs, "methods": {}}
    for m, r in res.items():
        out["methods"][m] = {
            "ms_per_step": r.ms_per_step,
            "phase_ms": r.phase_ms,
            "speedup": r.speedup,
            "total_ms": r.total_ms,
            "step_ms": r.step_ms,
            "peak_mb": r.peak_mb,
            "final_mse": r.final_mse,
            "final_r2": r.final_r2,
            "final_r2_min": r.final_r2_min,
            "onestep_mse": r.onestep_mse,
            "onestep_r2": r.onestep_r2,
            "onestep_r2_by_snr": snr_buckets(snrs, r.onestep_r2) if r.onestep_r2 else {},
            "captured_mass": [None if math.isnan(v) else v for v in r.captured_mass],
            "steps_by": [rec.method for rec in r.trajectory.records],
        }
    if sizes:
        out["sizes"] = {str(s): v for s, v in sizes.items()}
        ns = sorted(sizes)
        out["growth_exponent"] = {
            m: growth_exponent(ns, [sizes[s][m] for s in ns]) for m in sizes[ns[0]]
        }
    if recalls:
        out["screen_recall"] = {str(s): v for s, v in recalls.items()}
    return out


def format_report(js: dict) -> str:
    """The bench tables as text: one row per method, then per-step fidelity, captured mass and
    scaling."""
    W = js["methods"]
    lines = [
        f"{'method':<9} {'ms/step':>9} {'screen':>8} {'select':>8} {'aggr':>9} {'speedup':>8} "
        f"{'total_s':>8} {'peak_MB':>8} {'final_mse':>10} {'final_r2':>9} {'worst':>7} "
        f"{'min_1step_r2':>13}"
    ]
    lines.append("-" * len(lines[0]))
    for m, r in W.items():
        p = r["phase_ms"]
        lines.append(
            f"{m:<9} {r['ms_per_step']:9.1f} {p['screen']:8.1f} "
            f"{p['select']:8.1f} {p['aggregate']:9.1f} "
            f"{r['speedup']:8.2f} {r['total_ms'] / 1000:8.2f} "
            f"{r['peak_mb']:8.0f} {r['final_mse']:10.5f} "
            f"{r['final_r2']:9.4f} {r.get('final_r2_min', float('nan')):7.4f} "
            f"{min(r['onestep_r2']) if r['onestep_r2'] else float('nan'):13.4f}"
        )
    lines += [
        "",
        "one-step r2 vs full-scan pca at the same x_t, per step (ms per step in brackets)",
        f"{'t':>5} {'SNR':>9} " + " ".join(f"{m:>17}" for m in W),
    ]
    for i, (t, snr) in enumerate(zip(js["t"], js["snr"])):
        cells = []
        for m, r in W.items():
            v = r["onestep_r2"][i] if r["onestep_r2"] else float("nan")
            tag = "w" if r["steps_by"][i] == "wiener" and m == "hybrid" else " "
            cells.append(f"{v:8.4f}{tag}[{r['step_ms'][i]:7.0f}]")
        lines.append(f"{t:5d} {snr:9.3g} " + " ".join(cells))
    lines += ["", "one-step r2 by SNR bucket (min over its steps)"]
    buckets = list(next(iter(W.values()))["onestep_r2_by_snr"]) if W else []
    lines.append(f"{'method':<9} " + " ".join(f"{b:>10}" for b in buckets))
    for m, r in W.items():
        if r["onestep_r2_by_snr"]:
            lines.append(
                f"{m:<9} " + " ".join(f"{r['onestep_r2_by_snr'][b]:10.4f}" for b in buckets)
            )
    gm = {m: r["captured_mass"] for m, r in W.items() if r["captured_mass"]}
    if gm:
        lines += [
            "",
            "captured mass W_S of the golden subset under the global posterior, per step (mean "
            "over samples)",
            f"{'method':<9} " + " ".join(f"{t:>6}" for t in js["t"]),
        ]
        for m, v in gm.items():
            lines.append(f"{m:<9} " + " ".join("     -" if x is None else f"{x:6.3f}" for x in v))
    if "sizes" in js:
        ns = list(js["sizes"])
        lines += [
            "",
            "median ms per step as N grows (growth exponent: slope of log ms vs log N)",
            f"{'method':<9} " + " ".join(f"{'N=' + s:>10}" for s in ns) + f" {'exponent':>9}",
        ]
        for m in js["sizes"][ns[0]]:
            e = js["growth_exponent"][m]
            lines.append(
                f"{m:<9} "
                + " ".join(f"{js['sizes'][s][m]:10.1f}" for s in ns)
                + f" {e if e is not None else float('nan'):9.2f}"
            )
    for s, v in js.get("screen_recall", {}).items():
        for m, steps in v.items():
            lines.append(
                f"recall of the approximate screen (top-k_max of all N vs exact), N={s}, {m}, "
                f"per step from high noise, mean (worst sample): "
                + ", ".join(f"{np.mean(r):.3f} ({min(r):.3f})" for r in steps)
            )
    if (peak := js["meta"].get("process_peak_mb")) is not None:
        lines.append(f"peak resident memory of the whole process: {peak:.0f} MB")
    return "\n".join(lines)
