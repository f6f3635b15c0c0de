"""Computations behind the teaching pages (2-D toy, Compare, Gaussian regime, How it works).

Pure torch / numpy on top of the library; no streamlit. Every function returns plain arrays or dicts so the
pages only lay them out. Shapes: images flattened to D; B samples; N training images.
"""
from __future__ import annotations

import math
import time

import numpy as np
import torch

from .bench import onestep_fidelity
from .data import Dataset
from .denoisers import Denoiser, default_params, get_corpus, global_scan, make_denoiser, pool_size, subset_size
from .diagnostics import entropy, ess, global_posterior, k_mass, mse01, perplexity, r2
from .sampler import Trajectory, sample
from .schedule import NoiseSchedule

# ----------------------------------------------------------------------------- 2-D toy (Figure 1)


def toy_params(data: Dataset, k_min: int | None = None, k_max: int | None = None, pool: str = "random") -> dict:
    """GoldDiff parameters for a 2-D toy: k_min / k_max scaled to N as in the paper (N/20, N/10), proxy = the
    point itself (low_res 1), and the all-ones mask (threshold 0): for D = 2 locality is trivial, so GoldDiff
    is the exact global posterior restricted to the golden subset."""
    d = default_params(data.N, data.shape)
    return dict(k_min=int(k_min or d["k_min"]), k_max=int(k_max or d["k_max"]), low_res=1, mask_threshold=0.0,
                pool=pool)


def toy_run(data: Dataset, x_T: tuple[float, float], steps: int = 50, seed: int = 0, **params) -> Trajectory:
    """GoldDiff from one start point x_T = (x, y) on a 2-D toy set; one record per DDIM step (CPU)."""
    if data.D != 2:
        raise ValueError(f"'{data.name}' is not a 2-D toy set; pick moons or gmm.")
    den = make_denoiser("golddiff", data, device="cpu", **toy_params(data, **params))
    x = torch.tensor([list(map(float, x_T))], dtype=torch.float32)          # (1, 2)
    return sample(den, steps=steps, n=1, seed=seed, x_T=x)


def posterior_weights(data: Dataset, x_t: np.ndarray | torch.Tensor, t: int, tau: float = 1.0,
                      schedule: NoiseSchedule | None = None, device="cpu") -> np.ndarray:
    """(B, N) exact global posterior weights w_i(x_t) at timestep t. x_t: (B, D) or (B, C, H, W)."""
    schedule = schedule or NoiseSchedule()
    c = get_corpus(data, device)
    x = torch.as_tensor(np.asarray(x_t, dtype=np.float32)).reshape(-1, c.D).to(c.device)
    return global_posterior(x, c, schedule.abar(t), tau).cpu().numpy()


def toy_frame(data: Dataset, traj: Trajectory, step: int, tau: float = 1.0) -> dict:
    """Everything the toy plot shows at one step: training points (N, 2), their weights (N,), the golden
    subset indices (k_t,), x_t (2,), the x_t path and the x0_hat path up to this step ((step+1, 2) each)."""
    if not 0 <= step < len(traj.records):
        raise ValueError(f"Step {step} is outside 0..{len(traj.records) - 1}.")
    rec = traj.records[step]
    x_path = np.stack([r.x_t.reshape(-1)[:2] for r in traj.records[:step + 1]])
    x0_path = np.stack([r.x0_hat.reshape(-1)[:2] for r in traj.records[:step + 1]])
    w = posterior_weights(data, rec.x_t, rec.t, tau)[0]
    subset = np.zeros(0, dtype=np.int64) if rec.subset_idx is None else np.asarray(rec.subset_idx[0])
    return dict(points=data.flat().numpy(), weights=w, subset=subset, x_t=x_path[-1], x_path=x_path,
                x0_path=x0_path, t=rec.t, snr=rec.snr, k_t=rec.k_t, m_t=rec.m_t,
                entropy=float(rec.entropy[0]), perplexity=float(rec.perplexity[0]),
                captured=None if rec.captured_mass is None else float(rec.captured_mass[0]))


# ----------------------------------------------------------------------------- Compare


