"""The per-step record: every diagnostic of one sampling step, computed once (`make_record`), and
the labels the CLI and the app give them (`LABELS`).

Global posterior at x_t over all N (exact): w_i = softmax_i(-||x_t - sqrt(abar) x_i||^2 / (2
(1-abar) tau)). entropy H (nats), perplexity exp(H), ESS = 1 / sum w^2, k_0.9 / k_0.99 = fewest
images holding 90% / 99%. Golden subset S_t: captured mass W_S = sum_{i in S_t} w_i, recall of
the global top-k_t. The summaries themselves are defined in core.summaries.

Three modes (`DIAGNOSTICS`): exact (the sums over all N, `CorpusPosterior`), estimated (the same
summaries from the retrieved images plus a weighted uniform sample of the rest, each with its
standard error, `run.estimate`) and none (no posterior diagnostics at all). auto picks exact up to
EXACT_MAX_N images and estimated above, for the methods that retrieve images.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np
import torch

from ..core.posterior import StreamingSoftmax
from ..core.comm import global_topk, merged_k_mass
from ..core.summaries import entropy, mse01, r2
from ..data.memory import check_memory
from ..denoise.corpus import Corpus, corpus_logits
from ..denoise.methods import DenoiseOutput
from .estimate import TAIL, estimated_summaries

DIAGNOSTICS = ("auto", "exact", "estimated", "none")
EXACT_MAX_N = 300_000  # auto: exact diagnostics up to this many images, estimated above
RETRIEVING = ("golddiff", "hybrid")  # methods with a golden subset to head the estimate

# What the app and the CLI say about the diagnostics they show, per mode.
DIAGNOSTICS_LABELS = {
    "exact": "Posterior diagnostics: exact, over all N training images.",
    "estimated": (
        "Posterior diagnostics: estimated from the retrieved images plus a uniform sample of "
        "the rest (± one standard error)."
    ),
    "none": "Posterior diagnostics: off (not computed for this run).",
}

# Display names, shared by the CLI table and the app.
LABELS = {
    "entropy": "posterior entropy H (nats)",
    "perplexity": "perplexity exp(H)",
    "ess": "ESS 1/sum w^2",
    "k90": "k_0.9",
    "k99": "k_0.99",
    "captured_mass": "captured mass W_S",
    "recall": "recall of global top-k_t",
    "pixel_entropy_mean": "mean per-pixel entropy (nats)",
    "pixel_perplexity_mean": "mean per-pixel perplexity",
    "onestep_r2": "one-step r^2 vs full-scan PCA",
    "onestep_mse": "one-step MSE vs full-scan PCA",
    "search_recall": "recall of the approximate proxy search",
    "k_b": "k_t per sample (adaptive, local)",
    "m_b": "m_t per sample (local)",
    "c_b": "images carried in from the previous step per sample (local)",
    "error_est": "estimated one-step 1 - r^2 (adaptive)",
    "tail": "uniform tail images of the estimate",
}


def resolve_diagnostics(mode: str | None, method: str, N: int, sharded: bool = False) -> str:
    """The mode a run uses: exact, estimated or none. auto (or None): estimated for a method that
    retrieves images (RETRIEVING) on more than EXACT_MAX_N images of an unsharded corpus, exact
    otherwise (a full-scan method pays a pass over all N in its own step anyway)."""
    mode = "auto" if mode is None else mode
    if mode not in DIAGNOSTICS:
        raise ValueError(f"diagnostics='{mode}' is not one of {', '.join(DIAGNOSTICS)}.")
    if mode == "auto":
        big = N > EXACT_MAX_N and method in RETRIEVING and not sharded
        return "estimated" if big else "exact"
    if mode == "estimated" and sharded:
        raise ValueError(
            "diagnostics='estimated' does not run under --shard corpus; use 'exact' or 'none'."
        )
    return mode


def diagnostics_label(traj_or_mode) -> str:
    """The one-line caption of a run's diagnostics (a Trajectory, a StepRecord or a mode name)."""
    mode = traj_or_mode
    if hasattr(mode, "meta"):
        mode = mode.meta.get("diagnostics", "exact")
    elif hasattr(mode, "diagnostics"):
        mode = mode.diagnostics or "exact"
    return DIAGNOSTICS_LABELS[mode]


