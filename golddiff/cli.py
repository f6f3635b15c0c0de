"""Command line: python -m golddiff {info,sample,bench}.

All I/O and printing of the CLI lives here. Errors a user can cause exit with status 2 and one
sentence. The denoiser flags are generated from DenoiserParams, so every parameter has exactly one
flag.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .cli_common import (
    step_progress,
    add_method_args,
    download_progress,
    format_table,
    labelled_progress,
    method_params,
)
from .cli_scale import add_shard_args, cmd_bench_sharded, cmd_frontier, cmd_sample_sharded


def cmd_info(args) -> int:
    import torch

    from . import __version__, data

    print(f"golddiff   {__version__}")
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    print(f"torch      {torch.__version__} (CUDA GPUs seen: {gpus})")
    try:
        import faiss

        print(
            f"faiss      {faiss.__version__} "
            f"(GPUs seen: {faiss.get_num_gpus() if hasattr(faiss, 'get_num_gpus') else 0})"
        )
    except ImportError:
        print("faiss      not installed")
    print(f"device     {data.device_label(data.pick_device(None))}")
    print(f"cache      {data.cache_dir()}")
    print(f"data dirs  {', '.join(data.data_roots())}  (each /<name>, in this order)")
    print(
        "datasets:   (also folder:PATH or folder:PATH?res=R for a folder of images; RAM: what a"
        " loaded corpus holds; out-of-core sets read their uint8 images from the disk cache)"
    )
    for line in data.describe_datasets():
        print("  " + line)
    return 0


def check_args(args, methods: list[str], out_flag: str, out: str | None) -> None:
    """Everything that needs no data, checked before any dataset loads (one ValueError): steps, n,
    seed, device, the method parameters and that the output file can be written."""
    from .core.schedule import NoiseSchedule
    from .data import pick_device
    from .data.files import check_writable
    from .run.sampler import check_seed

    NoiseSchedule().timesteps(args.steps)  # steps=... is outside 1..T
    if not 1 <= args.n <= 4096:
        raise ValueError(f"n={args.n} samples is outside 1..4096; choose n between 1 and 4096.")
    check_seed(args.seed, "--seed")
    pick_device(args.device)
    method_params(args).check_fields(methods)
    if out:
        check_writable(out, out_flag)


def cmd_sample(args) -> int:
    from . import load_dataset, make_denoiser, pick_device, sample

    check_args(args, [args.method], "--out", args.out)
    if getattr(args, "shard", None):
        return cmd_sample_sharded(args)
    ds = load_dataset(args.dataset, progress=download_progress)
    den = make_denoiser(
        args.method, ds, device=pick_device(args.device), params=method_params(args)
    )
    print(
        f"{args.method} on {ds.name}: N={ds.N}, image {ds.shape}, device {den.device}",
        file=sys.stderr,
    )
    traj = sample(
        den,
        steps=args.steps,
        n=args.n,
        seed=args.seed,
        callback=step_progress(args.steps),
        exact_check=args.exact_check,
    )
    print(format_table(traj))
    if args.out:
        from .data.files import write_output

        write_output(args.out, traj.save, "--out")
        print(f"saved {args.out}", file=sys.stderr)
    return 0


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
        help="sweep GoldDiff's adaptive tolerances and published k_max against the full scan "
        "(speedup vs final r^2) instead of comparing --methods",
    )
    p.add_argument("--frontier-tolerances", default="0.03,0.01,0.003", help="with --frontier")
    p.add_argument("--frontier-k-max", default="6000,3000,1500,750", help="with --frontier")


def parse_sizes(spec: str | None) -> list[int]:
    if not spec:
        return []
    try:
        return [int(s) for s in spec.split(",") if s.strip()]
    except ValueError:
        raise ValueError(
            f"--sizes '{spec}' must be comma-separated whole numbers such as 5000,10000."
        ) from None


def cmd_bench(args) -> int:
    """Run golddiff.bench.compare (and scaling) and print the report; I/O only, the numbers come
    from bench."""
    import json
    import resource

    import torch

    from . import device_label, load_dataset, pick_device
    from .data.files import write_output
    from .run.bench import REFERENCE, check_methods, compare, format_report, scaling, to_json

    if getattr(args, "frontier", False):
        return cmd_frontier(args)
    methods = check_methods([m.strip() for m in args.methods.split(",") if m.strip()])
    if getattr(args, "shard", None):
        return cmd_bench_sharded(args, methods)
    sizes = parse_sizes(getattr(args, "sizes", None))
    check_args(args, methods, "--json", args.json)
    ds = load_dataset(args.dataset, progress=download_progress)
    for s in sizes:
        if not 1 <= s <= ds.N:
            raise ValueError(
                f"Size {s} is outside 1..{ds.N} (N of '{ds.name}'); choose --sizes within it."
            )
    device = pick_device(args.device)
    params = method_params(args)
    progress = labelled_progress(args.steps)

    recalls: dict = {}
    with torch.inference_mode():
        res = compare(
            ds,
            methods,
            args.steps,
            args.n,
            args.seed,
            params,
            device,
            callback=lambda m, rec: progress(m, rec),
        )
        grow = (
            scaling(
                ds,
                methods,
                sizes,
                args.steps,
                args.n,
                args.seed,
                params,
                device,
                callback=lambda s, m, rec: progress(f"{m} N={s}", rec),
                known=res,
                recalls=recalls,
            )
            if sizes
            else None
        )
    sys.stderr.write("\n")
    meta = {
        "dataset": ds.name,
        "N": ds.N,
        "shape": list(ds.shape),
        "steps": args.steps,
        "n": args.n,
        "seed": args.seed,
        "device": device_label(device),
        "torch": torch.__version__,
        "params": {k: v for k, v in vars(params).items() if v is not None},
        "reference": REFERENCE,
        "process_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    js = to_json(res, meta, grow, recalls)
    print(
        f"{ds.name}: N={ds.N}, image {ds.shape}, {args.n} samples x {args.steps} steps, "
        f"{meta['device']}; "
        f"reference: full-scan {REFERENCE}"
    )
    print(format_report(js))
    if args.json:
        path = Path(args.json)
        write_output(path, lambda tmp: tmp.write_text(json.dumps(js, indent=1)), "--json")
        print(f"saved {path}", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m golddiff", description="GoldDiff Explorer command line"
    )
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("info", help="device, versions, datasets and caches")
    s = sub.add_parser("sample", help="sample step by step and print the per-step diagnostics")
    s.add_argument("--dataset", default="mnist-5k")
    s.add_argument("--method", default="golddiff")
    s.add_argument("--steps", type=int, default=10)
    s.add_argument("--samples", "--n", dest="n", type=int, default=8, help="number of samples")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", default=None, help="save the trajectory (.npz)")
    s.add_argument(
        "--exact-check",
        action="store_true",
        help="also run the full-scan PCA reference at each step (one-step r^2, slower)",
    )
    add_method_args(s)
    add_shard_args(s)
    b = sub.add_parser("bench", help="time and compare methods side by side")
    add_bench_args(b)
    add_method_args(b)
    add_shard_args(b)
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if getattr(args, "max_memory", None) is not None:
            from .data.memory import set_max_memory

            set_max_memory(args.max_memory)
        return {"info": cmd_info, "sample": cmd_sample, "bench": cmd_bench}[args.cmd](args)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
