"""Posterior logits and the streaming (online) softmax that aggregates over chunks of training
images.

Sources: the empirical-Bayes posterior over training images (the "optimal" denoiser, Karras et
al. 2022; GoldDiff, Shang et al. 2026, eq. for w_i); the per-pixel PCA-locality posterior
(Lukoianov et al. 2025).

Global posterior (Optimal):   logit_i = -||x_t - sqrt(abar) x_i||^2 / (2 (1 - abar) tau)
PCA-locality (per pixel m):
    logit_i(m) = -sum_n M[n, m] (x_t[n] - sqrt(abar) x_i[n])^2 / (2 (1 - abar) tau)

Terms that do not depend on i cancel in the softmax; `global_logits` drops ||x_t||^2 for that
reason. Nothing here ever holds a (B, N, D) tensor: callers feed chunks of at most
`chunk_rows(B, D)` images.

Pixel-major kernels (`MaskOperator`, `pixel_logits`, `pixel_posterior`, `pixel_chunk_sums`): one
sample at a time in a (D, c) layout, L = (coef M^T) @ (x_t - sqrt(abar) X_c^T)^2, so one softmax
runs along contiguous rows and the masked distance is one matmul per chunk: dense (D, D) @ (D, c),
or a COO sparse @ dense product where the mask is sparse (low noise: 0.2-10% of entries on
Fashion-MNIST for t <= 400). Per-sample tensors stay under ~32 MB, so the allocator reuses them
instead of mapping fresh pages each call, which a (B, k, D) tensor forced.
"""

from __future__ import annotations

import math
import threading
import weakref

import torch

# Elements of one (B, chunk, D) work tensor; about 64 MB in float32. Several such tensors live at
# once.
CHUNK_ELEMS = 16 * 1024 * 1024


# Largest mask density at which the sparse (COO) product beats the dense matmul. CPU, measured on a
# 2-core EPYC with D = 784 (median of 30, (D, D) @ (D, c)): 5 vs 26 ms at 2% density (c = 4,000), 20
# vs 40 ms at 5%, 58 vs 108 ms at 9%; at 18% the dense matmul wins. CUDA: not measured here (no GPU
# in this session); cuBLAS is fast enough at D <= 3072 that only near-diagonal masks are sent to the
# sparse kernel.
SPARSE_MAX_DENSITY = {"cpu": 0.10, "cuda": 0.01}


