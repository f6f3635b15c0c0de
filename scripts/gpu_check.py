"""Check the CUDA paths in a few minutes on one lent GPU, and write one summary of it.

    python scripts/gpu_check.py                    # on the GPU (device cuda)
    python scripts/gpu_check.py --device cpu       # the same check on the CPU (a rehearsal)

Sections (golddiff.run.selftest): environment, the tests marked `cuda`, CPU-vs-device equality on
the same seed, a bench of pca / golddiff (schedule, adaptive, local) / wiener, and a one-rank
torchrun of `sample --shard samples`. Needs torch and numpy only; what it cannot run (no pytest, no
scikit-learn, no faiss, no streamlit) is listed under "skipped". Writes gpu_check.json and
gpu_check.md into --out and exits 0 when every section that ran passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda", help="device under check (default cuda)")
    p.add_argument("--out", default="gpu_check_out", help="folder for gpu_check.json / .md")
    p.add_argument("--steps", type=int, default=10, help="DDIM steps of the bench")
    p.add_argument("--samples", type=int, default=8, help="samples of the bench")
    p.add_argument("--without", nargs="*", default=[], metavar="PACKAGE",
                   help="treat these packages as missing (rehearse a bare machine), e.g. "
                   "--without sklearn pytest faiss streamlit")
    p.add_argument("--skip", nargs="*", default=[],
                   choices=["tests", "equality", "bench", "torchrun"], help="sections to skip")
    return p.parse_args(argv)


def run_section(summary: dict, name: str, fn) -> None:
    """Run one section; its result (or its error) and its seconds go into summary[name]."""
    t0 = time.perf_counter()
    print(f"[gpu_check] {name} ...", file=sys.stderr, flush=True)
    try:
        res = fn()
    except Exception as e:  # a failed section is reported, the others still run
        res = {"ok": False, "error": f"{type(e).__name__}: {e}",
               "traceback": traceback.format_exc()[-3000:]}
    summary[name] = {"seconds": round(time.perf_counter() - t0, 1), "result": res}
    print(f"[gpu_check] {name}: {summary[name]['seconds']} s", file=sys.stderr, flush=True)


def passed(res) -> bool:
    if isinstance(res, dict) and "ok" in res:
        return bool(res["ok"])
    if isinstance(res, dict):
        return all(passed(v) for v in res.values() if isinstance(v, dict))
    return True


def markdown(summary: dict) -> str:
    env = summary["environment"]["result"]
    lines = [f"# GPU check on {env.get('gpu', env.get('device'))}", "",
             f"python {env.get('python')}, torch {env.get('torch')} (CUDA {env.get('torch_cuda')}),"
             f" device {env.get('device')}; dataset {summary['dataset']['name']} "
             f"(N={summary['dataset']['N']}); total {summary['seconds']} s; "
             f"{'PASSED' if summary['ok'] else 'FAILED'}", "",
             "packages: " + ", ".join(f"{k} {'yes' if v else 'no'}"
                                      for k, v in env.get("packages", {}).items()), ""]
    lines += ["## Skipped", ""] + [f"- {s}" for s in summary["skipped"] or ["nothing"]] + [""]
    for name in ("tests", "equality", "bench", "torchrun"):
        if name not in summary:
            continue
        res = summary[name]["result"]
        lines += [f"## {name} ({summary[name]['seconds']} s, "
                  f"{'ok' if passed(res) else 'FAILED'})", ""]
        if name in ("equality", "bench") and isinstance(res, dict) and "error" not in res:
            cols = list(next(iter(res.values())).keys())
            lines += ["| config | " + " | ".join(cols) + " |",
                      "|---" * (len(cols) + 1) + "|"]
            lines += [f"| {k} | " + " | ".join(_fmt(v.get(c)) for c in cols) + " |"
                      for k, v in res.items()]
        else:
            lines += ["```", json.dumps(res, indent=1, default=str)[:3000], "```"]
        lines.append("")
    return "\n".join(lines)


def _fmt(v) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def main(argv=None) -> int:
    args = parse(argv)
    import torch

    from golddiff.run import selftest

    t0 = time.perf_counter()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but torch sees no GPU; use --device cpu to rehearse.",
              file=sys.stderr)
        return 2
    selftest.MISSING.update(args.without)
    summary: dict = {"skipped": []}
    skipped = summary["skipped"]
    run_section(summary, "environment", lambda: selftest.environment(device))
    pkgs = summary["environment"]["result"].get("packages", {})
    for mod, what in (("faiss", "the faiss backends (faiss, faiss-ivf) and the faiss GPU index"),
                      ("streamlit", "the app")):
        if not pkgs.get(mod):
            skipped.append(f"{what}: {mod} is not installed")
    data = selftest.check_dataset(skipped)
    cli_dataset = "digits" if data.name == "digits" else "gmm"
    if "tests" in args.skip:
        skipped.append("tests: --skip")
    elif not selftest.have("pytest"):
        skipped.append("tests marked cuda: pytest is not installed (the equality section "
                       "covers the same-seed checks)")
    else:
        run_section(summary, "tests", lambda: selftest.pytest_cuda(device))
    if "equality" not in args.skip:
        run_section(summary, "equality", lambda: selftest.equality(data, device))
    if "bench" not in args.skip:
        run_section(summary, "bench",
                    lambda: selftest.bench(data, device, args.steps, args.samples))
    if "torchrun" not in args.skip:
        run_section(summary, "torchrun", lambda: selftest.torchrun_smoke(cli_dataset, device))
    summary["dataset"] = {"name": data.name, "N": data.N, "shape": list(data.shape)}
    summary["seconds"] = round(time.perf_counter() - t0, 1)
    summary["ok"] = all(passed(summary[k]["result"]) for k in
                        ("tests", "equality", "bench", "torchrun") if k in summary)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.json").write_text(json.dumps(summary, indent=1, default=str))
    (out / "gpu_check.md").write_text(markdown(summary))
    print(markdown(summary))
    print(f"[gpu_check] wrote {out / 'gpu_check.json'} and {out / 'gpu_check.md'}",
          file=sys.stderr)
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
