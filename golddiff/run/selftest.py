"""The device self-check behind scripts/gpu_check.py: what a short loan of a GPU should verify.

  environment   the interpreter, torch and its CUDA build, the device, which optional packages
                are present (faiss, streamlit, scikit-learn, pytest, ...)
  equality      every method (and each golden-subset mode) sampled with the same seed on the CPU
                and on the device: samples within float round-off, diagnostics equal
  bench         pca, golddiff (schedule, adaptive, local) and wiener on a small dataset: ms per
                step, peak device memory, speedup against the full scan (pca) on the same device
  torchrun      `sample --shard samples` on one rank (NCCL on CUDA, gloo on the CPU)

Everything here needs only torch and numpy: a dataset that needs scikit-learn (digits) falls back
to a generated one, and what could not run is listed as skipped with the reason.
"""

from __future__ import annotations

import importlib.util
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ..data.datasets import Dataset
from ..denoise.methods import make_denoiser
from .sampler import Trajectory, sample

OPTIONAL = ("faiss", "streamlit", "sklearn", "pytest", "mlxtend", "tqdm", "plotly", "umap")
# (label, method, subset): every denoiser and every golden-subset mode
CONFIGS = (
    ("pca", "pca", None),
    ("optimal", "optimal", None),
    ("wiener", "wiener", None),
    ("golddiff", "golddiff", "schedule"),
    ("golddiff-adaptive", "golddiff", "adaptive"),
    ("golddiff-local", "golddiff", "local"),
    ("hybrid", "hybrid", None),
)
BENCHED = ("pca", "golddiff", "golddiff-adaptive", "golddiff-local", "wiener")
SAMPLE_ATOL = 1e-3  # float round-off through the DDIM steps, images in [-1, 1]
DIAG_RTOL = 1e-3  # perplexity, ESS, captured mass
ROOT = Path(__file__).resolve().parents[2]
MISSING: set[str] = set()  # packages to treat as absent (a rehearsal of a bare machine)


def have(module: str) -> bool:
    """Whether `module` imports here (and is not in MISSING)."""
    return module not in MISSING and importlib.util.find_spec(module) is not None


def environment(device: torch.device) -> dict:
    """What runs the check: versions, the device, and which optional packages import."""
    env = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "device": str(device),
        "cpu_threads": torch.get_num_threads(),
        "packages": {m: have(m) for m in OPTIONAL},
    }
    if device.type == "cuda":
        prop = torch.cuda.get_device_properties(device)
        env.update(gpu=prop.name, gpu_memory_gb=round(prop.total_memory / 2**30, 1),
                   capability=f"{prop.major}.{prop.minor}")
    return env


