"""`DenoiserParams`: every denoiser parameter, defined once.

Each field carries a `ParamSpec` (its default, valid range or choices, a one-line help text and the
methods that use it). `make_denoiser`'s validation, the CLI flags, the app's sidebar widgets and the
trajectory and bench metadata are all built from these specs. A field left None takes its default
for the dataset at hand (`DenoiserParams.resolve`): k_min ~ N/20 and k_max ~ N/10, the proxy
resolution, and the mask threshold of the GoldDiff paper's table for that resolution.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, field, fields, replace

from ..core.stats import MASK_RULES
from .retrieval import BACKENDS

METHODS = ("optimal", "wiener", "pca", "golddiff", "hybrid")
GOLD = ("golddiff", "hybrid")  # the methods that retrieve a golden subset
LOCAL = ("pca", "golddiff", "hybrid")  # the methods that use the PCA-locality mask
POOL_MODES = ("random", "nearest", "auto")
SUBSET_MODES = ("schedule", "adaptive")
# Adaptive default: estimated one-step 1 - r^2 per sample and step (see denoise/adaptive.py).
TOLERANCE = 0.01
# Hybrid default: Wiener below this SNR. Measured on Fashion-MNIST (one step at the same x_t against
# the full-scan PCA-locality denoiser), Wiener's r^2 is 0.999 / 0.992 at SNR 0.0003 / 0.0015 (t =
# 900, 800) and falls to 0.965 at SNR 0.007, 0.87 by SNR 0.08; so only the first steps of a 10-step
# run go Gaussian.
SNR_SWITCH = 0.005


@dataclass(frozen=True)
class ParamSpec:
    name: str  # field name (the CLI flag is --name-with-dashes)
    kind: type  # int, float or str
    default: object  # value; None = scaled to the dataset (see DenoiserParams.resolve)
    help: str  # one line, shown by the CLI and as the sidebar tooltip
    methods: tuple[str, ...]  # the methods that use it
    choices: tuple | None = None  # valid values (str parameters)
    low: float | None = None  # smallest valid value (inclusive unless low_open)
    high: float | None = None  # largest valid value (None: unbounded or dataset-dependent)
    low_open: bool = False  # low itself is not allowed (temperature > 0)
    optional: bool = False  # None is a valid final value ("automatic")

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


def _p(name, kind, default, help, methods, **kw):
    return field(
        default=None if default is None else default,
        metadata={"spec": ParamSpec(name, kind, default, help, tuple(methods), **kw)},
    )


@dataclass(frozen=True)
class DenoiserParams:
    temperature: float | None = _p(
        "temperature",
        float,
        1.0,
        "posterior temperature tau: logits are divided by it (1 = the exact posterior)",
        METHODS,
        low=0.0,
        low_open=True,
    )
    mask_threshold: float | None = _p(
        "mask_threshold",
        float,
        None,
        "PCA-locality mask threshold: pixel n enters pixel m's posterior when "
        "|L[n,m]/L[n,n]| >= threshold x the max (paper: 0.02 MNIST, 0.03 CIFAR-10, 0.04 AFHQ "
        "64x64)",
        LOCAL,
        low=0.0,
        high=1.0,
    )
    mask_rule: str | None = _p(
        "mask_rule",
        str,
        "stable",
        "how the mask is built: stable (this project: degenerate pixels dropped, "
        "float64) or published (the official code: float32 SVD, global max)",
        LOCAL,
        choices=MASK_RULES,
    )
    k_min: int | None = _p(
        "k_min",
        int,
        None,
        "smallest golden subset k_t, reached at t = 0 (default ~N/20)",
        GOLD,
        low=1,
    )
    k_max: int | None = _p(
        "k_max",
        int,
        None,
        "largest golden subset k_t at high noise, and the proxy screen's output size "
        "(default ~N/10)",
        GOLD,
        low=1,
    )
    low_res: int | None = _p(
        "low_res",
        int,
        None,
        "proxy resolution of the coarse screen: images average-pooled to low_res x "
        "low_res (28->14, 32->16, 64->16)",
        GOLD,
        low=1,
    )
    pool: str | None = _p(
        "pool",
        str,
        "random",
        "coarse pool: random (published: m_t images drawn at random), nearest (screen "
        "all N), auto (random until the posterior's perplexity < k_t, then nearest)",
        GOLD,
        choices=POOL_MODES,
    )
    subset: str | None = _p(
        "subset",
        str,
        "schedule",
        "golden subset size: schedule (published: linear k_t from k_max to k_min) or adaptive "
        "(importance-sampled draws per sample until the estimated error < tolerance)",
        GOLD,
        choices=SUBSET_MODES,
    )
    tolerance: float | None = _p(
        "tolerance",
        float,
        TOLERANCE,
        "adaptive subset only: target estimated one-step 1 - r^2 of each sample against the "
        "exact posterior (smaller: more images, slower)",
        GOLD,
        low=1e-4,
        high=1.0,
    )
    backend: str | None = _p(
        "backend",
        str,
        "torch",
        "proxy search: torch (exact), faiss (exact flat index), faiss-ivf "
        "(approximate inverted lists)",
        GOLD,
        choices=BACKENDS,
    )
    nlist: int | None = _p(
        "nlist",
        int,
        None,
        "faiss-ivf only: number of inverted lists (default round(sqrt(N)))",
        GOLD,
        low=1,
        optional=True,
    )
    nprobe: int | None = _p(
        "nprobe",
        int,
        None,
        "faiss-ivf only: lists probed per query (default: enough to hold ~4 k_max "
        "screened points)",
        GOLD,
        low=1,
        optional=True,
    )
    snr_switch: float | None = _p(
        "snr_switch",
        float,
        SNR_SWITCH,
        "hybrid: the closed-form Wiener denoiser below this SNR, GoldDiff "
        "above (0.005: t = 999, 888, 777 of 10 steps)",
        ("hybrid",),
        low=0.0,
    )

    # ------------------------------------------------------------------ the specs

    @classmethod
    def specs(cls) -> tuple[ParamSpec, ...]:
        """One ParamSpec per field, in field order."""
        return tuple(f.metadata["spec"] for f in fields(cls))

    @classmethod
    def spec(cls, name: str) -> ParamSpec:
        return next(s for s in cls.specs() if s.name == name)

    @classmethod
    def names(cls, method: str | None = None) -> tuple[str, ...]:
        """Field names, or those `method` uses."""
        return tuple(s.name for s in cls.specs() if method is None or method in s.methods)

    @classmethod
    def from_mapping(cls, values: dict | None, method: str | None = None) -> "DenoiserParams":
        """Build from a dict (e.g. CLI or sidebar values). None values stay None (= default). A name
        that no method knows is rejected with the names `method` accepts."""
        values = dict(values or {})
        unknown = [k for k, v in values.items() if k not in cls.names() and v is not None]
        if unknown:
            valid = cls.names(method) if method in METHODS else cls.names()
            raise ValueError(
                f"Unknown parameter(s) {', '.join(unknown)}; valid ones"
                f"{f' for {method!r}' if method in METHODS else ''}: {', '.join(valid)}."
            )
        return cls(**{k: v for k, v in values.items() if k in cls.names()})

    # ------------------------------------------------------------------ defaults for a dataset

    @staticmethod
    def dataset_defaults(N: int, shape: tuple[int, int, int]) -> dict:
        """The dataset-dependent defaults: k_min ~ N/20, k_max ~ N/10 (the paper's ratio), the proxy
        resolution, and the mask threshold of the GoldDiff paper's table by resolution: 0.02 up to
        28x28 (MNIST, Fashion-MNIST), 0.03 from 32 (CIFAR-10), 0.04 from 64 (AFHQ); 0 for 2-D toy
        points (all-ones mask).
        """
        k_min = max(1, round(N / 20))
        H = int(shape[1])
        if H == 1:
            threshold = 0.0
        else:
            threshold = 0.04 if H >= 64 else 0.03 if H >= 32 else 0.02
        return dict(
            k_min=k_min,
            k_max=max(k_min, round(N / 10)),
            low_res=default_low_res(shape),
            mask_threshold=threshold,
        )

    def resolve(self, N: int, shape: tuple[int, int, int]) -> "DenoiserParams":
        """A copy with every None replaced by its default for a dataset of N images of `shape` (C,
        H, W)."""
        data = self.dataset_defaults(N, shape)
        fill = {}
        for s in self.specs():
            if getattr(self, s.name) is None and not s.optional:
                fill[s.name] = data[s.name] if s.default is None else s.default
        return replace(self, **fill)

    def used_by(self, method: str) -> dict:
        """{name: value} of the fields `method` uses (trajectory and bench metadata)."""
        return {k: v for k, v in asdict(self).items() if k in self.names(method)}

    # ------------------------------------------------------------------ validation

    def check_fields(self, methods: tuple[str, ...] | list[str]) -> None:
        """The checks that need no dataset, run before any data loads: each set field that one of
        `methods` uses against its spec, and k_min <= k_max. Raises ValueError."""
        for m in methods:
            if m not in METHODS:
                raise ValueError(f"Unknown method '{m}'; choose one of: {', '.join(METHODS)}.")
        for s in self.specs():
            v = getattr(self, s.name)
            if v is not None and any(m in s.methods for m in methods):
                _check_value(s, v)
        if self.k_min is not None and self.k_max is not None and self.k_min > self.k_max:
            raise ValueError(
                f"k_min={self.k_min} is larger than k_max={self.k_max}; make k_min <= k_max."
            )

    def validate(self, method: str, N: int, shape: tuple[int, int, int]) -> "DenoiserParams":
        """Check the fields `method` uses against their specs and each other; return the resolved,
        normalised params (whole numbers as int). Raises ValueError with one sentence saying what to
        change."""
        if method not in METHODS:
            raise ValueError(f"Unknown method '{method}'; choose one of: {', '.join(METHODS)}.")
        p = self.resolve(N, shape)
        clean = {}
        for s in self.specs():
            v = getattr(p, s.name)
            if method in s.methods and not (v is None and s.optional):
                v = _check_value(s, v)
            clean[s.name] = v
        p = replace(p, **clean)
        if method in GOLD:
            _check_subset_sizes(p, N, shape)
        return p


def default_low_res(shape: tuple[int, int, int]) -> int:
    """Proxy resolution as in the paper: 28 -> 14, 32 -> 16, 64 -> 16; halve other even sizes."""
    H = shape[1]
    if H >= 64 and H % 16 == 0:
        return 16
    return H // 2 if H % 2 == 0 else H


def _check_value(s: ParamSpec, v):
    """One field against its spec; returns it normalised
    (int for whole numbers). Raises ValueError."""
    if s.choices is not None:
        if v not in s.choices:
            what = {
                "pool": "pool mode",
                "backend": "search backend",
                "mask_rule": "mask rule",
                "subset": "subset mode",
            }.get(s.name, s.name)
            raise ValueError(f"Unknown {what} '{v}'; choose one of: {', '.join(s.choices)}.")
        return v
    if not isinstance(v, numbers.Real) or isinstance(v, bool):
        raise ValueError(f"{s.name}={v!r} must be a number.")
    if s.kind is int:
        if not (math.isfinite(v) and v == int(v)):
            raise ValueError(f"{s.name}={v!r} must be a whole number.")
        v = int(v)
        if s.low is not None and v < s.low:
            raise ValueError(f"{s.name}={v} must be at least {int(s.low)}.")
        return v
    v = float(v)
    if s.low_open and not (v > s.low and math.isfinite(v)):
        raise ValueError(
            f"{s.name}={v:g} must be a positive finite number (default {s.default:g})."
        )
    if (
        not math.isfinite(v)
        or (s.low is not None and v < s.low)
        or (s.high is not None and v > s.high)
    ):
        rng = (
            f"in [{s.low:g}, {s.high:g}]" if s.high is not None else f"a finite number >= {s.low:g}"
        )
        raise ValueError(f"{s.name}={v:g} must be {rng}.")
    return v


def _check_subset_sizes(p: DenoiserParams, N: int, shape: tuple[int, int, int]) -> None:
    """The cross-field rules of the golden subset: k_min <= k_max <= N, a proxy resolution that
    divides the image, and nlist / nprobe only with faiss-ivf."""
    if p.k_min > p.k_max:
        raise ValueError(f"k_min={p.k_min} is larger than k_max={p.k_max}; make k_min <= k_max.")
    if p.k_max > N:
        raise ValueError(
            f"k_max={p.k_max} is larger than the dataset's N={N}; choose k_max <= {N}."
        )
    _, H, W = shape
    lr = p.low_res
    if H % lr or W % lr or H // lr != W // lr:
        raise ValueError(
            f"Proxy resolution {lr} does not divide the {H}x{W} images; "
            f"choose a low_res that divides {H} (e.g. {H // 2 if H % 2 == 0 else H})."
        )
    for name in ("nlist", "nprobe"):
        if getattr(p, name) is not None and p.backend != "faiss-ivf":
            raise ValueError(
                f"{name} applies only to the 'faiss-ivf' backend; drop it or choose "
                f"backend 'faiss-ivf'."
            )
    if p.nlist is not None and p.nlist > N:
        raise ValueError(
            f"nlist={p.nlist} is larger than the dataset's N={N}; choose nlist <= {N} "
            f"(default round(sqrt(N)) = {max(1, round(math.sqrt(N)))})."
        )
