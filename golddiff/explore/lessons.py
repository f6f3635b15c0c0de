"""Computations behind the teaching pages: 2-D toy, Compare, How it works.
(The Gaussian regime is in gaussian.py.)

Pure torch / numpy on top of the library; no streamlit. Every function returns plain arrays or dicts
so the pages only lay them out. Shapes: images flattened to D; B samples; N training images.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..core.logits import global_logits, mask_operator, pixel_logits, sq_dists
from ..core.posterior import StreamingSoftmax
from ..core.schedule import NoiseSchedule, pool_size, subset_size
from ..core.summaries import entropy, ess, k_mass, mse01, perplexity
from ..data.datasets import Dataset
from ..denoise.corpus import Corpus, corpus_logits, get_corpus, global_posterior
from ..denoise.methods import Denoiser, make_denoiser
from ..denoise.params import DenoiserParams
from ..run.bench import onestep_fidelity
from ..run.sampler import Trajectory, sample

# ----------------------------------------------------------------------------- 2-D toy (Figure 1)


def toy_params(
    data: Dataset, k_min: int | None = None, k_max: int | None = None, pool: str = "random"
) -> dict:
    """GoldDiff parameters for a 2-D toy: k_min / k_max scaled to N as in the paper (N/20, N/10),
    proxy = the point itself (low_res 1), and the all-ones mask (threshold 0): for D = 2 locality
    is trivial, so GoldDiff is the exact global posterior restricted to the golden subset."""
    d = DenoiserParams.dataset_defaults(data.N, data.shape)
    return dict(
        k_min=int(k_min or d["k_min"]),
        k_max=int(k_max or d["k_max"]),
        low_res=1,
        mask_threshold=0.0,
        pool=pool,
    )


def toy_run(
    data: Dataset, x_T: tuple[float, float], steps: int = 50, seed: int = 0, **params
) -> Trajectory:
    """GoldDiff from one start point x_T = (x, y) on
    a 2-D toy set; one record per DDIM step (CPU)."""
    if data.D != 2:
        raise ValueError(f"'{data.name}' is not a 2-D toy set; pick moons or gmm.")
    den = make_denoiser("golddiff", data, device="cpu", **toy_params(data, **params))
    x = torch.tensor([list(map(float, x_T))], dtype=torch.float32)  # (1, 2)
    return sample(den, steps=steps, n=1, seed=seed, x_T=x)


def posterior_weights(
    data: Dataset,
    x_t: np.ndarray | torch.Tensor,
    t: int,
    tau: float = 1.0,
    schedule: NoiseSchedule | None = None,
    device="cpu",
) -> np.ndarray:
    """(B, N) exact global posterior weights w_i(x_t) at timestep t. x_t: (B, D) or (B, C, H, W)."""
    schedule = schedule or NoiseSchedule()
    corpus = get_corpus(data, device)
    x = torch.as_tensor(np.asarray(x_t, dtype=np.float32)).reshape(-1, corpus.D).to(corpus.device)
    return global_posterior(x, corpus, schedule.abar(t), tau).cpu().numpy()


def toy_frame(data: Dataset, traj: Trajectory, step: int, tau: float = 1.0) -> dict:
    """Everything the toy plot shows at one step: training points (N, 2), their weights (N,), the
    golden subset indices (k_t,), x_t (2,), the x_t path and the x0_hat path up to this step
    ((step+1, 2) each).
    """
    if not 0 <= step < len(traj.records):
        raise ValueError(f"Step {step} is outside 0..{len(traj.records) - 1}.")
    rec = traj.records[step]
    x_path = np.stack([r.x_t.reshape(-1)[:2] for r in traj.records[: step + 1]])
    x0_path = np.stack([r.x0_hat.reshape(-1)[:2] for r in traj.records[: step + 1]])
    w = posterior_weights(data, rec.x_t, rec.t, tau)[0]
    subset = (
        np.zeros(0, dtype=np.int64) if rec.subset_idx is None else np.asarray(rec.subset_idx[0])
    )
    return dict(
        points=data.flat().numpy(),
        weights=w,
        subset=subset,
        x_t=x_path[-1],
        x_path=x_path,
        x0_path=x0_path,
        t=rec.t,
        snr=rec.snr,
        k_t=rec.k_t,
        m_t=rec.m_t,
        entropy=float(rec.entropy[0]),
        perplexity=float(rec.perplexity[0]),
        captured=None if rec.captured_mass is None else float(rec.captured_mass[0]),
    )


# ----------------------------------------------------------------------------- Compare


def nearest_train(
    samples: np.ndarray | torch.Tensor, data: Dataset
) -> tuple[np.ndarray, np.ndarray]:
    """Nearest training image of each sample (B, ...) -> indices (B,) and RMS pixel distance (B,)
    with images mapped to [0, 1] (0 means an exact copy)."""
    X = data.flat()  # (N, D)
    a = torch.as_tensor(np.asarray(samples, dtype=np.float32)).reshape(-1, X.shape[1])
    idx = sq_dists(a, X, X.square().sum(1)).argmin(1)  # (B,)
    return idx.numpy(), torch.sqrt(mse01(a, X[idx])).numpy()


def train_nn_distance(data: Dataset, n: int = 300, seed: int = 0) -> float:
    """Median RMS distance ([0, 1] units) from a training image to its nearest *other* training
    image, over n random ones: the scale that tells a copy (distance ~ 0) from a new image
    (distance ~ this)."""
    X = data.flat()
    idx = torch.from_numpy(np.random.default_rng(seed).permutation(data.N)[: min(n, data.N)])
    d2 = sq_dists(X[idx], X, X.square().sum(1))  # (n, N)
    d2[torch.arange(len(idx)), idx] = float("inf")  # leave the image itself out
    return float(torch.sqrt(d2.min(1).values / (4 * X.shape[1])).median())


def onestep_curve(
    den: Denoiser, ref: Trajectory, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """SNR (S,), mean r^2 (S,) and mean MSE (S,) of den's x0_hat against the reference's at the
    reference's x_t (bench.onestep_fidelity, ordered for plotting against SNR)."""
    mses, r2s = onestep_fidelity(den, ref, seed)
    return ref.scalars("snr"), np.array(r2s), np.array(mses)


