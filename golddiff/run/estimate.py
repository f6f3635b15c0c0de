"""The global posterior's summaries, estimated from a head and a uniform tail.

diagnostics="estimated".

The exact summaries (`records.CorpusPosterior`) cost a pass over all N images at every step. Here,
per sample, a head H (the images the denoiser retrieved, its golden subset, together with the
HEAD images nearest to x_t over all N in the proxy space, `nearest_head`) is weighed exactly,
and the rest of the corpus by a uniform sample T of m of its R = N - |H| images, drawn without
replacement, each standing for c = R / m images (a Horvitz-Thompson total, Horvitz & Thompson
1952). With u_i = exp(logit_i) / Z_hat, where Z_hat = sum_H exp(logit) + c sum_T exp(logit) is an
unbiased estimate of the partition sum Z, and counts c_i (1 on the head, c on the tail):

    entropy H = log Z - sum c_i exp(l_i) l_i / Z   ->  -sum_i c_i u_i log u_i
    ESS       = Z^2 / sum exp(2 l_i)               ->  1 / sum_i c_i u_i^2
    k_p       = fewest images holding mass p: the images ranked by u_i, each counted c_i times
    W_S       = sum_{i in S} u_i   (S is part of the head)
    recall    = share of the top-|S| by logit that S holds, each tail image counted c times

The sums Z_hat and u_i come from the one kernel (`Corpus.posterior` with the per-image log weights
log c_i as offsets). Standard errors: the delete-a-group jackknife (Kott 2001, "The delete-a-group
jackknife", J. Official Statistics 17) over GROUPS random groups of the tail, with the finite
population correction 1 - m / R, so a tail that covers all of the rest has standard error 0 and
gives the exact values.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..core.logits import global_logits

TAIL = 16384  # uniform tail images per sample and step
HEAD = 24576  # nearest images (proxy search over all N) that join the head
GROUPS = 8  # jackknife groups of the tail
NAMES = ("entropy", "perplexity", "ess", "k90", "k99", "captured_mass", "recall")


def draw_tail(
    N: int, head: torch.Tensor, m: int, rng: np.random.Generator
) -> torch.Tensor:
    """m dataset indices drawn uniformly without replacement from the N - |head| images outside
    `head` (sorted unique (h,)), in draw order, so that positions j % GROUPS form random groups.

    The first of a uniformly random ordering of |head| + m images that lie outside the head are a
    uniform m-subset of the rest, in random order."""
    m = min(int(m), N - int(head.shape[0]))
    if m <= 0:
        return torch.zeros(0, dtype=torch.long)
    order = torch.from_numpy(ordered_sample(N, min(N, m + int(head.shape[0])), rng))
    h = head.cpu()
    pos = torch.searchsorted(h, order).clamp_max(max(0, h.shape[0] - 1))
    outside = order if h.shape[0] == 0 else order[h[pos] != order]
    return outside[:m]


def ordered_sample(N: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """n distinct integers of 0..N-1 in uniformly random order: the first distinct values of a
    stream of iid uniform draws (a draw equal to an earlier one is skipped), O(n) for n << N; a
    permutation where n is a large share of N."""
    if 4 * n > N:
        return rng.permutation(N)[:n]
    got = np.empty(0, dtype=np.int64)
    while got.size < n:
        draws = np.concatenate([got, rng.integers(0, N, size=2 * (n - got.size) + 16)])
        first = np.sort(np.unique(draws, return_index=True)[1])
        got = draws[first]
    return got[:n]


def counts(h: int, m: int, R: int, groups: int) -> np.ndarray:
    """(1 + G, h + m) image counts: row 0 the full estimate (1 on the head, R / m on the tail), row
    1 + g the estimate with tail group g (positions j % G == g) left out. G = min(groups, m)."""
    G = min(groups, m)
    c = np.ones((1 + G, h + m))
    if m == 0:
        return c
    grp = np.arange(m) % G
    c[0, h:] = R / m
    for g in range(G):
        kept = grp != g
        c[1 + g, h:] = np.where(kept, R / int(kept.sum()), 0.0)
    return c


def summaries_of(
    u: np.ndarray,
    c: np.ndarray,
    rank_by: np.ndarray | None,
    in_s: np.ndarray | None,
    k: int,
) -> dict[str, np.ndarray]:
    """The summaries of one sample under each row of counts c (V, n): entropy, perplexity, ESS,
    k_0.9, k_0.99 and, with the subset's flags in_s (n,) bool, captured mass and the recall of
    the top-k by rank_by (n,) (the logits, or u where no weight underflows); each (V,).
    u (n,): each image's weight exp(l_i) / Z_hat. Small vectors: numpy, one thread. A row whose
    images all have weight 0 (a left-out group that held all of the tail's mass) gives NaN."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return _summaries(u, c, rank_by, in_s, k)


def _summaries(u, c, rank_by, in_s, k) -> dict[str, np.ndarray]:
    cu = c * u  # (V, n)
    Z = cu.sum(1)  # (V,) 1 in row 0 up to rounding
    ulogu = u * np.log(np.where(u > 0, u, 1.0))  # 0 log 0 = 0
    H = np.log(Z) - (c * ulogu).sum(1) / Z
    out = {"entropy": H, "perplexity": np.exp(H), "ess": Z**2 / (cu * u).sum(1)}
    rank = np.argsort(-u, kind="stable")
    cs, us = c[:, rank], u[rank]
    mass = (cs * us).cumsum(1) / Z[:, None]  # (V, n)
    before = cs.cumsum(1) - cs  # (V, n): images counted before each one
    rows = np.arange(c.shape[0])
    for name, p in (("k90", 0.9), ("k99", 0.99)):
        j = np.minimum((mass < p).sum(1), u.shape[0] - 1)  # (V,) first image reaching p
        prev = np.where(j > 0, mass[rows, np.maximum(j - 1, 0)], 0.0)
        part = np.maximum(np.ceil((p - prev) * Z / np.maximum(us[j], 1e-300)), 1.0)
        out[name] = before[rows, j] + np.minimum(cs[rows, j], part)
    if in_s is not None:
        out["captured_mass"] = (cu * in_s).sum(1) / Z
        if rank_by is not None:
            order = np.argsort(-rank_by, kind="stable")
            cl = c[:, order]
            top = (cl.cumsum(1) - cl) < k  # (V, n): image starts inside the top k
            out["recall"] = (top & in_s[order]).sum(1) / k
    return out


def jackknife(values: np.ndarray, fpc: float) -> tuple[float, float]:
    """(estimate, standard error) from values (1 + G,): row 0 the full estimate, rows 1.. the
    delete-a-group estimates; variance fpc (G - 1) / G sum_g (v_g - mean)^2. NaN when a
    left-out group's estimate is undefined (that group held all of the tail's mass)."""
    values = np.asarray(values, dtype=float)
    est, rest = float(values[0]), values[1:]
    G = rest.shape[0]
    if G < 2 or fpc <= 0:
        return est, 0.0
    var = fpc * (G - 1) / G * float(((rest - rest.mean()) ** 2).sum())
    return est, math.sqrt(max(var, 0.0))


def nearest_head(den, x_t: torch.Tensor, abar: float, k: int = HEAD) -> torch.Tensor:
    """(B, k') dataset indices of the k' = min(k, N) images nearest to x_t (B, D) over all
    N in the proxy space, ||P x_t - sqrt(abar) P x_i||^2, through the denoiser's own proxy index
    (its low_res, backend and nprobe). Where the posterior has concentrated they hold nearly all
    of its mass, so the tail only has to estimate the rest."""
    p, corpus = den.params, den.corpus
    index = corpus.proxy(p.low_res, p.backend, p.nlist)
    k = min(int(k), corpus.total)
    return index.search(index.query(x_t), math.sqrt(abar), k, None, p.nprobe)


def estimate_sums(corpus, x_t, abar, tau, heads, rngs, tail: int = TAIL) -> tuple:
    """The kernel's sums of the estimate: per sample b its head (unique, sorted) then a uniform
    tail of m_b images with offset log(R_b / m_b), through `Corpus.posterior` (global, M None).

    Returns (acc, rows, head sizes, tail sizes): acc.lse() (B, 1) is log Z_hat, an unbiased
    estimate of Z = sum over all N of exp(logit) once exponentiated; acc.image_w[b] (n_b,) holds
    c_i exp(l_i) / Z_hat over rows[b] (n_b,)."""
    N = corpus.total
    rows, offs, hs, ms = [], [], [], []
    for b in range(x_t.shape[0]):
        head = torch.unique(heads[b].to(torch.long).cpu())
        t = draw_tail(N, head, tail, rngs[b])
        R, m = N - int(head.shape[0]), int(t.shape[0])
        rows.append(torch.cat([head, t]).to(corpus.device))
        off = torch.zeros(rows[-1].shape[0], device=corpus.device)
        off[head.shape[0] :] = math.log(R / m) if m else 0.0
        offs.append(off)
        hs.append(int(head.shape[0]))
        ms.append(m)
    acc = corpus.posterior(x_t, None, abar, tau, subset=rows, offsets=offs, moments=0, weights=True)
    return acc, rows, hs, ms


def estimated_summaries(
    corpus,
    x_t: torch.Tensor,
    abar: float,
    tau: float,
    top_n: int,
    heads: list[torch.Tensor],
    subset: torch.Tensor | None,
    ranked: torch.Tensor | None,
    rngs: list[np.random.Generator],
    tail: int = TAIL,
    with_recall: bool = True,
) -> dict:
    """The estimated summaries of the global posterior at x_t (B, D) and their standard errors.

    heads: per sample the images weighed exactly (any tensor of dataset indices; duplicates fold);
    subset (B, k): the golden subset S_t, part of the head (W_S and the recall of the top-k);
    ranked (B, n): images whose estimated global weights are wanted (ranked_global_w); rngs: one
    numpy generator per sample for its tail. Returns the keys of `CorpusPosterior.summaries`, each
    name in NAMES also as name + "_se", and "tail" (m per sample)."""
    if corpus.sharded:
        raise ValueError(
            "diagnostics='estimated' does not run under --shard corpus; use 'exact' or 'none'."
        )
    B, N = x_t.shape[0], corpus.total
    acc, rows, hs, ms = estimate_sums(corpus, x_t, abar, tau, heads, rngs, tail)
    cols: dict[str, list] = {n: [] for n in NAMES}
    ses: dict[str, list] = {n: [] for n in NAMES}
    tops, ranked_w = [], []
    for b in range(B):
        h, m, R = hs[b], ms[b], N - hs[b]
        c = counts(h, m, R, GROUPS)
        u = np.maximum(acc.image_w[b].double().cpu().numpy() / c[0], 0.0)  # (n,) exp(l_i) / Z_hat
        in_s = rank_by = None
        ids = rows[b].cpu().numpy()
        if subset is not None:
            k = int(subset.shape[1])
            in_s = np.isin(ids, subset[b].cpu().numpy())
            if with_recall and (c[0] * (u > 0)).sum() >= k:  # the top-k by weight is the top-k
                rank_by = u
            elif with_recall:  # weights underflow inside the top-k: rank by the logits
                X = corpus.rows(rows[b])
                L = global_logits(x_t[b : b + 1], X, X.square().sum(1), abar, tau)[0]
                rank_by = L.double().cpu().numpy()
        s = summaries_of(u, c, rank_by, in_s, 0 if subset is None else int(subset.shape[1]))
        for n in NAMES:
            est, se = jackknife(s[n], 1.0 - m / R if R else 0.0) if n in s else (None, None)
            cols[n].append(est)
            ses[n].append(se)
        top = np.argsort(-u, kind="stable")[: min(top_n, u.shape[0])]
        tops.append((torch.from_numpy(u[top]), torch.from_numpy(ids[top])))
        if ranked is not None:
            r = ranked[b].cpu().numpy()
            where = np.minimum(np.searchsorted(ids[:h], r), max(0, h - 1))
            ranked_w.append(torch.from_numpy(np.where(ids[where] == r, u[where], 0.0)))
    out = {"tail": torch.tensor(ms)}
    for n in NAMES:
        if cols[n][0] is not None:
            out[n] = torch.tensor(cols[n], dtype=torch.float64)
            out[n + "_se"] = torch.tensor(ses[n], dtype=torch.float64)
    for n in ("k90", "k99"):
        out[n] = out[n].round().long()
    width = min(t[0].shape[0] for t in tops)
    out["top_w"] = torch.stack([t[0][:width] for t in tops]).float()
    out["top_idx"] = torch.stack([t[1][:width] for t in tops])
    if ranked is not None:
        out["ranked_global_w"] = torch.stack(ranked_w).float()
    return out