@dataclass
class StepRecord:
    step: int  # 0-based index of the step
    t: int  # timestep
    abar: float  # abar_t
    snr: float  # SNR_t = abar / (1 - abar)
    sigma: float  # sqrt(1 - abar_t)
    method: str  # method that produced x0_hat at this step
    x_t: np.ndarray  # (B, C, H, W) the noisy state fed to the denoiser
    x0_hat: np.ndarray  # (B, C, H, W) its x0 estimate
    time_screen: float  # seconds: coarse pool + proxy screening
    time_select: float  # seconds: full-resolution selection of S_t
    time_aggregate: float  # seconds: the posterior aggregation
    time_step: float  # seconds: the whole denoiser call
    # the global posterior's summaries: None under diagnostics="none"
    entropy: np.ndarray | None  # (B,) global posterior entropy (nats)
    perplexity: np.ndarray | None  # (B,)
    ess: np.ndarray | None  # (B,)
    k90: np.ndarray | None  # (B,) int
    k99: np.ndarray | None  # (B,) int
    top_idx: np.ndarray | None  # (B, n) global posterior top-n indices
    top_w: np.ndarray | None  # (B, n) and their weights
    N: int  # dataset size
    m_t: int | None = None  # coarse pool size (subset methods)
    k_t: int | None = None  # golden subset size
    subset_idx: np.ndarray | None = None  # (B, k_t) S_t
    captured_mass: np.ndarray | None = None  # (B,) W_S under the global posterior
    recall: np.ndarray | None = None  # (B,) recall of the global top-k_t
    pixel_entropy: np.ndarray | None = None  # (B, C, H, W) per-pixel entropy map H(m)
    pixel_entropy_mean: np.ndarray | None = None  # (B,) mean of H(m)
    pixel_perplexity_mean: np.ndarray | None = None  # (B,) mean of exp(H(m))
    ranked_idx: np.ndarray | None = None  # (B, n) subset images ranked by mean per-pixel weight
    ranked_w: np.ndarray | None = None  # (B, n) their mean per-pixel weights
    ranked_global_w: np.ndarray | None = None  # (B, n) their exact global posterior weights
    ref_x0: np.ndarray | None = None  # (B, C, H, W) exact check: full-scan PCA x0_hat at x_t
    onestep_mse: np.ndarray | None = None  # (B,) method vs full-scan PCA at the same x_t
    onestep_r2: np.ndarray | None = None  # (B,)
    pixel_captured_mass: np.ndarray | None = None  # (B, C, H, W) per-pixel PCA mass held by S_t
    pool_nearest: np.ndarray | None = (
        None  # (B,) bool: the sample screened all N (nearest) this step
    )
    search_recall: np.ndarray | None = (
        None  # (B,) share of the exact proxy top-k_max that an approximate
    )
    # backend (faiss-ivf) found; None where the search was exact
    k_b: np.ndarray | None = None  # (B,) adaptive subset: distinct images aggregated (its k_t)
    m_b: np.ndarray | None = None  # (B,) local subset: candidates screened per sample (its m_t)
    c_b: np.ndarray | None = None  # (B,) local subset: images only the last step's carry brought
    # (B, k) adaptive subset: log C_i - log q_i of each subset image (-inf on the padding)
    subset_offset: np.ndarray | None = None
    error_est: np.ndarray | None = None  # (B,) adaptive subset: estimated one-step 1 - r^2
    cpu_step: float | None = None  # seconds of process CPU time of the denoiser call (all threads;
    # unlike time_step, not inflated when other processes share the cores)
    diagnostics: str | None = None  # exact, estimated or none (None: a record from before modes)
    tail: np.ndarray | None = None  # (B,) estimated: uniform tail images behind the estimate
    # estimated: the standard error of each summary, (B,) each
    entropy_se: np.ndarray | None = None
    perplexity_se: np.ndarray | None = None
    ess_se: np.ndarray | None = None
    k90_se: np.ndarray | None = None
    k99_se: np.ndarray | None = None
    captured_mass_se: np.ndarray | None = None
    recall_se: np.ndarray | None = None

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _np(x: torch.Tensor | None):
    if x is None:
        return None
    return x.detach().float().cpu().numpy() if x.is_floating_point() else x.cpu().numpy()


def check_diagnostics_memory(B: int, corpus: Corpus, device) -> None:
    """Refuse (ValueError) when the per-step diagnostics would not fit: logits, weights and the
    temporaries of entropy / ESS / sort (values + int64 indices), about 8 (B, N) floats."""
    check_memory(
        8 * B * corpus.N * 4,
        f"the ({B}, {corpus.N}) global posterior of the diagnostics",
        "lower --n or use a smaller dataset",
        device,
    )