def nearest_train(samples: np.ndarray | torch.Tensor, data: Dataset) -> tuple[np.ndarray, np.ndarray]:
    """Nearest training image of each sample (B, ...) -> indices (B,) and RMS pixel distance (B,) with
    images mapped to [0, 1] (0 means an exact copy)."""
    X = data.flat()                                                          # (N, D)
    a = torch.as_tensor(np.asarray(samples, dtype=np.float32)).reshape(-1, X.shape[1])
    d2 = (a.square().sum(1, keepdim=True) - 2 * a @ X.T + X.square().sum(1)[None]).clamp_min(0)   # (B, N)
    idx = d2.argmin(1)
    return idx.numpy(), torch.sqrt(mse01(a, X[idx])).numpy()


def train_nn_distance(data: Dataset, n: int = 300, seed: int = 0) -> float:
    """Median RMS distance ([0, 1] units) from a training image to its nearest *other* training image, over
    n random ones: the scale that tells a copy (distance ~ 0) from a new image (distance ~ this)."""
    X = data.flat()
    idx = torch.from_numpy(np.random.default_rng(seed).permutation(data.N)[:min(n, data.N)])
    a = X[idx]                                                               # (n, D)
    d2 = (a.square().sum(1, keepdim=True) - 2 * a @ X.T + X.square().sum(1)[None]).clamp_min(0)
    d2[torch.arange(len(idx)), idx] = float("inf")                           # leave the image itself out
    return float(torch.sqrt(d2.min(1).values / (4 * X.shape[1])).median())


