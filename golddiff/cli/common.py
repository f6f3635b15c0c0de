"""What every CLI command shares: the denoiser, device, memory and shard flags (the denoiser flags
generated from DenoiserParams), the argument checks that run before anything loads, the one checked
writer of every output file, progress lines on stderr, and the per-step table."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Callable

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
    from ..denoise.params import DenoiserParams

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
    from ..denoise.params import DenoiserParams

    return DenoiserParams(**{name: getattr(args, name) for name in DenoiserParams.names()})


def download_progress(done: int, total: int | None) -> None:
    """Progress of a dataset download on stderr (the library reports bytes, the CLI draws them)."""
    mb = done / 2**20
    text = f"{mb:7.1f} / {total / 2**20:.1f} MB" if total else f"{mb:7.1f} MB"
    sys.stderr.write(f"\rdownloading {text}")
    if total and done >= total:
        sys.stderr.write("\n")
    sys.stderr.flush()


def add_shard_args(p: argparse.ArgumentParser) -> None:
    """--shard and --timeout: run under torchrun across processes (golddiff.run.distributed)."""
    from ..run.distributed import SHARD_MODES, TIMEOUT_S

    p.add_argument(
        "--shard",
        choices=SHARD_MODES,
        default=None,
        help="under torchrun: split the samples or the corpus across the ranks",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=TIMEOUT_S,
        help=f"with --shard: seconds a rank waits for the others before the run stops "
        f"(default {TIMEOUT_S:g})",
    )


def check_args(args, methods: list[str], out_flag: str, out: str | None) -> None:
    """Everything that needs no data, checked before any dataset loads (one ValueError): steps, n,
    seed, device, the method parameters, the shard timeout and that the output can be written."""
    from ..core.schedule import NoiseSchedule
    from ..data import pick_device
    from ..data.files import check_writable
    from ..run.sampler import check_batch, check_seed

    NoiseSchedule().timesteps(args.steps)  # steps=... is outside 1..T
    check_batch(args.n)
    check_seed(args.seed, "--seed")
    pick_device(args.device)
    method_params(args).check_fields(methods)
    timeout = getattr(args, "timeout", None)
    if getattr(args, "shard", None) and not (timeout is not None and 0 < timeout < float("inf")):
        raise ValueError(f"--timeout {timeout} must be a positive number of seconds.")
    if out:
        check_writable(out, out_flag, note=note)


def note(line: str) -> None:
    """A one-line notice on stderr (e.g. what the sweep of a killed run's leftovers removed)."""
    print(f"note: {line}", file=sys.stderr)


def number_list(spec: str | None, flag: str, kind: Callable = float) -> list:
    """'a,b,c' -> [kind(a), kind(b), kind(c)]; one sentence naming `flag` when it does not parse."""
    if not spec:
        return []
    try:
        return [kind(s) for s in spec.split(",") if s.strip()]
    except ValueError:
        what = "whole numbers such as 5000,10000" if kind is int else "numbers such as 0.03,0.01"
        raise ValueError(f"{flag} '{spec}' must be comma-separated {what}.") from None


def save_json(path: str | None, js: dict, flag: str = "--json") -> None:
    """Write `js` to `path` (when given) through the one checked writer of every output file."""
    if not path:
        return
    from ..data.files import write_output

    write_output(path, lambda tmp: Path(tmp).write_text(json.dumps(js, indent=1)), flag)
    print(f"saved {path}", file=sys.stderr)


def run_meta(ds, args, device) -> dict:
    """What a bench JSON records about the run: the dataset, the run's size, device and torch."""
    import torch

    from ..data import device_label

    return {
        "dataset": ds.name,
        "N": ds.N,
        "shape": list(ds.shape),
        "steps": args.steps,
        "n": args.n,
        "seed": args.seed,
        "device": device_label(device),
        "torch": torch.__version__,
    }