class CorpusPosterior:
    """The exact global posterior over all N rows of the dataset, for `make_record`.

    Every sum over images is this corpus's partial sum merged by `corpus.comm` (`core.comm`): the
    identity in one process, the all-reduce over a corpus split across ranks."""

    def __init__(self, corpus: Corpus):
        self.corpus = corpus

    @property
    def N(self) -> int:
        return self.corpus.total

    def weights(self, x_t: torch.Tensor, abar: float, tau: float) -> tuple[torch.Tensor, ...]:
        """The global logits (B, N_r) of this corpus's rows and their exact weights (B, N_r),
        normalised over all N: w = exp(L - max) / sum exp(L - max), max and sum over every rank."""
        comm = self.corpus.comm
        logits = corpus_logits(x_t, self.corpus, abar, tau)  # (B, N_r), chunked out of core
        mx = comm.all_reduce(logits.amax(1), "max")  # (B,)
        e = torch.exp(logits - mx[:, None])
        return logits, e / comm.all_reduce(e.sum(1))[:, None]

    def summaries(
        self,
        x_t: torch.Tensor,
        abar: float,
        tau: float,
        top_n: int,
        subset: torch.Tensor | None,
        ranked: torch.Tensor | None = None,
    ) -> dict:
        """Entropy, perplexity, ESS, k_0.9, k_0.99 (each (B,)), the top-n indices and weights
        (B, n) and, with a subset (B, k), its captured mass and the recall of the global top-k;
        with `ranked` (B, n) dataset indices, their global weights as ranked_global_w."""
        c, B = self.corpus, x_t.shape[0]
        comm, comm.phase = c.comm, "diagnostics"
        check_diagnostics_memory(B, c, x_t.device)
        logits, w = self.weights(x_t, abar, tau)
        H = comm.all_reduce(entropy(w))  # (B,), each rank's share of -sum w log w
        top_w, top_idx = global_topk(comm, w, c.offset, c.total, min(top_n, c.total))
        k90, k99 = merged_k_mass(comm, w, (0.9, 0.99), c.total).unbind(1)
        out = dict(
            entropy=H,
            perplexity=torch.exp(H),
            ess=1.0 / comm.all_reduce(w.square().sum(1)),
            k90=k90,
            k99=k99,
            top_idx=top_idx,
            top_w=top_w,
        )
        if subset is not None:
            held = torch.zeros_like(w, dtype=torch.bool)  # (B, N_r): S_t's rows on this corpus
            for b, (_, rows) in enumerate(zip(*c._local_rows(subset))):
                held[b, rows] = True
            top = global_topk(comm, logits, c.offset, c.total, subset.shape[1])[1]  # (B, k)
            in_s = torch.zeros(B, c.total, dtype=torch.bool, device=w.device)
            in_s.scatter_(1, subset, True)
            out.update(
                captured_mass=comm.all_reduce((w * held).sum(1)),
                recall=in_s.gather(1, top).float().mean(1),
            )
        if ranked is not None:  # each rank fills the weights of its own rows; the sum merges them
            rw = torch.zeros(ranked.shape, dtype=w.dtype, device=w.device)
            for b, (pos, rows) in enumerate(zip(*c._local_rows(ranked))):
                rw[b, pos] = w[b, rows]
            out["ranked_global_w"] = comm.all_reduce(rw)
        return out

    def reference(
        self,
        x_t: torch.Tensor,
        M: torch.Tensor,
        abar: float,
        tau: float,
        subset: torch.Tensor | None,
    ) -> StreamingSoftmax:
        """The full-scan PCA-locality posterior at x_t (B, D), keeping the subset's (B, k) mass."""
        self.corpus.comm.phase = "diagnostics"
        return self.corpus.posterior(x_t, M, abar, tau, held=subset)


def check_finite(rec: StepRecord) -> StepRecord:
    """Refuse (ValueError) a record holding a NaN or infinite value, so that no run saves one
    (subset_offset may hold -inf: it marks the padding of an adaptive subset)."""
    for name, v in rec.to_dict().items():
        if not isinstance(v, np.ndarray) or v.dtype.kind != "f":
            continue
        ok = np.isfinite(v) | (np.isneginf(v) if name == "subset_offset" else False)
        if not ok.all():
            raise ValueError(
                f"The {LABELS.get(name, name)} at t = {rec.t} is NaN or infinite, so the run "
                "was refused rather than saved; change the parameters that led there."
            )
    return rec