def synthetic_images(n: int = 1797, side: int = 8, seed: int = 0) -> Dataset:
    """n generated side x side images in [-1, 1] (one Gaussian blob each, 10 classes by centre),
    for machines without scikit-learn's digits."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n)
    yy, xx = np.mgrid[:side, :side]
    cy = 1.5 + (labels // 5) * (side - 3) + rng.normal(0, 0.5, n)
    cx = 1 + (labels % 5) * (side - 2) / 4 + rng.normal(0, 0.5, n)
    r = rng.uniform(1.0, 2.0, n)
    img = np.exp(-((yy - cy[:, None, None]) ** 2 + (xx - cx[:, None, None]) ** 2)
                 / (2 * r[:, None, None] ** 2))
    images = torch.from_numpy((2 * img - 1).astype(np.float32)).reshape(n, 1, side, side)
    return Dataset("synthetic-8x8", images, labels.astype(np.int64),
                   classes=[str(i) for i in range(10)])


def check_dataset(skipped: list[str]) -> Dataset:
    """digits (scikit-learn) or, without scikit-learn, `synthetic_images` (noted in skipped)."""
    if have("sklearn"):
        from ..data.registry import load_dataset

        return load_dataset("digits")
    skipped.append("digits: scikit-learn is not installed; used synthetic-8x8 (1797 generated "
                   "8x8 images) instead")
    return synthetic_images()


def _run(data: Dataset, method: str, subset: str | None, device, steps: int, n: int,
         seed: int) -> Trajectory:
    over = {} if subset is None else {"subset": subset}
    den = make_denoiser(method, data, device=device, **over)
    return sample(den, steps=steps, n=n, seed=seed)


def _rel(a, b) -> float:
    """Largest relative difference of two arrays (0 where both are missing)."""
    if a is None and b is None:
        return 0.0
    a, b = np.asarray(a, float), np.asarray(b, float)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-12)))


def compare_runs(cpu: Trajectory, dev: Trajectory) -> dict:
    """Largest differences of two runs of the same seed: samples (absolute), perplexity, ESS,
    captured mass (relative), k_0.9 / k_0.99 (images); ok when within the tolerances."""
    d = {"samples": float(np.max(np.abs(cpu.samples - dev.samples)))}
    for name in ("perplexity", "ess", "captured_mass"):
        d[name] = max(_rel(getattr(r, name), getattr(s, name))
                      for r, s in zip(dev.records, cpu.records))
    for name in ("k90", "k99"):
        d[name] = max(float(np.max(np.abs(np.asarray(getattr(r, name), float)
                                          - np.asarray(getattr(s, name), float))))
                      for r, s in zip(dev.records, cpu.records))
    d["ok"] = bool(d["samples"] <= SAMPLE_ATOL
                   and max(d["perplexity"], d["ess"], d["captured_mass"]) <= DIAG_RTOL
                   and max(d["k90"], d["k99"]) <= 1)
    return d


def equality(data: Dataset, device, steps: int = 5, n: int = 2, seed: int = 0,
             configs=CONFIGS) -> dict:
    """{label: compare_runs(...)} for each (label, method, subset) sampled on the CPU and on
    `device` with the same seed."""
    out = {}
    for label, method, subset in configs:
        a = _run(data, method, subset, "cpu", steps, n, seed)
        b = _run(data, method, subset, device, steps, n, seed)
        out[label] = compare_runs(a, b)
    return out


def bench(data: Dataset, device, steps: int = 10, n: int = 8, seed: int = 0) -> dict:
    """{label: ms per step (median denoiser call), peak memory (MB), speedup against the full
    scan (pca) on the same device, final r^2 against pca} for BENCHED, through
    `run.bench.compare` (one call per golden-subset mode, each with its own pca run; the speedups
    use the median pca run)."""
    from .bench import compare

    rows, pca = {}, []
    for label, method, subset in CONFIGS:
        if label not in BENCHED or label == "pca":
            continue
        params = {} if subset is None else {"subset": subset}
        res = compare(data, [method], steps, n, seed, params, device, onestep=False)
        pca.append(res["pca"])
        rows[label] = res[method]
    pca.sort(key=lambda r: r.ms_per_step)
    ref = pca[len(pca) // 2]  # the median pca run
    ref_ms = ref.ms_per_step
    out = {"pca": _bench_row(ref, ref_ms)}
    out.update({k: _bench_row(r, ref_ms) for k, r in rows.items()})
    return {k: out[k] for k in BENCHED if k in out}


def _bench_row(r, ref_ms: float) -> dict:
    return {"ms_per_step": round(r.ms_per_step, 2),
            "peak_mb": None if r.peak_mb is None else round(r.peak_mb, 1),
            "speedup_vs_pca": round(ref_ms / max(r.ms_per_step, 1e-9), 2),
            "final_r2_vs_pca": round(r.final_r2, 5)}


def torchrun_smoke(dataset: str, device: torch.device, timeout_s: float = 180) -> dict:
    """`sample --shard samples` under torchrun with one rank: rc 0 and a trajectory of 2 samples."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "run.npz")
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1",
               "--nproc_per_node", "1", "-m", "golddiff", "sample", "--shard", "samples",
               "--dataset", dataset, "--device", device.type, "--samples", "2", "--steps", "3",
               "--out", out]
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        t0 = time.perf_counter()
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=env)
        res = {"rc": p.returncode, "seconds": round(time.perf_counter() - t0, 1),
               "backend": "nccl" if device.type == "cuda" else "gloo", "dataset": dataset}
        if p.returncode == 0 and os.path.exists(out):
            res["samples"] = int(Trajectory.load(out).samples.shape[0])
        res["ok"] = res.get("samples") == 2
        if not res["ok"]:
            res["tail"] = (p.stdout + p.stderr)[-2000:]
        return res


def pytest_cuda(device: torch.device, timeout_s: float = 240) -> dict:
    """The tests marked `cuda` (files under tests/ that use the marker), with
    GOLDDIFF_CHECK_DEVICE set to the device under check."""
    files = sorted(str(p) for p in (ROOT / "tests").glob("test_*.py")
                   if "pytest.mark.cuda" in p.read_text())
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider", *files]
    env = dict(os.environ, GOLDDIFF_CHECK_DEVICE=device.type)
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=env, cwd=ROOT)
    last = (p.stdout.strip().splitlines() or [""])[-1]
    return {"rc": p.returncode, "ok": p.returncode == 0, "summary": last, "files": len(files),
            "seconds": round(time.perf_counter() - t0, 1),
            **({} if p.returncode == 0 else {"tail": (p.stdout + p.stderr)[-3000:]})}
