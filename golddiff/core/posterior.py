"""The posterior over training images and the one kernel that computes every sum over them.

`posterior(x_t, X, M | None, abar, tau, idx=..., offsets=...)` returns the `StreamingSoftmax`
sums of the global posterior (M None) or of the per-pixel PCA-locality posterior (M (D, D)) at
x_t, over all rows or over each sample's own rows, with optional per-image log weights. Every
method, diagnostic and figure goes through it; the corpus feeds it rows and merges ranks with
`core.comm`. The logits themselves are `core.logits`. Nothing here ever holds a (B, N, D) tensor:
scans feed chunks of at most `chunk_rows(B, D)` images, and per-sample tensors come from reusable
work buffers, so the allocator reuses them instead of mapping fresh pages each call.
"""

from __future__ import annotations

import math

import torch

from .interrupt import checkpoint
from .logits import global_logits, mask_operator, pixel_logits, work_buffer

# Elements of one (B, chunk, D) work tensor; about 64 MB in float32. Several such tensors live at
# once.
CHUNK_ELEMS = 16 * 1024 * 1024


# Logits relative to their max are floored here before exp: exp(-87) = 1.6e-38 is the smallest
# normal float32, nothing next to the max's exp(0) = 1 at float32 precision, and torch's vectorised
# CPU exp is ~10x slower on inputs below it (sharp posteriors at low noise are mostly such inputs).
EXP_FLOOR = -87.0


