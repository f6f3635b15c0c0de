"""The per-step record: every diagnostic of one sampling step, computed once (`make_record`), and
the labels the CLI and the app give them (`LABELS`).

Global posterior at x_t over all N (exact): w_i = softmax_i(-||x_t - sqrt(abar) x_i||^2 / (2
(1-abar) tau)). entropy H (nats), perplexity exp(H), ESS = 1 / sum w^2, k_0.9 / k_0.99 = fewest
images holding 90% / 99%. Golden subset S_t: captured mass W_S = sum_{i in S_t} w_i, recall of
the global top-k_t. The summaries themselves are defined in core.summaries.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np
import torch

from ..core.posterior import StreamingSoftmax
from ..core.summaries import captured_mass, entropy, ess, k_mass, mse01, perplexity, r2, topk_recall
from ..data.memory import check_memory
from ..denoise.corpus import Corpus, corpus_logits, locality_scan
from ..denoise.methods import DenoiseOutput

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
    "k_b": "k_t per sample (adaptive)",
    "error_est": "estimated one-step 1 - r^2 (adaptive)",
}


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
    entropy: np.ndarray  # (B,) global posterior entropy (nats)
    perplexity: np.ndarray  # (B,)
    ess: np.ndarray  # (B,)
    k90: np.ndarray  # (B,) int
    k99: np.ndarray  # (B,) int
    top_idx: np.ndarray  # (B, n) global posterior top-n indices
    top_w: np.ndarray  # (B, n) and their weights
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
    k_b: np.ndarray | None = None  # (B,) adaptive subset: images aggregated per sample (its k_t)
    error_est: np.ndarray | None = None  # (B,) adaptive subset: estimated one-step 1 - r^2
    cpu_step: float | None = None  # seconds of process CPU time of the denoiser call (all threads;
    # unlike time_step, not inflated when other processes share the cores)

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _np(x: torch.Tensor | None):
    return (
        None
        if x is None
        else x.detach().float().cpu().numpy() if x.is_floating_point() else x.cpu().numpy()
    )


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
    """The exact global posterior over all N rows of one process's corpus, for `make_record`.

    `run.sharded.ShardedPosterior` gives the same answers over a corpus split across ranks."""

    def __init__(self, corpus: Corpus):
        self.corpus = corpus

    @property
    def N(self) -> int:
        return self.corpus.total

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
        corpus, B = self.corpus, x_t.shape[0]
        check_diagnostics_memory(B, corpus, x_t.device)
        logits = corpus_logits(x_t, corpus, abar, tau)  # (B, N), chunked when out-of-core
        w = torch.softmax(logits, dim=1)  # the global posterior
        top = w.topk(min(top_n, corpus.N), dim=1)
        out = dict(
            entropy=entropy(w),
            perplexity=perplexity(w),
            ess=ess(w),
            k90=k_mass(w, 0.9),
            k99=k_mass(w, 0.99),
            top_idx=top.indices,
            top_w=top.values,
        )
        if subset is not None:
            out.update(captured_mass=captured_mass(w, subset), recall=topk_recall(logits, subset))
        if ranked is not None:
            out["ranked_global_w"] = w.gather(1, ranked)  # (B, n)
        return out

    def reference(
        self,
        x_t: torch.Tensor,
        M: torch.Tensor,
        abar: float,
        tau: float,
        subset: torch.Tensor | None,
    ) -> StreamingSoftmax:
        """The full-scan PCA-locality posterior at x_t (B, D), flagging the subset (B, k) if any."""
        flag = None
        if subset is not None:
            flag = torch.zeros(
                x_t.shape[0], self.corpus.N, dtype=torch.bool, device=x_t.device
            ).scatter_(1, subset, True)
        return locality_scan(x_t, self.corpus, M, abar, tau, flag)


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
    posterior: CorpusPosterior | None = None,
    cpu_step: float | None = None,
) -> StepRecord:
    """Compute every diagnostic of one step. x_t, out.x0_hat: (B, D).

    reference_mask: when given (the (D, D) PCA-locality mask), run the exact check: a full-scan
    PCA-locality posterior at the same x_t, the method's one-step MSE / r^2 against it, and the
    per-pixel mass of S_t. posterior: what computes the diagnostics over all N (default:
    CorpusPosterior(corpus)).
    """
    shape = (x_t.shape[0],) + corpus.shape
    posterior = posterior or CorpusPosterior(corpus)
    ranked = ranked_w = None  # the subset's images ranked by mean per-pixel weight, (B, n)
    if out.subset is not None and out.subset_weight is not None:
        r = out.subset_weight.topk(min(top_n, out.subset.shape[1]), dim=1)
        ranked, ranked_w = out.subset.gather(1, r.indices), r.values
    summ = posterior.summaries(x_t, abar, tau, top_n, out.subset, ranked)
    post = {k: _np(v) for k, v in summ.items()}
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
        **post,
    )
    if out.pool_nearest is not None:
        rec.pool_nearest = _np(out.pool_nearest)
    if out.k_b is not None:
        rec.k_b, rec.error_est = _np(out.k_b), _np(out.error_est)
    if out.subset is not None:
        rec.subset_idx = _np(out.subset).astype(np.int32)
        if out.k_b is not None:  # adaptive: padded to its widest sample, so
            rec.recall = None  # there is no top-k_t to recall
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
    return rec