def chunk_rows(B: int, D: int, elems: int = CHUNK_ELEMS) -> int:
    """How many training images one chunk of a (B, chunk, D) computation may hold."""
    return max(1, elems // max(1, B * D))


def neg_sq_dist_part(
    q: torch.Tensor, X: torch.Tensor, sqnorm: torch.Tensor, scale: float
) -> torch.Tensor:
    """The part of -||q_b - scale x_i||^2 that depends on i: 2 scale <q_b, x_i> - scale^2 ||x_i||^2.

    q: (B, d); X: (N, d); sqnorm: (N,) = ||x_i||^2.  Returns (B, N). The one pairwise-distance
    formula of the
    library: `sq_dists` adds ||q_b||^2 back, `global_logits` leaves it out (it cancels in the
    softmax, and at
    low noise adding it would cost float32 precision in the logits).
    """
    return 2.0 * scale * (q @ X.T) - (scale * scale) * sqnorm[None, :]


def sq_dists(
    q: torch.Tensor, X: torch.Tensor, sqnorm: torch.Tensor, scale: float = 1.0
) -> torch.Tensor:
    """||q_b - scale x_i||^2 for all pairs, clamped at 0. q: (B, d); X: (N, d); sqnorm: (N,).
    Returns (B, N)."""
    qn = q.square().sum(1, keepdim=True)  # (B, 1)
    return (qn - neg_sq_dist_part(q, X, sqnorm, scale)).clamp_min_(0.0)


def global_logits(
    x_t: torch.Tensor, X: torch.Tensor, sqnorm: torch.Tensor, abar: float, tau: float = 1.0
) -> torch.Tensor:
    """Global-posterior logits -||x_t - sqrt(abar) x_i||^2 / (2 (1 - abar) tau) up to a per-row
    constant.

    x_t: (B, D); X: (N, D); sqnorm: (N,) = ||x_i||^2.  Returns (B, N).
    """
    return neg_sq_dist_part(x_t, X, sqnorm, math.sqrt(abar)) / (2.0 * (1.0 - abar) * tau)


class StreamingSoftmax:
    """Exact softmax-weighted average over chunks with an online log-sum-exp.

    Feed chunks of logits (B, c, P) with values (c, D) or (B, c, D), where P is D (one posterior per
    pixel) or 1 (one posterior shared by all pixels). Keeps, per (b, p): the running max mx, s0 =
    sum e, s1 = sum e * logit (for the entropy) and sx = sum e * x, with e = exp(logit - mx).
    Optionally also the mass s_sub = sum over flagged images of e (captured mass of a subset).
    """

    def __init__(self):
        self.mx = self.s0 = self.s1 = self.sx = self.s_sub = None

    def add(
        self, logits: torch.Tensor, values: torch.Tensor, flag: torch.Tensor | None = None
    ) -> None:
        """logits: (B, c, P); values: (c, D) or (B, c, D); flag: optional (B, c) bool."""
        cmax = logits.amax(dim=1)  # (B, P)
        new_mx = cmax if self.mx is None else torch.maximum(self.mx, cmax)
        e = torch.exp(logits - new_mx[:, None, :])  # (B, c, P)
        if logits.shape[2] == 1:  # shared posterior: a matmul
            ex = (
                e[..., 0] @ values
                if values.dim() == 2
                else torch.einsum("bc,bcd->bd", e[..., 0], values)
            )
        else:
            ex = (e * (values[None] if values.dim() == 2 else values)).sum(1)
        s0, s1 = e.sum(1), (e * logits).sum(1)
        sub = None if flag is None else (e * flag[..., None]).sum(1)
        if self.mx is None:
            self.s0, self.s1, self.sx, self.s_sub = s0, s1, ex, sub
        else:
            r = torch.exp(self.mx - new_mx)  # (B, P) rescale of the old sums
            self.s0 = self.s0 * r + s0
            self.s1 = self.s1 * r + s1
            self.sx = self.sx * r + ex
            if sub is not None:
                self.s_sub = self.s_sub * r + sub
        self.mx = new_mx

    def merge(
        self,
        mx: torch.Tensor,
        s0: torch.Tensor,
        s1: torch.Tensor,
        sx: torch.Tensor,
        sub: torch.Tensor | None = None,
    ) -> None:
        """Fold in precomputed chunk sums, each (B, P)
        (sx: (B, D)), relative to their own max mx."""
        if self.mx is None:
            self.mx, self.s0, self.s1, self.sx, self.s_sub = mx, s0, s1, sx, sub
            return
        new_mx = torch.maximum(self.mx, mx)
        r_old, r_new = torch.exp(self.mx - new_mx), torch.exp(mx - new_mx)  # (B, P)
        self.s0 = self.s0 * r_old + s0 * r_new
        self.s1 = self.s1 * r_old + s1 * r_new
        self.sx = self.sx * r_old + sx * r_new
        if sub is not None:
            self.s_sub = self.s_sub * r_old + sub * r_new
        self.mx = new_mx

    def mean(self) -> torch.Tensor:
        """(B, D): the posterior mean sum_i w_i x_i."""
        return self.sx / self.s0

    def entropy(self) -> torch.Tensor:
        """(B, P): entropy in nats, H = log s0 + mx - s1 / s0."""
        return torch.log(self.s0) + self.mx - self.s1 / self.s0

    def captured(self) -> torch.Tensor:
        """(B, P): posterior mass on the flagged images."""
        return self.s_sub / self.s0


# ----------------------------------------------------------------------------- fast path (pixel-
# major layout)


class MaskOperator:
    """coef * M^T for a (D, D) binary mask M, applied to (D, c) columns: dense, or sparse COO when
    sparse.

    `op(d)` with d: (D, c) returns (D, c) = coef * M^T @ d, i.e. out[m, i] = coef * sum_n M[n, m]
    d[n, i]. sparse=None picks the sparse form when the density is at most SPARSE_MAX_DENSITY of the
    device type.
    """

    def __init__(self, M: torch.Tensor, coef: float, sparse: bool | None = None):
        pattern = MASK_PATTERNS.get(M)
        self.density = pattern["density"]
        if sparse is None:
            sparse = self.density <= SPARSE_MAX_DENSITY.get(M.device.type, 0.0)
        self.sparse = bool(sparse)
        if self.sparse:
            coo = (
                pattern["coo"]
                if pattern["coo"] is not None
                else pattern["dense_T"].to_sparse().coalesce()
            )
            self.A = torch.sparse_coo_tensor(
                coo.indices(),
                coo.values() * coef,
                coo.shape,
                device=M.device,
                is_coalesced=True,
                check_invariants=False,
            )
        else:
            self.A = pattern["dense_T"] * coef  # (D, D)

    def __call__(self, d: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        if out is None:
            return torch.sparse.mm(self.A, d) if self.sparse else self.A @ d
        return torch.mm(self.A, d, out=out)


class _MaskPatterns:
    """M^T (dense, and sparse COO on first need) and the density of each live mask tensor, keyed by
    id(M) with a weak reference so an entry dies with its mask (masks themselves are cached per t in
    DataStats). `MASK_PATTERNS.clear()` resets it (tests); a lock makes it safe for app sessions in
    threads."""

    def __init__(self):
        self._lock = threading.Lock()
        self._by_id: dict[int, tuple] = {}  # id(M) -> (weakref to M, pattern dict)

    def get(self, M: torch.Tensor) -> dict:
        with self._lock:
            ref, pat = self._by_id.get(id(M), (None, None))
            if ref is None or ref() is not M:
                MT = M.T.contiguous()  # (D, D)
                pat = {"density": float((M != 0).float().mean()), "dense_T": MT, "coo": None}
                for key in [k for k, (r, _) in self._by_id.items() if r() is None]:
                    del self._by_id[key]
                self._by_id[id(M)] = (weakref.ref(M), pat)
            if pat["coo"] is None and pat["density"] <= max(SPARSE_MAX_DENSITY.values()):
                pat["coo"] = pat["dense_T"].to_sparse().coalesce()
            return pat

    def clear(self) -> None:
        with self._lock:
            self._by_id.clear()


MASK_PATTERNS = _MaskPatterns()


def mask_operator(
    M: torch.Tensor, abar: float, tau: float = 1.0, sparse: bool | None = None
) -> MaskOperator:
    """The operator of `pixel_logits` at abar: coef = -1 / (2 (1 - abar) tau) folded into M^T."""
    return MaskOperator(M, -1.0 / (2.0 * (1.0 - abar) * tau), sparse)


def pixel_logits(
    x: torch.Tensor, XcT: torch.Tensor, sqrt_abar: float, op: MaskOperator, work: dict | None = None
) -> torch.Tensor:
    """Per-pixel logits of one sample, pixel-major. x: (D,); XcT: (D, c) contiguous.

    Returns L: (D, c), L[m, i] = coef * sum_n M[n, m] (x[n] - sqrt_abar XcT[n, i])^2. work: optional
    dict of reusable (D, c) buffers ("d", "L"), so a loop over samples and chunks allocates nothing
    large per call (fresh large tensors per call fragmented the heap to +400 MB peak on a long
    scan).
    """
    d = torch.add(x[:, None], XcT, alpha=-sqrt_abar, out=_buf(work, "d", XcT)).square_()  # (D, c)
    return op(d, out=_buf(work, "L", XcT))


def row_sums(
    x: torch.Tensor,
    X: torch.Tensor,
    rows: torch.Tensor,
    sqrt_abar: float,
    op: MaskOperator,
    work: dict,
    offset: torch.Tensor | None = None,
) -> tuple[torch.Tensor, ...]:
    """Streaming sums of one sample over the images X[rows], image-major. x: (D,); X: (N, D);
    rows: (k,) indices; op: a dense MaskOperator; offset: optional (k,) added to each image's
    logits.

    Returns (mx, s0, s1, sx) as `pixel_chunk_sums` (each (D,)) and e = exp(L - mx) (k, D), a view of
    a work buffer. The rows are gathered once, contiguously, into a reusable (k, D) buffer and never
    transposed: L = d @ (coef M) with d = (x - sqrt_abar X_S)^2; the softmax runs down the columns.
    Measured on Fashion-MNIST (k = 5000, dense mask, 1 thread, CPU time): 30% less than gathering,
    transposing and running `pixel_posterior`, for the same (D, D) @ (D, k) product.
    """
    k, D = int(rows.shape[0]), int(X.shape[1])
    Xs = torch.index_select(X, 0, rows, out=_sized(work, "Xs", (k, D), X))  # (k, D)
    d = torch.add(x[None], Xs, alpha=-sqrt_abar, out=_sized(work, "d", (k, D), X)).square_()
    L = torch.mm(d, op.A.T, out=_sized(work, "L", (k, D), X))  # (k, D): L[i, m]
    if offset is not None:
        L.add_(offset[:, None])
    mx = L.amax(0)  # (D,)
    e = torch.sub(L, mx, out=d).exp_()  # (k, D), reuses d
    s0 = e.sum(0)  # (D,)
    sx = torch.mul(e, Xs, out=Xs).sum(0)
    s1 = torch.mul(e, L, out=L).sum(0)
    return mx, s0, s1, sx, e


def row_posterior(
    x: torch.Tensor,
    X: torch.Tensor,
    rows: torch.Tensor,
    sqrt_abar: float,
    op: MaskOperator,
    work: dict,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Exact per-pixel softmax of one sample over X[rows] (k,) with `row_sums`; the same returns as
    `pixel_posterior`: x0 (D,), entropy (D,), mean over pixels of each image's weight (k,)."""
    mx, s0, s1, sx, e = row_sums(x, X, rows, sqrt_abar, op, work)
    return sx / s0, torch.log(s0) + mx - s1 / s0, e @ (1.0 / s0) / X.shape[1]


def _sized(work: dict, name: str, shape: tuple, like: torch.Tensor) -> torch.Tensor:
    """A reusable buffer of `shape` from `work`, with the dtype and device of `like`."""
    b = work.get(name)
    if b is None or tuple(b.shape) != shape or b.dtype != like.dtype or b.device != like.device:
        b = work[name] = torch.empty(shape, dtype=like.dtype, device=like.device)
    return b


def _buf(work: dict | None, name: str, like: torch.Tensor) -> torch.Tensor | None:
    """A reusable buffer shaped like `like` from `work` (None without a work dict)."""
    if work is None:
        return None
    b = work.get(name)
    if b is None or b.shape != like.shape or b.dtype != like.dtype or b.device != like.device:
        b = work[name] = torch.empty_like(like, memory_format=torch.contiguous_format)
    return b


def pixel_posterior(
    L: torch.Tensor, XcT: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Exact per-pixel softmax over all c images of one sample. L, XcT: (D, c).

    Returns x0 (D,) = sum_i w[m, i] X[i, m], entropy (D,) = lse - sum_i w L, and the mean over
    pixels of each image's weight (c,). lse is read off the largest weight: lse = max L - log max w.
    """
    w = torch.softmax(L, dim=1)  # (D, c)
    lse = L.amax(1) - torch.log(w.amax(1))
    return torch.linalg.vecdot(w, XcT), lse - torch.linalg.vecdot(w, L), w.mean(0)


def pixel_chunk_sums(
    L: torch.Tensor, XcT: torch.Tensor, flag: torch.Tensor | None = None, work: dict | None = None
) -> tuple:
    """Streaming sums of one chunk for `StreamingSoftmax.merge`. L, XcT: (D, c); flag: optional (c,)
    bool.

    Returns (mx, s0, s1, sx, sub), each (D,) (sub None without a flag): mx = max_i L, e = exp(L -
    mx), s0 = sum e, s1 = sum e L, sx = sum e x, sub = sum over flagged images of e.
    """
    mx = L.amax(1)  # (D,)
    e = torch.sub(L, mx[:, None], out=_buf(work, "e", L)).exp_()  # (D, c)
    sub = None if flag is None else e @ flag.to(e.dtype)
    return mx, e.sum(1), torch.linalg.vecdot(e, L), torch.linalg.vecdot(e, XcT), sub