def floored_exp(z: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """exp(max(z, EXP_FLOOR)) for logits z <= 0 relative to their max; z is floored in place."""
    return torch.exp(z.clamp_min_(EXP_FLOOR), out=out)


def chunk_rows(B: int, D: int, elems: int = CHUNK_ELEMS) -> int:
    """How many training images one chunk of a (B, chunk, D) computation may hold."""
    return max(1, elems // max(1, B * D))


class StreamingSoftmax:
    """Sums of an exact softmax over training images, kept relative to a running max (an online
    log-sum-exp), so chunks of images and shards of the corpus fold in exactly.

    Per (sample b, posterior p), with P = D (one posterior per pixel) or 1 (one shared by all
    pixels) and e_i = exp(logit_i - mx): s0 = sum e, s1 = sum e (logit - mx) <= 0 (the entropy,
    kept relative to mx so that logits of any magnitude cancel nothing), sx = sum e x (B, D), and
    optionally s_sub = sum over flagged images of e (a subset's captured mass) and sx2 =
    sum e x^2 (B, D) (the spread). `posterior` fills one; `core.comm.merge_softmax` merges
    the ranks' under `--shard corpus`. image_w: per sample, the mean over pixels of each of its
    images' weight, when `posterior` was asked for it.
    """

    def __init__(self):
        self.mx = self.s0 = self.s1 = self.sx = self.s_sub = self.sx2 = None
        self.image_w: list[torch.Tensor] | None = None

    def fold(self, mx, s0, s1, sx=None, sub=None, sx2=None) -> None:
        """Fold in the sums of more images, each (B, P) (sx, sx2: (B, D)), relative to their own
        max mx: both sides are rescaled to the larger max (s1 also shifted to it)."""
        if self.mx is None:
            self.mx, self.s0, self.s1, self.sx, self.s_sub, self.sx2 = mx, s0, s1, sx, sub, sx2
            return
        new_mx = torch.maximum(self.mx, mx)
        r_old, r_new = torch.exp(self.mx - new_mx), torch.exp(mx - new_mx)  # (B, P)
        self.s1 = shift_s1(self.s1, self.s0, self.mx, new_mx) * r_old + shift_s1(
            s1, s0, mx, new_mx
        ) * r_new
        self.s0 = self.s0 * r_old + s0 * r_new
        self.sx = None if sx is None else self.sx * r_old + sx * r_new
        self.s_sub = None if sub is None else self.s_sub * r_old + sub * r_new
        self.sx2 = None if sx2 is None else self.sx2 * r_old + sx2 * r_new
        self.mx = new_mx

    def add(
        self,
        logits: torch.Tensor,
        values: torch.Tensor | None,
        flag: torch.Tensor | None = None,
        moments: int = 1,
    ) -> None:
        """Fold in a chunk of logits (B, c, P) with values (c, D) shared by the batch or (B, c, D);
        flag: optional (B, c) bool. P = 1 reads each sum as a matmul."""
        mx = logits.amax(dim=1)  # (B, P)
        z = logits - mx[:, None, :]  # (B, c, P), <= 0
        e = floored_exp(z)
        sx = None if moments < 1 else _weighted(e, values)
        sx2 = None if moments < 2 else _weighted(e, values.square())
        sub = None if flag is None else (e * flag[..., None]).sum(1)
        self.fold(mx, e.sum(1), (e * z).sum(1), sx, sub, sx2)

    @staticmethod
    def stack(accs: list["StreamingSoftmax"]) -> "StreamingSoftmax":
        """One accumulator of B samples from B accumulators of one sample each ((1, P) sums)."""
        out = StreamingSoftmax()
        for name in ("mx", "s0", "s1", "sx", "s_sub", "sx2"):
            parts = [getattr(a, name) for a in accs]
            setattr(out, name, None if parts[0] is None else torch.cat(parts))
        ws = [a.image_w for a in accs]
        out.image_w = None if ws[0] is None else [w for ww in ws for w in ww]
        return out

    def mean(self) -> torch.Tensor:
        """(B, D): the posterior mean sum_i w_i x_i."""
        return self.sx / self.s0

    def second_moment(self) -> torch.Tensor:
        """(B, D): sum_i w_i x_i^2."""
        return self.sx2 / self.s0

    def lse(self) -> torch.Tensor:
        """(B, P): log sum_i exp(logit_i), the log normaliser."""
        return torch.log(self.s0) + self.mx

    def entropy(self) -> torch.Tensor:
        """(B, P): entropy in nats, H = log s0 - s1 / s0 (>= 0: s0 >= 1 and s1 <= 0)."""
        return torch.log(self.s0) - self.s1 / self.s0

    def captured(self) -> torch.Tensor:
        """(B, P): posterior mass on the flagged images."""
        return self.s_sub / self.s0


def shift_s1(s1, s0, mx, new_mx):
    """s1 = sum e (logit - mx) re-expressed relative to new_mx >= mx, before the rescale by
    exp(mx - new_mx): s1 + (mx - new_mx) s0. Empty sums (s0 = 0, mx = -inf) stay 0."""
    return s1 + torch.where(s0 > 0, (mx - new_mx) * s0, torch.zeros_like(s0))


def _weighted(e: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """sum_i e[b, i, p] v[i, d] -> (B, D): e (B, c, P), v (c, D) or (B, c, D). P = 1 is a matmul."""
    if e.shape[2] == 1:  # shared posterior
        return e[..., 0] @ v if v.dim() == 2 else torch.einsum("bc,bcd->bd", e[..., 0], v)
    return (e * (v[None] if v.dim() == 2 else v)).sum(1)


def _sized(work: dict, name: str, shape: tuple, like: torch.Tensor) -> torch.Tensor:
    """A reusable buffer of `shape` from `work`, with the dtype and device of `like`: a view of a
    flat buffer that grows only when a larger shape is asked for (subset sizes vary per step)."""
    n = math.prod(shape)
    b = work.get(name)
    if b is None or b.numel() < n or b.dtype != like.dtype or b.device != like.device:
        b = work[name] = torch.empty(n, dtype=like.dtype, device=like.device)
    return b[:n].view(shape)


# ----------------------------------------------------------------------------- the one kernel


def scan_rows(B: int, D: int, local: bool) -> int:
    """Rows per chunk of a scan shared by B samples: (B, c, D) work tensors for a per-pixel
    posterior, (B, c) logits (a few (c, D) reads) for the global one."""
    return chunk_rows(B, D) if local else max(1024, CHUNK_ELEMS // max(1, B * 8))


def posterior(
    x_t: torch.Tensor,
    X,
    M: torch.Tensor | None,
    abar: float,
    tau: float = 1.0,
    *,
    idx=None,
    offsets=None,
    flag: torch.Tensor | None = None,
    sqnorm: torch.Tensor | None = None,
    moments: int = 1,
    weights: bool = False,
    lse: torch.Tensor | None = None,
    work: dict | None = None,
) -> StreamingSoftmax:
    """Every sum over training images: the softmax sums of the posterior at x_t (B, D).

    M None: the global posterior, logit_i = -||x_t - sqrt(abar) x_i||^2 / (2 (1 - abar) tau)
    (empirical Bayes; GoldDiff's w_i). M (D, D): one posterior per output pixel m (PCA locality,
    Lukoianov et al. 2025), logit_i(m) = -sum_n M[n, m] (x_t[n] - sqrt(abar) x_i[n])^2 /
    (2 (1 - abar) tau); over a golden subset this is GoldDiff's aggregation (Shang et al. 2026).
    offsets: per-image log weights added to the logits (importance weights log c_i - log q_i).

    Rows: idx None: every sample weighs all rows of X, an (N, D) tensor or an iterable of
    (start, (c, D) rows) chunks in order (a streamed corpus); offsets and flag (captured mass) are
    then (B, N), and sqnorm (N,) = ||x_i||^2 saves recomputing it. idx: a (B, k) tensor or B index
    tensors (k_b,) into the (N, D) tensor X: sample b weighs X[idx[b]]; offsets then (B, k) or B
    tensors (k_b,). moments: 0 (no sx: entropy only), 1, or 2 (also sx2). weights (idx only):
    acc.image_w[b] (k_b,) = mean over pixels of each image's weight, normalised by lse (B, P)
    when given (the merged sums of all ranks) or by these sums.

    Layouts (implementation details): the global posterior is a (B, c) matmul per chunk; a scan
    shared by the batch is pixel-major, one (D, c) transpose per chunk shared by every sample; a
    sample's own subset under a dense mask is gathered once, image-major (k, D), and reduced down
    its columns, which saves ~30% CPU time against gathering, transposing and going pixel-major.
    """
    B, D = x_t.shape
    op = None if M is None else mask_operator(M, abar, tau)  # coef M^T, dense or sparse
    work = {} if work is None else work
    if idx is None:
        if weights:
            raise ValueError("posterior: image weights need per-sample rows (idx).")
        if isinstance(X, torch.Tensor):
            step = scan_rows(B, D, M is not None)
            X = ((i, X[i : i + step]) for i in range(0, X.shape[0], step))
        return _shared(x_t, X, op, abar, tau, offsets, flag, sqnorm, moments, work)
    sums, image_w = [], []
    for b in range(B):
        off = None if offsets is None else offsets[b]
        lse_b = None if lse is None else lse[b]
        s, w = _own(x_t[b], X, idx[b], op, abar, tau, off, moments, weights, lse_b, work)
        sums.append(s)
        image_w.append(w)
    acc = StreamingSoftmax()  # mx, s0, s1, sx, s_sub (none), sx2: each (B, .)
    acc.fold(*(None if p[0] is None else torch.cat(p) for p in zip(*sums)))
    acc.image_w = image_w if weights else None
    return acc


def _shared(x_t, chunks, op, abar, tau, offsets, flag, sqnorm, moments, work) -> StreamingSoftmax:
    """The posterior of every sample over the same rows, chunk by chunk."""
    acc, sqrt_abar = StreamingSoftmax(), math.sqrt(abar)
    for i, Xc in chunks:
        checkpoint()
        c = Xc.shape[0]
        off = None if offsets is None else offsets[:, i : i + c]  # (B, c)
        fl = None if flag is None else flag[:, i : i + c]
        if op is None:
            sq = Xc.square().sum(1) if sqnorm is None else sqnorm[i : i + c]
            L = global_logits(x_t, Xc, sq, abar, tau)  # (B, c)
            acc.add((L if off is None else L + off)[..., None], Xc, fl, moments)
            continue
        XcT = Xc.T.contiguous()  # (D, c), shared by the batch
        parts = []
        for b in range(x_t.shape[0]):
            L = pixel_logits(x_t[b], XcT, sqrt_abar, op, work)  # (D, c)
            if off is not None:
                L.add_(off[b][None, :])
            parts.append(_pixel_sums(L, XcT, None if fl is None else fl[b], moments, work))
        acc.fold(*(None if p[0] is None else torch.stack(p) for p in zip(*parts)))  # (B, .)
    return acc


def _own(x, X, rows, op, abar, tau, off, moments, weights, lse, work) -> tuple:
    """One sample x (D,) over its own rows X[rows] (k,): its sums (mx, s0, s1, sx, s_sub, sx2),
    each (1, .) or None, and its image weights (k,) (None unless asked for)."""
    acc, D, k = StreamingSoftmax(), X.shape[1], int(rows.shape[0])
    if k == 0:  # none of this sample's rows (on this rank)
        z = x.new_zeros(1, D if op is not None else 1)
        sx2 = x.new_zeros(1, D) if moments == 2 else None
        sx = x.new_zeros(1, D) if moments else None
        return (torch.full_like(z, -math.inf), z, z, sx, None, sx2), x.new_zeros(0)
    if op is None:
        Xs = X[rows]  # (k, D)
        L = global_logits(x[None], Xs, torch.linalg.vecdot(Xs, Xs), abar, tau)  # (1, k)
        acc.add((L if off is None else L + off[None])[..., None], Xs, None, moments)
        w = torch.exp(L[0] + (0 if off is None else off) - acc.lse()[0]) if weights else None
        return _sums(acc), w
    if not op.sparse and k * D <= 2 * CHUNK_ELEMS and moments < 2:
        return _own_image_major(x, X, rows, op, math.sqrt(abar), off, moments, weights, lse, work)
    step, sqrt_abar, kept = chunk_rows(1, D), math.sqrt(abar), []
    for i in range(0, k, step):  # pixel-major chunks of the sample's rows
        checkpoint()
        XcT = X[rows[i : i + step]].T.contiguous()  # (D, c)
        L = pixel_logits(x, XcT, sqrt_abar, op, work)  # (D, c)
        if off is not None:
            L.add_(off[i : i + step][None, :])
        sums = _pixel_sums(L, XcT, None, moments, work)
        acc.fold(*(None if s is None else s[None] for s in sums))
        if weights and lse is not None:  # e = exp(L - mx) is still in the work buffer
            kept.append(work["e"].T @ torch.exp(sums[0] - lse) / D)
    if weights and lse is None and k <= step:  # one chunk: normalised by its own sums
        kept = [work["e"].T @ (1.0 / acc.s0[0]) / D]
    elif weights and lse is None:  # several chunks: a second pass, now that lse is known
        return _sums(acc), _own(x, X, rows, op, abar, tau, off, 0, True, acc.lse()[0], work)[1]
    return _sums(acc), torch.cat(kept) if weights else None


def _sums(acc: StreamingSoftmax) -> tuple:
    return acc.mx, acc.s0, acc.s1, acc.sx, acc.s_sub, acc.sx2


def _own_image_major(x, X, rows, op, sqrt_abar, off, moments, weights, lse, work):
    """`_own` under a dense mask: the rows X[rows] (k, D) gathered once into a reusable buffer and
    never transposed, L = d @ (coef M) with d = (x - sqrt(abar) X_S)^2; the softmax runs down the
    columns."""
    k, D = int(rows.shape[0]), int(X.shape[1])
    Xs = torch.index_select(X, 0, rows, out=_sized(work, "Xs", (k, D), X))  # (k, D)
    d = torch.add(x[None], Xs, alpha=-sqrt_abar, out=_sized(work, "d", (k, D), X)).square_()
    L = torch.mm(d, op.A.T, out=_sized(work, "L", (k, D), X))  # (k, D): L[i, m]
    if off is not None:
        L.add_(off[:, None])
    mx = L.amax(0)  # (D,)
    L.sub_(mx)  # logit - mx, <= 0
    e = floored_exp(L, out=d)  # (k, D), reuses d
    s0 = e.sum(0)  # (D,)
    sx = torch.mul(e, Xs, out=Xs).sum(0) if moments else None
    s1 = torch.mul(e, L, out=L).sum(0)
    w = None
    if weights:  # w[i, m] = e[i, m] exp(mx[m] - lse[m]), lse = mx + log s0 by default
        w = e @ (1.0 / s0 if lse is None else torch.exp(mx - lse)) / D
    return (mx[None], s0[None], s1[None], None if sx is None else sx[None], None, None), w


def _pixel_sums(L, XcT, flag, moments, work) -> tuple:
    """Sums of one sample's chunk, pixel-major. L, XcT: (D, c); flag: optional (c,) bool.
    Returns (mx, s0, s1, sx, sub, sx2), each (D,) or None; e = exp(L - mx) stays in work["e"]."""
    mx = L.amax(1)  # (D,)
    L = L.sub_(mx[:, None])  # logit - mx, <= 0
    e = floored_exp(L, out=work_buffer(work, "e", L))  # (D, c)
    sub = None if flag is None else e @ flag.to(e.dtype)
    sx = torch.linalg.vecdot(e, XcT) if moments else None
    sx2 = torch.linalg.vecdot(e, XcT.square()) if moments == 2 else None
    return mx, e.sum(1), torch.linalg.vecdot(e, L), sx, sub, sx2
