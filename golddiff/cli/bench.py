"""`python -m golddiff bench`: time and compare methods side by side (run.bench), sweep speed
against fidelity (--frontier, run.frontier), or time a run split across torchrun ranks (--shard).

All three paths check every argument first (`check_bench_args`), before any dataset loads, and write
their JSON through the same checked writer."""

from __future__ import annotations

import argparse
import sys

from .common import (
    add_method_args,
    add_shard_args,
    check_args,
    download_progress,
    labelled_progress,
    method_params,
    number_list,
    run_meta,
    save_json,
)


def add_bench_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", default="mnist-5k")
    p.add_argument("--methods", default="pca,golddiff,optimal,wiener,hybrid")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--samples", "--n", dest="n", type=int, default=8, help="samples (batch size)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--sizes",
        default=None,
        help="also time every method on random subsets of these sizes, "
        "e.g. 5000,10000,20000,60000",
    )
    p.add_argument("--json", default=None, help="also write the results as JSON")
    p.add_argument(
        "--frontier",
        action="store_true",
        help="the fidelity protocol instead of comparing --methods: the full scan once per seed, "
        "then GoldDiff's published schedule, adaptive and local subsets and the closed forms, "
        "each timed as a whole run (diagnostics off) and scored one step at a time at the full "
        "scan's own states and on the final samples",
    )
    p.add_argument("--seeds", default="0,1", help="with --frontier: seeds (samples pool over them)")
    p.add_argument("--frontier-tolerances", default="0.03,0.01", help="with --frontier: adaptive")
    p.add_argument("--frontier-k-max", default="6000,3000,1500", help="with --frontier: schedule")
    p.add_argument("--frontier-local-k-max", default="12000,6000,3000",
                   help="with --frontier: local subset k_max values")
    add_method_args(p)
    add_shard_args(p)


def check_bench_args(args) -> dict:
    """Every bench argument, checked before anything loads, on every path; returns the parsed lists
    {"methods", "sizes", "tolerances", "k_maxes", "local_k", "seeds"}."""
    from ..run.bench import check_methods

    if args.frontier and args.shard:
        raise ValueError("--frontier runs in one process; drop --shard or --frontier.")
    methods = (
        ["golddiff"] if args.frontier
        else check_methods([m.strip() for m in args.methods.split(",") if m.strip()])
    )
    sizes = number_list(args.sizes, "--sizes", int)
    tolerances = number_list(args.frontier_tolerances, "--frontier-tolerances")
    k_maxes = number_list(args.frontier_k_max, "--frontier-k-max", int)
    local_k = number_list(args.frontier_local_k_max, "--frontier-local-k-max", int)
    seeds = number_list(args.seeds, "--seeds", int)
    if args.frontier:
        if not seeds or min(seeds) < 0 or len(set(seeds)) < len(seeds):
            raise ValueError("--seeds must be distinct whole numbers >= 0 such as 0,1.")
        if not local_k or min(local_k) < 1:
            raise ValueError("--frontier-local-k-max must be positive whole numbers such as 6000.")
        if not tolerances or not all(0 < t < float("inf") for t in tolerances):
            raise ValueError("--frontier-tolerances must be positive numbers such as 0.03,0.01.")
        if not k_maxes or min(k_maxes) < 1:
            raise ValueError("--frontier-k-max must be positive whole numbers such as 6000,3000.")
    if sizes and min(sizes) < 1:
        raise ValueError(f"--sizes '{args.sizes}' must be positive whole numbers.")
    check_args(args, methods, "--json", args.json)
    return dict(methods=methods, sizes=sizes, tolerances=tolerances, k_maxes=k_maxes,
                local_k=local_k, seeds=seeds)


def cmd_bench(args) -> int:
    parsed = check_bench_args(args)
    if args.frontier:
        return bench_frontier(args, parsed)
    if args.shard:
        return bench_sharded(args, parsed["methods"])
    return bench_compare(args, parsed["methods"], parsed["sizes"])


def bench_compare(args, methods: list[str], sizes: list[int]) -> int:
    """run.bench.compare (and scaling over --sizes), printed and optionally saved as JSON."""
    import resource

    import torch

    from .. import load_dataset, pick_device
    from ..run.bench import REFERENCE, compare, format_report, scaling, to_json

    ds = load_dataset(args.dataset, progress=download_progress)
    for s in sizes:
        if s > ds.N:
            raise ValueError(
                f"Size {s} is outside 1..{ds.N} (N of '{ds.name}'); choose --sizes within it."
            )
    device = pick_device(args.device)
    params = method_params(args)
    progress = labelled_progress(args.steps)
    run = (args.steps, args.n, args.seed, params, device)
    recalls: dict = {}
    with torch.inference_mode():
        res = compare(ds, methods, *run, callback=lambda m, rec: progress(m, rec))
        grow = (
            scaling(
                ds, methods, sizes, *run,
                callback=lambda s, m, rec: progress(f"{m} N={s}", rec),
                known=res, recalls=recalls,
            )
            if sizes
            else None
        )
    sys.stderr.write("\n")
    meta = run_meta(ds, args, device) | {
        "params": {k: v for k, v in vars(params).items() if v is not None},
        "reference": REFERENCE,
        "process_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    js = to_json(res, meta, grow, recalls)
    print(
        f"{ds.name}: N={ds.N}, image {ds.shape}, {args.n} samples x {args.steps} steps, "
        f"{meta['device']}; reference: full-scan {REFERENCE}"
    )
    print(format_report(js))
    save_json(args.json, js)
    return 0


def bench_frontier(args, parsed: dict) -> int:
    """bench --frontier: run.frontier, printed and optionally saved as JSON."""
    import torch

    from .. import load_dataset, pick_device
    from ..run.frontier import format_frontier, frontier

    ds = load_dataset(args.dataset, progress=download_progress)
    device = pick_device(args.device)
    progress = labelled_progress(args.steps, width=24)
    with torch.inference_mode():
        js = frontier(
            ds, parsed["tolerances"], parsed["k_maxes"], args.steps, args.n, parsed["seeds"],
            method_params(args), device, progress, local_k_maxes=parsed["local_k"],
        )
    sys.stderr.write("\n")
    js["meta"] = run_meta(ds, args, device)
    print(f"{ds.name}: N={ds.N}, {args.n} samples x {args.steps} steps per seed, "
          f"{js['meta']['device']}")
    print(format_frontier(js))
    save_json(args.json, js)
    return 0


def bench_sharded(args, methods: list[str]) -> int:
    """bench --shard under torchrun: ms per step and bytes sent per step of each method."""
    from .. import load_dataset
    from ..run import distributed

    try:
        with distributed.session(args.device, args.timeout) as (comm, device):
            ds = load_dataset(args.dataset, progress=download_progress if comm.rank == 0 else None)
            run = dict(steps=args.steps, n=args.n, seed=args.seed)
            js = distributed.bench_sharded(
                args.shard, comm, ds, methods, method_params(args), device, **run
            )
    except distributed.PeerFailure as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if js is not None:
        print(distributed.format_sharded_bench(js))
        save_json(args.json, js)
    return 0