def pool_ablation(
    data: Dataset,
    ref: Trajectory,
    params: dict,
    seed: int = 0,
    device=None,
    pools=("random", "nearest"),
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """One-step r^2 vs SNR of GoldDiff with each pool mode, against the full-scan reference
    trajectory. Returns {pool: (snr (S,), r2 (S,))}."""
    out = {}
    for p in pools:
        den = make_denoiser("golddiff", data, device=device, **{**params, "pool": p})
        snr, r2s, _ = onestep_curve(den, ref, seed)
        out[p] = (snr, r2s)
    return out


# ----------------------------------------------------------------------------- How it works


def gold_schedules(
    N: int, k_min: int, k_max: int, schedule: NoiseSchedule | None = None, every: int = 10
) -> dict[str, np.ndarray]:
    """m_t and k_t over t = 0, every, 2 every, ... < T for a dataset of N images."""
    schedule = schedule or NoiseSchedule()
    ts = np.arange(0, schedule.T, every)
    sig = [schedule.sigma(int(t)) for t in ts]
    return dict(
        t=ts,
        sigma=np.array(sig),
        m_t=np.array([pool_size(N, k_max, s) for s in sig]),
        k_t=np.array([subset_size(k_min, k_max, s) for s in sig]),
    )


def mask_neighbourhood(
    data: Dataset,
    t: int,
    threshold: float,
    row: int,
    col: int,
    channel: int = 0,
    device=None,
    schedule: NoiseSchedule | None = None,
    rule: str = "stable",
) -> dict[str, np.ndarray]:
    """The PCA-locality neighbourhood of output pixel (channel, row, col) at timestep t: the very
    mask column the denoisers use (DataStats.mask with this threshold and rule).

    Returns 'mask' (H, W) = column m of M_t in that channel (the pixels whose residuals enter
    pixel m's posterior), 'strength' (H, W) = |M0[n, m]| / max |M0| (what the threshold cuts),
    and 'size' = the number of pixels in the neighbourhood (all channels)."""
    schedule = schedule or NoiseSchedule()
    C, H, W = data.shape
    if not (0 <= row < H and 0 <= col < W and 0 <= channel < C):
        raise ValueError(
            f"Pixel ({row}, {col}) is outside the {H}x{W} image; pick a row and column inside it."
        )
    stats = get_corpus(data, device).stats
    abar = schedule.abar(t)
    m = channel * H * W + row * W + col
    col_m = stats.mask(t, abar, threshold, rule)[:, m].reshape(C, H, W).cpu().numpy()
    strength = stats.locality_strength(abar, rule)[:, m].reshape(C, H, W).float().cpu().numpy()
    return dict(mask=col_m[channel], strength=strength[channel], size=int(col_m.sum()), D=data.D)


@torch.inference_mode()
def posterior_profile(
    data: Dataset,
    index: int,
    ts: list[int],
    seed: int = 0,
    tau: float = 1.0,
    device=None,
    schedule: NoiseSchedule | None = None,
) -> dict[str, np.ndarray]:
    """The global posterior at x_t = sqrt(abar_t) x_index + sigma_t eps (one fixed eps) for each t
    in ts:
    entropy, perplexity, ESS, k_0.99, the weight the true image gets, and the sorted weights
    (len(ts), N).
    """
    schedule = schedule or NoiseSchedule()
    corpus = get_corpus(data, device)
    if not 0 <= index < corpus.N:
        raise ValueError(f"Image index {index} is outside 0..{corpus.N - 1}.")
    eps = torch.randn(1, corpus.D, generator=torch.Generator().manual_seed(int(seed))).to(
        corpus.device
    )
    rows = {k: [] for k in ("t", "snr", "entropy", "perplexity", "ess", "k99", "w_true")}
    sorted_w = []
    for t in ts:
        x_t = schedule.noise(corpus.rows(torch.tensor([index])), t, eps)
        w = global_posterior(x_t, corpus, schedule.abar(t), tau)  # (1, N)
        rows["t"].append(t)
        rows["snr"].append(schedule.snr(t))
        rows["entropy"].append(float(entropy(w)[0]))
        rows["perplexity"].append(float(perplexity(w)[0]))
        rows["ess"].append(float(ess(w)[0]))
        rows["k99"].append(int(k_mass(w, 0.99)[0]))
        rows["w_true"].append(float(w[0, index]))
        sorted_w.append(w[0].sort(descending=True).values.cpu().numpy())
    out = {k: np.array(v) for k, v in rows.items()}
    out["sorted_w"] = np.stack(sorted_w)
    out["N"] = corpus.N
    return out


# ----------------------------------------------------------------------------- Explorer: spread


@dataclass
class StepPosterior:
    """What the denoiser weighed at one step for one sample: x_t (1, D), the mask M (D, D) (None:
    the one global posterior of optimal), tau, and its rows: subset (k,) dataset indices (None:
    all N) with their log weights offsets (k,) (None: plain)."""

    corpus: Corpus
    x: torch.Tensor
    M: torch.Tensor | None
    abar: float
    tau: float
    subset: torch.Tensor | None
    offsets: torch.Tensor | None

    def sums(self, moments: int) -> StreamingSoftmax:
        """The softmax sums of this posterior (`Corpus.posterior`, the one kernel)."""
        subset = None if self.subset is None else [self.subset]
        offsets = None if self.offsets is None else [self.offsets]
        return self.corpus.posterior(
            self.x, self.M, self.abar, self.tau, subset=subset, offsets=offsets, moments=moments
        )

    def rows(self, size: int = 4096):
        """(dataset indices (c,), rows (c, D), offsets (c,) or None), in chunks, over what it
        weighs."""
        if self.subset is None:
            for i, Xc in self.corpus.chunks(size):
                yield torch.arange(i, i + Xc.shape[0], device=Xc.device), Xc, None
            return
        for i in range(0, self.subset.shape[0], size):
            idx = self.subset[i : i + size]
            off = None if self.offsets is None else self.offsets[i : i + size]
            yield idx, self.corpus.rows(idx), off


def step_posterior(data: Dataset, traj: Trajectory, step: int, sample: int, device=None):
    """The StepPosterior of a record, read from the run's own parameters; None for wiener (no
    posterior over images) and for a full scan of an out-of-core corpus (it would re-read the
    corpus for every view)."""
    rec = traj.records[step]
    if rec.method == "wiener":
        return None
    corpus = get_corpus(data, device)
    if corpus.X is None and (rec.method == "optimal" or rec.subset_idx is None):
        return None
    p = DenoiserParams.from_mapping(traj.meta.get("params", {})).resolve(corpus.N, corpus.shape)
    x = torch.as_tensor(rec.x_t[sample].reshape(1, -1), dtype=torch.float32, device=corpus.device)
    M = None
    if rec.method != "optimal":
        M = corpus.stats.mask(rec.t, rec.abar, p.mask_threshold, p.mask_rule)
    subset = offsets = None
    if rec.method != "optimal" and rec.subset_idx is not None:
        subset = torch.as_tensor(rec.subset_idx[sample], dtype=torch.long, device=corpus.device)
        if rec.subset_offset is not None:  # adaptive: its padding (offset -inf) dropped
            off = torch.as_tensor(rec.subset_offset[sample], device=corpus.device)
            keep = torch.isfinite(off)
            subset, offsets = subset[keep], off[keep].float()
    return StepPosterior(corpus, x, M, rec.abar, p.temperature, subset, offsets)


@torch.inference_mode()
def pixel_spread(data: Dataset, traj: Trajectory, step: int, sample: int, device=None):
    """Per-pixel posterior standard deviation of one sample at one step, (C, H, W):
    std[m] = sqrt(sum_i w_i(m) (x_i[m] - x0_hat[m])^2), the spread of the candidates a pixel's
    posterior still weighs. It is 0 where they agree, however many there are (ties), and large
    only where they disagree. The weights are the denoiser's own (`Corpus.posterior`): each
    pixel's posterior over S_t (pca: all N; the adaptive subset with its importance offsets
    log C_i - log q_i), optimal the one global posterior; None for wiener (no posterior over
    images)."""
    post = step_posterior(data, traj, step, sample, device)
    return None if post is None else _spread(post, post.sums(moments=2))


def _spread(post: StepPosterior, acc: StreamingSoftmax) -> np.ndarray:
    """(C, H, W) per-pixel standard deviation from the second-moment sums."""
    var = acc.second_moment()[0] - acc.mean()[0].square()  # (D,)
    return torch.sqrt(torch.clamp(var, min=0.0)).cpu().numpy().reshape(post.corpus.shape)


@torch.inference_mode()
def pixel_maps(data: Dataset, traj: Trajectory, step: int, sample: int, device=None):
    """(pixel_spread, pixel_sources) of one step from one pass of the kernel (the sources' argmax
    pass aside); (None, None) for wiener."""
    post = step_posterior(data, traj, step, sample, device)
    if post is None:
        return None, None
    acc = post.sums(moments=2)
    return _spread(post, acc), _sources(post, acc)


def _global_log_weights(data: Dataset, traj: Trajectory, step: int, sample: int, device=None):
    """(N,) log of the exact global posterior weights at the record's x_t (GoldDiff's w_i, the
    log-softmax of `corpus_logits` at the run's temperature)."""
    rec = traj.records[step]
    corpus = get_corpus(data, device)
    p = DenoiserParams.from_mapping(traj.meta.get("params", {})).resolve(corpus.N, corpus.shape)
    x = torch.as_tensor(rec.x_t[sample].reshape(1, -1), dtype=torch.float32, device=corpus.device)
    return torch.log_softmax(corpus_logits(x, corpus, rec.abar, p.temperature)[0], 0)


@torch.inference_mode()
def global_weights(
    data: Dataset, traj: Trajectory, step: int, sample: int, idx, device=None
) -> np.ndarray:
    """(k,) exact global posterior weights w_i at one step of one sample for dataset indices idx."""
    logw = _global_log_weights(data, traj, step, sample, device)
    return torch.exp(logw[torch.as_tensor(np.asarray(idx), device=logw.device)]).cpu().numpy()


@torch.inference_mode()
def subset_by_weight(
    data: Dataset, traj: Trajectory, step: int, sample: int, device=None
) -> tuple[np.ndarray, np.ndarray] | None:
    """The golden subset S_t of one sample ranked by exact global posterior weight: dataset
    indices (k,) and their weights w_i (k,) over all N, ranked by the log weights so images of
    weight ~0 keep their order. None when the step had no subset."""
    rec = traj.records[step]
    if rec.subset_idx is None:
        return None
    logw = _global_log_weights(data, traj, step, sample, device)
    held = np.asarray(rec.subset_idx[sample])
    if rec.subset_offset is not None:  # adaptive: its padding (offset -inf) is not in S_t
        held = held[np.isfinite(np.asarray(rec.subset_offset[sample]))]
    idx = torch.as_tensor(np.unique(held), device=logw.device)
    order = torch.argsort(logw[idx], descending=True, stable=True)
    return idx[order].cpu().numpy(), torch.exp(logw[idx[order]]).cpu().numpy()


# ----------------------------------------------------------------------------- Explorer: sources

MAJORITY = 0.5  # a pixel's source holds more than this share of the pixel's local weight


@dataclass
class PixelSources:
    """Where each pixel of x0_hat comes from at one step (`pixel_sources`)."""

    source: np.ndarray  # (C, H, W) int: dataset index of the image with the largest local weight
    top_w: np.ndarray  # (C, H, W): that weight, w_source(m) in (0, 1]
    images: np.ndarray  # (n,) int: the images that hold a majority of some pixel, most pixels first
    share: np.ndarray  # (n,): the share of all pixels each of them holds a majority of

    @property
    def held(self) -> np.ndarray:
        """(C, H, W) bool: pixels whose source holds a majority (> MAJORITY) of their weight."""
        return self.top_w > MAJORITY

    @property
    def shared(self) -> float:
        """The share of pixels no single image holds a majority of (many images tie there)."""
        return float(1.0 - self.held.mean())


def _best_logits(post: StepPosterior) -> tuple[torch.Tensor, torch.Tensor]:
    """Per pixel the largest logit (P,) and the dataset index holding it (P,), P = D (or 1 for the
    global posterior): an argmax over the same logits (`pixel_logits` / `global_logits`, offsets
    added) that `Corpus.posterior` sums, chunk by chunk."""
    sqrt_abar = math.sqrt(post.abar)
    op = None if post.M is None else mask_operator(post.M, post.abar, post.tau)
    best = idx_best = None
    for idx, Xc, off in post.rows():
        if op is None:
            L = global_logits(post.x, Xc, Xc.square().sum(1), post.abar, post.tau)[0]  # (c,)
            L = L[None, :]  # (1, c)
        else:
            L = pixel_logits(post.x[0], Xc.T.contiguous(), sqrt_abar, op)  # (D, c)
        if off is not None:
            L = L + off[None, :]
        v, j = L.max(1)  # (P,)
        if best is None:
            best, idx_best = v, idx[j]
        else:
            better = v > best
            best = torch.where(better, v, best)
            idx_best = torch.where(better, idx[j], idx_best)
    return best, idx_best


@torch.inference_mode()
def pixel_sources(
    data: Dataset, traj: Trajectory, step: int, sample: int, device=None
) -> PixelSources | None:
    """Which training image each pixel of x0_hat comes from at one step of one sample.

    Pixel m's source is the image with the largest local weight w_i(m) in the denoiser's own
    per-pixel posterior (PCA locality over S_t, Lukoianov et al. 2025 / Shang et al. 2026; optimal:
    the one global posterior, so every pixel has the same source); w_source(m) = exp(L_max(m) -
    logsumexp_i L_i(m)), normalised by the kernel's sums (`Corpus.posterior`). An image "holds" a
    pixel when w_source(m) > MAJORITY. None for wiener (no posterior over images)."""
    post = step_posterior(data, traj, step, sample, device)
    return None if post is None else _sources(post, post.sums(moments=0))


def _sources(post: StepPosterior, acc: StreamingSoftmax) -> PixelSources:
    """PixelSources from the kernel's sums (their log normaliser) and the argmax pass."""
    best, src = _best_logits(post)  # (P,)
    top_w = torch.exp(torch.clamp(best - acc.lse()[0], max=0.0))  # (P,)
    shape = post.corpus.shape
    D = post.corpus.D
    if top_w.shape[0] != D:  # global posterior: one source for every pixel
        top_w, src = top_w.expand(D), src.expand(D)
    held = top_w > MAJORITY
    images, counts = torch.unique(src[held], return_counts=True)
    order = torch.argsort(counts, descending=True, stable=True)
    return PixelSources(
        source=src.cpu().numpy().reshape(shape),
        top_w=top_w.float().cpu().numpy().reshape(shape),
        images=images[order].cpu().numpy(),
        share=(counts[order].double() / D).cpu().numpy(),
    )
