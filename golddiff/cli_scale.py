"""CLI commands that scale out: `sample --shard` / `bench --shard` under torchrun, and `bench
--frontier` (speed against fidelity over subset sizes and tolerances)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .cli_common import (
    download_progress,
    format_table,
    labelled_progress,
    method_params,
    step_progress,
)


def add_shard_args(p: argparse.ArgumentParser) -> None:
    """--shard and --timeout: run under torchrun across processes (golddiff.run.distributed)."""
    from .run.distributed import SHARD_MODES, TIMEOUT_S

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


def cmd_sample_sharded(args) -> int:
    """`sample --shard` under torchrun: each rank samples its part; rank 0 prints and saves."""
    from . import load_dataset
    from .run.distributed import PeerFailure, sample_sharded, session

    try:
        with session(args.device, args.timeout) as (comm, device):
            lead = comm.rank == 0
            ds = load_dataset(args.dataset, progress=download_progress if lead else None)
            if lead:
                print(
                    f"{args.method} on {ds.name}: N={ds.N}, image {ds.shape}, --shard {args.shard}"
                    f" over {comm.world} ranks, device {device}",
                    file=sys.stderr,
                )
            run = dict(steps=args.steps, n=args.n, seed=args.seed, exact_check=args.exact_check)
            cb = step_progress(args.steps) if lead else None
            traj = sample_sharded(
                args.shard, comm, ds, args.method, method_params(args), device, **run, callback=cb
            )
    except PeerFailure as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if traj is not None:
        print(format_table(traj))
        if args.out:
            traj.save(args.out)
            print(f"saved {args.out}", file=sys.stderr)
    return 0


def cmd_bench_sharded(args, methods: list[str]) -> int:
    """`bench --shard` under torchrun: ms per step and bytes sent per step of each method."""
    import json

    from . import load_dataset
    from .data.cache import atomic_write
    from .run.distributed import PeerFailure, bench_sharded, format_sharded_bench, session

    try:
        with session(args.device, args.timeout) as (comm, device):
            ds = load_dataset(args.dataset, progress=download_progress if comm.rank == 0 else None)
            run = dict(steps=args.steps, n=args.n, seed=args.seed)
            js = bench_sharded(args.shard, comm, ds, methods, method_params(args), device, **run)
    except PeerFailure as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if js is not None:
        print(format_sharded_bench(js))
        if args.json:
            atomic_write(Path(args.json), lambda tmp: tmp.write_text(json.dumps(js, indent=1)))
            print(f"saved {args.json}", file=sys.stderr)


def cmd_frontier(args) -> int:
    """bench --frontier: golddiff.run.frontier, printed and optionally saved as JSON."""
    import json
    import torch
    from . import device_label, load_dataset, pick_device
    from .data.cache import atomic_write
    from .run.frontier import format_frontier, frontier

    def floats(spec: str, flag: str, kind=float) -> list:
        try:
            return [kind(s) for s in spec.split(",") if s.strip()]
        except ValueError:
            raise ValueError(f"{flag} '{spec}' must be comma-separated numbers.") from None

    tols = floats(args.frontier_tolerances, "--frontier-tolerances")
    ks = floats(args.frontier_k_max, "--frontier-k-max", int)
    ds = load_dataset(args.dataset, progress=download_progress)
    device = pick_device(args.device)
    progress = labelled_progress(args.steps, width=24)

    with torch.inference_mode():
        js = frontier(
            ds, tols, ks, args.steps, args.n, args.seed, method_params(args), device, progress
        )
    sys.stderr.write("\n")
    js["meta"] = {
        "dataset": ds.name,
        "N": ds.N,
        "steps": args.steps,
        "n": args.n,
        "seed": args.seed,
        "device": device_label(device),
        "torch": torch.__version__,
    }
    print(f"{ds.name}: N={ds.N}, {args.n} samples x {args.steps} steps, {js['meta']['device']}")
    print(format_frontier(js))
    if args.json:
        path = Path(args.json)
        atomic_write(path, lambda tmp: tmp.write_text(json.dumps(js, indent=1)))
        print(f"saved {path}", file=sys.stderr)
    return 0
