"""A rough, deliberately simple cost estimate of a run, so that a shared server can refuse a run
that would take too long before it starts (the app's GOLDDIFF_APP_MAX_SECONDS).

The estimate counts multiply-adds of the dominant products per sample and step and divides them by a
throughput measured on this project's CPU (one thread: the pca step on mnist-5k, 2 samples, takes
0.3 s for 2 x 5000 x 784^2 multiply-adds, about 2e10 per second). Masks are taken as dense (the
worst case), so the estimate errs on the long side.
"""

from __future__ import annotations

import torch

from ..denoise.params import DenoiserParams
from ..denoise.retrieval import proxy_factor

RATE = {"cpu": 2e10, "cuda": 2e12}  # multiply-adds per second
LIMIT_ENV = "GOLDDIFF_APP_MAX_SECONDS"


def step_work(method: str, N: int, shape: tuple[int, int, int], params: DenoiserParams) -> float:
    """Multiply-adds of one denoising step for one sample, with the sampler's diagnostics (an exact
    global posterior: N x D)."""
    C, H, W = shape
    D = C * H * W
    diag = N * D
    if method == "optimal":
        return diag + N * D
    if method == "wiener":
        return diag + D * D
    if method == "pca":
        return diag + N * D * D
    p = params.resolve(N, shape)
    d = D // proxy_factor(shape, p.low_res) ** 2
    return diag + min(p.k_max, N) * D * D + N * d  # screen N proxies, aggregate over k_max


def estimate_seconds(
    methods: list[str],
    N: int,
    shape: tuple[int, int, int],
    steps: int,
    n: int,
    params: DenoiserParams,
    device: str | torch.device = "cpu",
    passes: int = 1,
) -> float:
    """Seconds a run of `methods` (each `passes` times over `steps` steps of `n` samples) takes,
    roughly. For the Compare page passes = 2: the run and the one-step fidelity pass."""
    rate = RATE.get(torch.device(device).type, RATE["cpu"])
    work = sum(step_work(m, N, shape, params) for m in methods)
    return passes * steps * n * work / rate


def max_seconds(env: dict) -> float | None:
    """The per-run limit from env[LIMIT_ENV]: seconds, '0' or 'off' for none, 600 when unset."""
    raw = str(env.get(LIMIT_ENV, "")).strip().lower()
    if raw in ("0", "off", "none"):
        return None
    if not raw:
        return 600.0
    try:
        v = float(raw)
    except ValueError:
        v = float("nan")
    if not v > 0 or v == float("inf"):
        raise ValueError(
            f"{LIMIT_ENV}={raw!r} is not a number of seconds; set it like 600, or 0 for no limit."
        )
    return v


def check_cost(seconds: float, limit: float | None) -> None:
    """Raise ValueError with one sentence when the estimate exceeds the limit."""
    if limit is not None and seconds > limit:
        raise ValueError(
            f"This run would take about {seconds:,.0f} s (a rough estimate), more than this "
            f"server's limit of {limit:,.0f} s per run; lower the steps, the samples or k_max, "
            "or pick a smaller dataset or a faster method."
        )
