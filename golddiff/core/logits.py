"""The logits of the posterior over training images: the one pairwise-distance formula, the
global logits, and the PCA-locality mask as an operator that gives per-pixel logits.

Global posterior (Optimal, Karras et al. 2022; GoldDiff's w_i, Shang et al. 2026):
    logit_i = -||x_t - sqrt(abar) x_i||^2 / (2 (1 - abar) tau)
PCA-locality (per pixel m, Lukoianov et al. 2025):
    logit_i(m) = -sum_n M[n, m] (x_t[n] - sqrt(abar) x_i[n])^2 / (2 (1 - abar) tau)

Terms that do not depend on i cancel in the softmax; `global_logits` drops ||x_t||^2 for that
reason. Per-pixel logits are one matmul per chunk with the mask folded into an operator
(`MaskOperator`): dense (D, D) @ (D, c), or a COO sparse @ dense product where the mask is sparse
(low noise: a few % of entries). `core.posterior.posterior` sums the softmax over them.
"""

from __future__ import annotations

import math
import threading
import weakref

import torch

# Largest mask density at which the sparse (COO) product replaces the dense matmul. On the CPU the
# sparse product wins on Fashion-MNIST-sized masks (D = 784) up to about 10% of entries and loses by
# about 18%. On CUDA the dense cuBLAS matmul is fast enough at these D that only near-diagonal
# masks go sparse (a conservative choice: not timed on a GPU).
SPARSE_MAX_DENSITY = {"cpu": 0.10, "cuda": 0.01}


def neg_sq_dist_part(
    q: torch.Tensor, X: torch.Tensor, sqnorm: torch.Tensor, scale: float
) -> torch.Tensor:
    """The part of -||q_b - scale x_i||^2 that depends on i: 2 scale <q_b, x_i> - scale^2 ||x_i||^2.

    q: (B, d); X: (N, d); sqnorm: (N,) = ||x_i||^2.  Returns (B, N). The one pairwise-distance
    formula of the library: `sq_dists` adds ||q_b||^2 back, `global_logits` leaves it out (it
    cancels in the softmax, and at low noise adding it would cost float32 precision in the
    logits).
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


# ----------------------------------------------------------------------------- PCA locality


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
    d = torch.add(x[:, None], XcT, alpha=-sqrt_abar, out=work_buffer(work, "d", XcT))  # (D, c)
    return op(d.square_(), out=work_buffer(work, "L", XcT))


def work_buffer(work: dict | None, name: str, like: torch.Tensor) -> torch.Tensor | None:
    """A reusable buffer shaped like `like` from `work` (None without a work dict)."""
    if work is None:
        return None
    b = work.get(name)
    if b is None or b.shape != like.shape or b.dtype != like.dtype or b.device != like.device:
        b = work[name] = torch.empty_like(like, memory_format=torch.contiguous_format)
    return b