def make_record(
    step: int,
    t: int,
    x_t: torch.Tensor,
    out: DenoiseOutput,
    corpus: Corpus,
    abar: float,
    tau: float = 1.0,
    top_n: int = 32,
    reference_mask: torch.Tensor | None = None,
    time_step: float = 0.0,
    cpu_step: float | None = None,
    diagnostics: str = "exact",
    rngs: list[np.random.Generator] | None = None,
    tail: int = TAIL,
    near: torch.Tensor | None = None,
) -> StepRecord:
    """Compute every diagnostic of one step. x_t, out.x0_hat: (B, D).

    diagnostics: exact (over all N), estimated (`run.estimate`: the golden subset weighed exactly
    and the nearest images `near` (B, h) weighed exactly, plus `tail` images drawn uniformly from
    the rest with rngs, one numpy generator per sample; each summary with its standard error as
    name_se) or none (the summaries stay None).

    reference_mask: when given (the (D, D) PCA-locality mask), run the exact check: a full-scan
    PCA-locality posterior at the same x_t, the method's one-step MSE / r^2 against it, and the
    per-pixel mass of S_t. The diagnostics over all N come from CorpusPosterior(corpus), which
    merges a sharded corpus's ranks itself.
    """
    shape = (x_t.shape[0],) + corpus.shape
    posterior = CorpusPosterior(corpus)
    ranked = ranked_w = None  # the subset's images ranked by mean per-pixel weight, (B, n)
    if out.subset is not None and out.subset_weight is not None:
        r = out.subset_weight.topk(min(top_n, out.subset.shape[1]), dim=1)
        ranked, ranked_w = out.subset.gather(1, r.indices), r.values
    post = dict.fromkeys(("entropy", "perplexity", "ess", "k90", "k99", "top_idx", "top_w"))
    if diagnostics == "exact":
        post.update(posterior.summaries(x_t, abar, tau, top_n, out.subset, ranked))
    elif diagnostics == "estimated":
        parts = [p for p in (out.subset, near) if p is not None]
        heads = [torch.cat([p[b].reshape(-1) for p in parts]) if parts else torch.zeros(0)
                 for b in range(x_t.shape[0])]
        if rngs is None:
            raise ValueError("diagnostics='estimated' needs one random generator per sample.")
        post.update(estimated_summaries(corpus, x_t, abar, tau, top_n, heads, out.subset, ranked,
                                        rngs, tail, with_recall=out.k_b is None))
    elif diagnostics != "none":
        raise ValueError(f"diagnostics='{diagnostics}' is not one of exact, estimated, none.")
    post = {k: _np(v) for k, v in post.items()}
    rec = StepRecord(
        step=step,
        t=t,
        abar=abar,
        snr=abar / (1 - abar),
        sigma=math.sqrt(1 - abar),
        method=out.method,
        x_t=_np(x_t).reshape(shape),
        x0_hat=_np(out.x0_hat).reshape(shape),
        time_screen=out.timings.get("screen", 0.0),
        time_select=out.timings.get("select", 0.0),
        time_aggregate=out.timings.get("aggregate", 0.0),
        time_step=time_step,
        cpu_step=cpu_step,
        N=posterior.N,
        m_t=out.m_t,
        k_t=out.k_t,
        search_recall=_np(getattr(out, "search_recall", None)),
        diagnostics=diagnostics,
        **post,
    )
    if out.pool_nearest is not None:
        rec.pool_nearest = _np(out.pool_nearest)
    if out.k_b is not None:
        rec.k_b, rec.error_est = _np(out.k_b), _np(out.error_est)
    if out.m_b is not None:
        rec.m_b = _np(out.m_b)
    if out.c_b is not None:
        rec.c_b = _np(out.c_b)
    if out.subset_offset is not None:
        rec.subset_offset = _np(out.subset_offset)
    if out.subset is not None:
        rec.subset_idx = _np(out.subset).astype(np.int32)
        if out.k_b is not None:  # adaptive: padded to its widest sample, so
            rec.recall = rec.recall_se = None  # there is no top-k_t to recall
        if ranked is not None:
            rec.ranked_idx, rec.ranked_w = _np(ranked), _np(ranked_w)
    if out.pixel_entropy is not None:
        H = out.pixel_entropy
        rec.pixel_entropy = _np(H).reshape(shape)
        rec.pixel_entropy_mean = _np(H.mean(1))
        rec.pixel_perplexity_mean = _np(torch.exp(H).mean(1))
    if reference_mask is not None:
        acc = posterior.reference(x_t, reference_mask, abar, tau, out.subset)
        ref = acc.mean()
        rec.ref_x0 = _np(ref).reshape(shape)
        rec.onestep_mse, rec.onestep_r2 = _np(mse01(out.x0_hat, ref)), _np(r2(out.x0_hat, ref))
        if out.subset is not None:
            rec.pixel_captured_mass = _np(acc.captured()).reshape(shape)
    return check_finite(rec)
