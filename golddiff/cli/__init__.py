"""Command line: python -m golddiff {info,sample,bench}, one module per command.

All I/O and printing of the CLI lives in this package. Each command checks its arguments before
anything loads; an error a user can cause exits with status 2 and one sentence. The denoiser flags
are generated from DenoiserParams, so every parameter has exactly one flag."""

from __future__ import annotations

import argparse
import sys

from .bench import add_bench_args, cmd_bench
from .info import cmd_info
from .sample import add_sample_args, cmd_sample

COMMANDS = {"info": cmd_info, "sample": cmd_sample, "bench": cmd_bench}


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m golddiff", description="GoldDiff Explorer command line"
    )
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("info", help="device, versions, datasets and caches")
    add_sample_args(
        sub.add_parser("sample", help="sample step by step and print the per-step diagnostics")
    )
    add_bench_args(sub.add_parser("bench", help="time and compare methods side by side"))
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from ..data.cache import SWEEP
    from .common import note

    SWEEP.note = note  # the cache's start-up sweep reports on stderr
    try:
        if getattr(args, "max_memory", None) is not None:
            from ..data.memory import set_max_memory

            set_max_memory(args.max_memory)
        return COMMANDS[args.cmd](args)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