def onestep_curve(den: Denoiser, ref: Trajectory, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """SNR (S,), mean r^2 (S,) and mean MSE (S,) of den's x0_hat against the reference's at the reference's x_t
    (bench.onestep_fidelity, ordered for plotting against SNR)."""
    mses, r2s = onestep_fidelity(den, ref, seed)
    return ref.scalars("snr"), np.array(r2s), np.array(mses)


def pool_ablation(data: Dataset, ref: Trajectory, params: dict, seed: int = 0, device=None,
                  pools=("random", "nearest")) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """One-step r^2 vs SNR of GoldDiff with each pool mode, against the full-scan reference trajectory.
    Returns {pool: (snr (S,), r2 (S,))}."""
    out = {}
    for p in pools:
        den = make_denoiser("golddiff", data, device=device, **{**params, "pool": p})
        snr, r2s, _ = onestep_curve(den, ref, seed)
        out[p] = (snr, r2s)
    return out


# ----------------------------------------------------------------------------- Gaussian regime


def gaussian_path(data: Dataset, x_T: torch.Tensor, ts: list[int], device=None,
                  schedule: NoiseSchedule | None = None) -> list[np.ndarray]:
    """Closed-form PF-ODE of N(mu, Sigma) from x_T (B, D) at ts[0] to every t in ts: a list of (B, D)."""
    schedule = schedule or NoiseSchedule()
    c = get_corpus(data, device)
    aT = schedule.abar(ts[0])
    x = x_T.to(c.device, torch.float32)
    return [c.stats.teleport(x, aT, schedule.abar(t)).cpu().numpy() for t in ts]


@torch.inference_mode()
def gaussian_demo(data: Dataset, steps: int, n: int, seed: int, device=None) -> dict:
    """The same x_T (B, D) through DDIM with the Wiener denoiser and through the closed-form Gaussian PF-ODE.

    Returns ts, the DDIM states x_t and Wiener x0_hat at each t (lists of (B, D)), the closed-form states at
    the same t, the DDIM sample (last x0_hat) and the closed-form endpoint at t = 0, and the r^2 of the DDIM
    sample against the closed-form endpoint (1 when the DDIM discretization error is negligible)."""
    sch = NoiseSchedule()
    ts = sch.timesteps(steps)
    den = make_denoiser("wiener", data, sch, device=device)
    c = den.corpus
    x = torch.randn(int(n), c.D, generator=torch.Generator().manual_seed(int(seed))).to(c.device)
    closed = gaussian_path(data, x, ts + ([0] if ts[-1] != 0 else []), device=c.device, schedule=sch)
    xs, x0s = [], []
    for i, t in enumerate(ts):
        x0 = den.denoise(x, t).x0_hat
        xs.append(x.cpu().numpy())
        x0s.append(x0.cpu().numpy())
        if i + 1 < len(ts):
            x = sch.ddim_step(x, x0, t, ts[i + 1])
    end = torch.from_numpy(closed[-1])
    final = torch.from_numpy(x0s[-1])
    return dict(ts=ts, ddim_x=xs, ddim_x0=x0s, closed_x=closed[:len(ts)], ddim_sample=x0s[-1],
                closed_sample=closed[-1], r2=float(r2(final, end).mean()))


@torch.inference_mode()
def gaussian_gap(data: Dataset, ts: list[int], n: int = 16, seed: int = 0, tau: float = 1.0, device=None,
                 schedule: NoiseSchedule | None = None) -> dict[str, np.ndarray]:
    """How far the Gaussian (Wiener) x0_hat is from the exact global posterior mean, per timestep.

    x_t = sqrt(abar_t) x_i + sigma_t eps for n random training images x_i (the forward process, i.e. the
    states a trained model sees). Returns arrays over ts: t, snr, mse (Wiener vs exact, [0, 1] units),
    r2 (Wiener against exact), and the exact posterior's perplexity / N (1 = uniform, 1/N = one image)."""
    schedule = schedule or NoiseSchedule()
    c = get_corpus(data, device)
    g = torch.Generator().manual_seed(int(seed))
    idx = torch.randperm(c.N, generator=g)[:min(n, c.N)]
    x0 = c.X[idx]                                                            # (n, D)
    eps = torch.randn(x0.shape, generator=g).to(c.device)
    out = {k: [] for k in ("t", "snr", "mse", "r2", "ppl_frac")}
    for t in ts:
        a = schedule.abar(t)
        x_t = schedule.noise(x0, t, eps)
        exact = global_scan(x_t, c, a, tau)
        xe, xw = exact.mean(), c.stats.wiener(x_t, a)
        out["t"].append(t)
        out["snr"].append(schedule.snr(t))
        out["mse"].append(float(mse01(xw, xe).mean()))
        out["r2"].append(float(r2(xw, xe).mean()))
        out["ppl_frac"].append(float(torch.exp(exact.entropy()).mean()) / c.N)
    return {k: np.array(v) for k, v in out.items()}


@torch.inference_mode()
def ddim_from(den: Denoiser, x: torch.Tensor, ts: list[int], seed: int = 0) -> tuple[torch.Tensor, float]:
    """Plain DDIM (eta = 0) with `den` from state x (B, D) at ts[0] through ts; returns the last x0_hat (B, D)
    and the wall time in seconds. No diagnostics, so timings compare like with like."""
    sch, g = den.schedule, torch.Generator().manual_seed(int(seed))
    t0 = time.perf_counter()
    x0 = x
    for i, t in enumerate(ts):
        x0 = den.denoise(x, t, generator=g).x0_hat
        if i + 1 < len(ts):
            x = sch.ddim_step(x, x0, t, ts[i + 1])
    if x.device.type == "cuda":
        torch.cuda.synchronize(x.device)
    return x0, time.perf_counter() - t0


def teleport_run(data: Dataset, params: dict, steps: int, n: int, seed: int, t_skip: int, device=None,
                 method: str = "golddiff") -> dict:
    """GoldDiff from T versus: teleport x_T to t_skip in closed form, then GoldDiff on the remaining DDIM steps.

    t_skip must be one of the DDIM timesteps. Returns samples (B, D) of both, seconds of both (teleport
    included), the number of denoiser calls of each, and r^2 / MSE of the teleported samples against the
    full run's (same x_T, same seed). Both timed runs follow an untimed warm-up run so that neither pays for
    building caches."""
    sch = NoiseSchedule()
    ts = sch.timesteps(steps)
    if t_skip not in ts:
        raise ValueError(f"t_skip={t_skip} is not one of the {steps} DDIM timesteps; pick one of {ts}.")
    den = make_denoiser(method, data, sch, device=device, **params)
    c = den.corpus
    x_T = torch.randn(int(n), c.D, generator=torch.Generator().manual_seed(int(seed))).to(c.device)
    ddim_from(den, x_T, ts, seed)                  # warm-up: fills the per-t mask and proxy caches, untimed
    full, t_full = ddim_from(den, x_T, ts, seed)
    rest = ts[ts.index(t_skip):]
    t0 = time.perf_counter()
    x_skip = c.stats.teleport(x_T, sch.abar(ts[0]), sch.abar(t_skip))
    t_tele = time.perf_counter() - t0
    tele, t_rest = ddim_from(den, x_skip, rest, seed)
    return dict(ts=ts, t_skip=t_skip, full=full.cpu().numpy(), teleported=tele.cpu().numpy(),
                x_skip=x_skip.cpu().numpy(), seconds_full=t_full, seconds_teleport=t_tele + t_rest,
                calls_full=len(ts), calls_teleport=len(rest),
                r2=float(r2(tele, full).mean()), mse=float(mse01(tele, full).mean()))


# ----------------------------------------------------------------------------- How it works


def gold_schedules(N: int, k_min: int, k_max: int, schedule: NoiseSchedule | None = None,
                   every: int = 10) -> dict[str, np.ndarray]:
    """m_t and k_t over t = 0, every, 2 every, ... < T for a dataset of N images."""
    schedule = schedule or NoiseSchedule()
    ts = np.arange(0, schedule.T, every)
    sig = [schedule.sigma(int(t)) for t in ts]
    return dict(t=ts, sigma=np.array(sig), m_t=np.array([pool_size(N, k_max, s) for s in sig]),
                k_t=np.array([subset_size(k_min, k_max, s) for s in sig]))


def mask_neighbourhood(data: Dataset, t: int, threshold: float, row: int, col: int, channel: int = 0,
                       device=None, schedule: NoiseSchedule | None = None) -> dict[str, np.ndarray]:
    """The PCA-locality neighbourhood of output pixel (channel, row, col) at timestep t.

    Returns 'mask' (H, W) = column m of M_t in that channel (the pixels whose residuals enter pixel m's
    posterior), 'strength' (H, W) = |L_t[n, m] / L_t[n, n]| / max over the whole matrix, and 'size' = the
    number of pixels in the neighbourhood (all channels)."""
    schedule = schedule or NoiseSchedule()
    C, H, W = data.shape
    if not (0 <= row < H and 0 <= col < W and 0 <= channel < C):
        raise ValueError(f"Pixel ({row}, {col}) is outside the {H}x{W} image; pick a row and column inside it.")
    c = get_corpus(data, device)
    a = schedule.abar(t)
    m = channel * H * W + row * W + col
    M = c.stats.mask(t, a, threshold)                                        # (D, D)
    L = c.stats.locality_operator(a)
    diag = torch.diagonal(L).clone()
    diag[diag.abs() < 1e-12] = 1.0
    M0 = (L / diag[:, None]).abs()
    col_m = M[:, m].reshape(C, H, W).cpu().numpy()
    strength = (M0[:, m] / M0.max()).reshape(C, H, W).float().cpu().numpy()
    return dict(mask=col_m[channel], strength=strength[channel], size=int(col_m.sum()), D=data.D)


@torch.inference_mode()
def posterior_profile(data: Dataset, index: int, ts: list[int], seed: int = 0, tau: float = 1.0, device=None,
                      schedule: NoiseSchedule | None = None) -> dict[str, np.ndarray]:
    """The global posterior at x_t = sqrt(abar_t) x_index + sigma_t eps (one fixed eps) for each t in ts:
    entropy, perplexity, ESS, k_0.9, the weight the true image gets, and the sorted weights (len(ts), N)."""
    schedule = schedule or NoiseSchedule()
    c = get_corpus(data, device)
    if not 0 <= index < c.N:
        raise ValueError(f"Image index {index} is outside 0..{c.N - 1}.")
    eps = torch.randn(1, c.D, generator=torch.Generator().manual_seed(int(seed))).to(c.device)
    rows = {k: [] for k in ("t", "snr", "entropy", "perplexity", "ess", "k90", "w_true")}
    sorted_w = []
    for t in ts:
        x_t = schedule.noise(c.X[index:index + 1], t, eps)
        w = global_posterior(x_t, c, schedule.abar(t), tau)                 # (1, N)
        rows["t"].append(t)
        rows["snr"].append(schedule.snr(t))
        rows["entropy"].append(float(entropy(w)[0]))
        rows["perplexity"].append(float(perplexity(w)[0]))
        rows["ess"].append(float(ess(w)[0]))
        rows["k90"].append(int(k_mass(w, 0.9)[0]))
        rows["w_true"].append(float(w[0, index]))
        sorted_w.append(w[0].sort(descending=True).values.cpu().numpy())
    out = {k: np.array(v) for k, v in rows.items()}
    out["sorted_w"] = np.stack(sorted_w)
    out["N"] = c.N
    return out


def log_n(N: int) -> float:
    """Entropy of the uniform posterior over N images (nats): the ceiling of every entropy curve."""
    return math.log(N)
