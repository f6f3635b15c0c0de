"""`python -m golddiff sample`: sample step by step, print the per-step diagnostics, save the run.

Every argument is checked before the dataset loads; in one process or under torchrun (--shard)."""

from __future__ import annotations

import argparse
import sys

from .common import (
    add_method_args,
    add_shard_args,
    check_args,
    download_progress,
    format_table,
    method_params,
    step_progress,
)


def add_sample_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", default="mnist-5k")
    p.add_argument("--method", default="golddiff")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--samples", "--n", dest="n", type=int, default=8, help="number of samples")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="save the trajectory (.npz)")
    p.add_argument(
        "--exact-check",
        action="store_true",
        help="also run the full-scan PCA reference at each step (one-step r^2, slower)",
    )
    p.add_argument(
        "--diagnostics",
        choices=("auto", "exact", "estimated", "none"),
        default="auto",
        help="posterior diagnostics: exact (over all N), estimated (golden subset + a uniform "
        "sample of the rest, with standard errors), none; auto: estimated above 300,000 images",
    )
    p.add_argument(
        "--recall",
        action="store_true",
        help="after the run, the recall of the faiss-ivf screen of all N against the exact proxy "
        "search at the run's own states, per step (golddiff and hybrid with --backend faiss-ivf)",
    )
    add_method_args(p)
    add_shard_args(p)


def diagnostics_line(traj) -> str:
    from ..run.records import diagnostics_label

    return diagnostics_label(traj)


def save_trajectory(traj, out: str | None) -> None:
    if out:
        from ..data.files import write_output

        write_output(out, traj.save, "--out")
        print(f"saved {out}", file=sys.stderr)


def check_recall(args) -> None:
    """--recall measures an approximate screen in one process: say what to change otherwise."""
    if not args.recall:
        return
    if args.shard:
        raise ValueError("--recall runs in one process; drop --shard.")
    from ..run.records import RETRIEVING

    if args.method not in RETRIEVING or args.backend != "faiss-ivf":
        raise ValueError(
            "--recall measures the approximate faiss-ivf screen of golddiff or hybrid; use "
            "--method golddiff --backend faiss-ivf (the other backends search exactly)."
        )


def recall_lines(den, traj) -> str:
    """Per-step recall of the approximate screen at the run's states: mean (worst sample)."""
    from ..run.bench import screen_recall

    rec = screen_recall(den, traj)
    if rec is None:
        return "recall: this screen does not go through the approximate index (it is exact)."
    per_step = ", ".join(
        f"t={r.t} {sum(v) / len(v):.3f} ({min(v):.3f})" for r, v in zip(traj.records, rec)
    )
    return f"recall of the faiss-ivf screen vs the exact proxy top-k_max, mean (worst): {per_step}"


def cmd_sample(args) -> int:
    check_args(args, [args.method], "--out", args.out)
    check_recall(args)
    if args.shard:
        return sample_sharded(args)
    from .. import load_dataset, make_denoiser, pick_device, sample

    ds = load_dataset(args.dataset, progress=download_progress)
    if args.out:  # the noisy states x_t alone deflate to no less than ~2 bytes a value
        from ..data.files import check_free_space

        check_free_space(args.out, 2 * args.steps * args.n * ds.D, "--out")
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
        diagnostics=args.diagnostics,
    )
    print(diagnostics_line(traj), file=sys.stderr)
    print(format_table(traj))
    if args.recall:
        print(recall_lines(den, traj))
    save_trajectory(traj, args.out)
    return 0


def sample_sharded(args) -> int:
    """`sample --shard` under torchrun: each rank samples its part; rank 0 prints and saves."""
    from .. import load_dataset
    from ..run import distributed

    try:
        with distributed.session(args.device, args.timeout) as (comm, device):
            lead = comm.rank == 0
            ds = load_dataset(args.dataset, progress=download_progress if lead else None)
            if lead:
                print(
                    f"{args.method} on {ds.name}: N={ds.N}, image {ds.shape}, --shard {args.shard}"
                    f" over {comm.world} ranks, device {device}",
                    file=sys.stderr,
                )
            run = dict(steps=args.steps, n=args.n, seed=args.seed, exact_check=args.exact_check,
                       diagnostics=args.diagnostics)
            cb = step_progress(args.steps) if lead else None
            traj = distributed.sample_sharded(
                args.shard, comm, ds, args.method, method_params(args), device, **run, callback=cb
            )
    except distributed.PeerFailure as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if traj is not None:
        print(diagnostics_line(traj), file=sys.stderr)
        print(format_table(traj))
        save_trajectory(traj, args.out)
    return 0
