"""Command line: python -m golddiff {info,sample,bench}.

All I/O and printing of the CLI lives here. Errors a user can cause exit with status 2 and one
sentence. The denoiser flags are generated from DenoiserParams, so every parameter has exactly one
flag.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np


def _progress(total: int):
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


def cmd_sample(args) -> int:
    from . import load_dataset, make_denoiser, pick_device, sample

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
        callback=_progress(args.steps),
        exact_check=args.exact_check,
    )
    print(format_table(traj))
    if args.out:
        traj.save(args.out)
        print(f"saved {args.out}", file=sys.stderr)
    return 0


def add_bench_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", default="mnist-5k")
    p.add_argument("--methods", default="pca,golddiff,optimal,wiener,hybrid")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--n", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--sizes",
        default=None,
        help="also time every method on random subsets of these sizes, "
        "e.g. 5000,10000,20000,60000",
    )
    p.add_argument("--json", default=None, help="also write the results as JSON")


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
    from .data.cache import atomic_write
    from .run.bench import REFERENCE, check_methods, compare, format_report, scaling, to_json

    methods = check_methods([m.strip() for m in args.methods.split(",") if m.strip()])
    sizes = parse_sizes(getattr(args, "sizes", None))
    ds = load_dataset(args.dataset, progress=download_progress)
    for s in sizes:
        if not 1 <= s <= ds.N:
            raise ValueError(
                f"Size {s} is outside 1..{ds.N} (N of '{ds.name}'); choose --sizes within it."
            )
    device = pick_device(args.device)
    params = method_params(args)
    start = time.perf_counter()

    def progress(label: str, rec) -> None:
        sys.stderr.write(
            f"\r{label:<22} step {rec.step + 1:>3}/{args.steps}  t={rec.t:4d}  "
            f"{1000 * rec.time_step:9.1f} ms  elapsed {time.perf_counter() - start:7.1f} s   "
        )
        sys.stderr.flush()

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
        atomic_write(path, lambda tmp: tmp.write_text(json.dumps(js, indent=1)))
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
    s.add_argument("--n", type=int, default=8)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", default=None, help="save the trajectory (.npz)")
    s.add_argument(
        "--exact-check",
        action="store_true",
        help="also run the full-scan PCA reference at each step (one-step r^2, slower)",
    )
    add_method_args(s)
    b = sub.add_parser("bench", help="time and compare methods side by side")
    add_bench_args(b)
    add_method_args(b)
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
