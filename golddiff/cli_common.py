"""What every CLI command shares: the denoiser flags (generated from DenoiserParams), progress
lines on stderr, and the per-step table. All printing of the CLI goes through these modules."""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np


def step_progress(total: int):
    """A callback printing a one-line progress bar per step to stderr."""
    start = time.perf_counter()

    def cb(rec):
        done = rec.step + 1
        bar = "#" * int(30 * done / total)
        sys.stderr.write(
            f"\r[{bar:<30}] step {done}/{total}  t={rec.t:4d}  {1000 * rec.time_step:8.1f} ms"
            f"  elapsed {time.perf_counter() - start:6.1f} s"
        )
        if done == total:
            sys.stderr.write("\n")
        sys.stderr.flush()

    return cb


def labelled_progress(steps: int, width: int = 22):
    """progress(label, record): one line per step on stderr for runs of several methods or
    configurations (bench, frontier), with the label, the step, its time and the elapsed time."""
    start = time.perf_counter()

    def progress(label: str, rec) -> None:
        sys.stderr.write(
            f"\r{label:<{width}} step {rec.step + 1:>3}/{steps}  t={rec.t:4d}  "
            f"{1000 * rec.time_step:9.1f} ms  elapsed {time.perf_counter() - start:7.1f} s   "
        )
        sys.stderr.flush()

    return progress


def format_table(traj) -> str:
    """The per-step table: t, SNR, perplexity, ESS, k_t, captured mass, ms (means over samples)."""
    head = (
        f"{'t':>5} {'SNR':>10} {'perplexity':>11} {'ESS':>10} {'k_0.99':>8} {'m_t':>7} {'k_t':>7} "
        f"{'W_S':>7} {'1-step r2':>9} {'ms':>9}"
    )
    lines = [head, "-" * len(head)]
    for r in traj.records:

        def fmt(v, spec):
            return format(float(np.mean(v)), spec) if v is not None else "-"

        lines.append(
            f"{r.t:5d} {r.snr:10.3g} {fmt(r.perplexity, '11.1f')} {fmt(r.ess, '10.1f')} "
            f"{fmt(r.k99, '8.0f')} {r.m_t if r.m_t is not None else '-':>7} "
            f"{r.k_t if r.k_t is not None else '-':>7} {fmt(r.captured_mass, '7.3f')} "
            f"{fmt(r.onestep_r2, '9.4f')} {1000 * r.time_step:9.1f}"
        )
    return "\n".join(lines)


def add_method_args(p: argparse.ArgumentParser) -> None:
    """A flag for every DenoiserParams field (built from its spec; None means the dataset's
    default), plus the device and the memory limit."""
    from .denoise.params import DenoiserParams

    for spec in DenoiserParams.specs():
        default = "dataset-scaled" if spec.default is None else spec.default
        p.add_argument(
            spec.flag,
            dest=spec.name,
            type=spec.kind,
            choices=spec.choices,
            default=None,
            help=f"{spec.help} [{', '.join(spec.methods)}; default {default}]",
        )
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    p.add_argument(
        "--max-memory",
        default=None,
        help="refuse any structure needing more than this, e.g. 2GB "
        "(default: $GOLDDIFF_MAX_MEMORY, "
        "else what the device has free)",
    )


def method_params(args):
    """The DenoiserParams the flags ask for (unset flags stay None: the dataset's default)."""
    from .denoise.params import DenoiserParams

    return DenoiserParams(**{name: getattr(args, name) for name in DenoiserParams.names()})


def download_progress(done: int, total: int | None) -> None:
    """Progress of a dataset download on stderr (the library reports bytes, the CLI draws them)."""
    mb = done / 2**20
    text = f"{mb:7.1f} / {total / 2**20:.1f} MB" if total else f"{mb:7.1f} MB"
    sys.stderr.write(f"\rdownloading {text}")
    if total and done >= total:
        sys.stderr.write("\n")
    sys.stderr.flush()
