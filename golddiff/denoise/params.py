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

from ..core.schedule import NoiseSchedule
from ..core.stats import MASK_RULES

METHODS = ("optimal", "wiener", "pca", "golddiff", "hybrid")
GOLD = ("golddiff", "hybrid")  # the methods that retrieve a golden subset
LOCAL = ("pca", "golddiff", "hybrid")  # the methods that use the PCA-locality mask
POOL_MODES = ("random", "nearest", "auto")
SUBSET_MODES = ("schedule", "adaptive", "local")
BACKENDS = ("torch", "faiss", "faiss-ivf")  # proxy search backends (denoise/retrieval.py)
APPROXIMATE = ("faiss-ivf",)  # the approximate ones, which take nlist and nprobe
FLOAT32_MAX = 3.4028234663852886e38  # the largest finite float32
NOISE_BOUND = 8.0  # |eps| per pixel in the temperature floor: P(|N(0, 1)| > 8) ~ 1e-15
# Adaptive default: estimated one-step 1 - r^2 per sample and step (see denoise/adaptive.py).
TOLERANCE = 0.01
# Hybrid default: Wiener below this SNR. Measured on Fashion-MNIST (one step at the same x_t against
# the full-scan PCA-locality denoiser), Wiener's r^2 is 0.999 / 0.992 at SNR 0.0003 / 0.0015 (t =
# 900, 800) and falls to 0.965 at SNR 0.007, 0.87 by SNR 0.08; so only the first steps of a 10-step
# run go Gaussian.
SNR_SWITCH = 0.005


@dataclass(frozen=True)
class ParamSpec:
    """One parameter: its default, its valid range or choices, its help text and its users.
    `check` is the one range check: the library, the CLI, the app's link parser and its widgets
    all call it."""

    name: str  # field name (the CLI flag is --name-with-dashes)
    kind: type  # int, float or str
    default: object  # value; None = scaled to the dataset (see DenoiserParams.resolve)
    help: str  # one line, shown by the CLI and as the sidebar tooltip
    methods: tuple[str, ...] = ()  # the methods that use it
    choices: tuple | None = None  # valid values (str parameters)
    low: float | None = None  # smallest valid value (None: unbounded)
    high: float | None = None  # largest valid value (None: unbounded or dataset-dependent)
    low_open: bool = False  # low itself is not allowed (temperature > 0)
    high_open: bool = False  # high itself is not allowed
    optional: bool = False  # None is a valid final value ("automatic")
    noun: str | None = None  # what one choice is called in a sentence ("pool mode")

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def span(self) -> str:
        """The valid values in words: "from 1 to 64", "in (0, 1]", "at least 1", "above 0"."""
        if self.choices is not None:
            return "one of: " + ", ".join(map(str, self.choices))
        lo, hi = _num(self.low), _num(self.high)
        if self.low is not None and self.high is not None:
            if self.kind is int or not (self.low_open or self.high_open):
                return f"from {lo} to {hi}" if self.kind is int else f"in [{lo}, {hi}]"
            return f"in {'(' if self.low_open else '['}{lo}, {hi}{')' if self.high_open else ']'}"
        if self.low is not None:
            return f"{'above' if self.low_open else 'at least'} {lo}"
        if self.high is not None:
            return f"{'below' if self.high_open else 'at most'} {hi}"
        return ""

    def requirement(self, v) -> str | None:
        """What a set value v fails to be, in the words that follow "must be" ("a whole number
        from 1 to 64"); None when v is valid."""
        if self.choices is not None:
            return None if v in self.choices else self.span()
        if not isinstance(v, numbers.Real) or isinstance(v, bool):
            return f"a number {self.span()}".rstrip()
        if not math.isfinite(v):
            return f"a finite number {self.span()}".rstrip()
        if self.kind is int and v != int(v):
            return f"a whole number {self.span()}".rstrip()
        below = self.low is not None and (v <= self.low if self.low_open else v < self.low)
        above = self.high is not None and (v >= self.high if self.high_open else v > self.high)
        return self.span() if below or above else None

    def problem(self, v, label: str | None = None) -> str | None:
        """The one sentence saying why v is not a valid value (None: it is). label: the name a
        form shows ("Samples"); the sentence then reads "<label> must be ...; <v> is not."."""
        if v is None:
            return None if self.optional else f"{label or self.name} is empty; enter a value."
        need = self.requirement(v)
        if need is None:
            return None
        if self.choices is not None and label is None:
            return f"Unknown {self.noun or self.name} {v!r}; choose {need}."
        shown = f"{v:,}" if isinstance(v, numbers.Real) and not isinstance(v, bool) else repr(v)
        if label:
            return f"{label} must be {need}; {shown} is not."
        return f"{self.name}={shown} must be {need}."

    def check(self, v, label: str | None = None):
        """v if valid, normalised (int for a whole number, float otherwise); else ValueError with
        `problem`'s sentence."""
        why = self.problem(v, label)
        if why:
            raise ValueError(why)
        if v is None or self.choices is not None:
            return v
        return int(v) if self.kind is int else float(v)

    def parse(self, raw: str):
        """The value a text spells (a link's), or ValueError with a clause saying why not ("it is
        not a whole number", "it must be from 1 to 64")."""
        v = raw
        if self.choices is None:
            try:
                v = int(raw) if self.kind is int else float(raw)
            except ValueError:
                raise ValueError(
                    f"it is not a {'whole ' if self.kind is int else ''}number"
                ) from None
        need = self.requirement(v)
        if need is not None:
            raise ValueError(f"it must be {need}")
        return v

    def with_range(self, **bounds) -> "ParamSpec":
        """A copy with dataset-dependent bounds filled in (low, high, ...)."""
        return replace(self, **bounds)


def _num(v) -> str:
    """A number as a sentence shows it: whole numbers with thousands separators, others in %g."""
    if v is None:
        return ""
    if isinstance(v, numbers.Integral) or (math.isfinite(v) and v == int(v) and abs(v) < 1e15):
        return f"{int(v):,}"
    return f"{v:.3g}"


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
        noun="mask rule",
    )
    k_min: int | None = _p(
        "k_min",
        int,
        None,
        "smallest golden subset k_t, reached at t = 0 (default ~N/20); used by the schedule "
        "subset only (adaptive and local size their subsets themselves)",
        GOLD,
        low=1,
    )
    k_max: int | None = _p(
        "k_max",
        int,
        None,
        "schedule: the largest golden subset k_t (at high noise) and the proxy screen's output "
        "size (default ~N/10); adaptive: at most 4 k_max draws per sample; local: the scale of "
        "every size (k_max/5 per quadrant, k_max/150 per anchor, k_max/10 tail images, k_max/9 "
        "per 3x3 patch from SNR 5; see subset)",
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
        noun="pool mode",
    )
    subset: str | None = _p(
        "subset",
        str,
        "schedule",
        "golden subset size: schedule (published: linear k_t from k_max to k_min), adaptive "
        "(importance-sampled draws per sample until the estimated error < tolerance) or local "
        "(the Wiener closed form below SNR 0.005, a uniform draw of k_max/4 up to SNR 0.02, "
        "then each proxy quadrant's nearest images refined per anchor pixel, plus a weighted "
        "uniform tail below SNR 1, and from SNR 5 the nearest on 3x3 proxy patches as they are, "
        "fewer at the last step; a screened step before the last also keeps the images its "
        "previous screened step weighed; "
        "sizes follow k_max, k_min is unused)",
        GOLD,
        choices=SUBSET_MODES,
        noun="subset mode",
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
        noun="search backend",
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
            self.check_method(m)
        for s in self.specs():
            v = getattr(self, s.name)
            if v is not None and any(m in s.methods for m in methods):
                s.check(v)
        self.check_k_order(self.k_min, self.k_max)

    def validate(
        self, method: str, N: int, shape: tuple[int, int, int], sigma2_min: float | None = None
    ) -> "DenoiserParams":
        """Check the fields `method` uses against their specs (with the dataset's bounds, see
        `dataset_specs`) and each other; return the resolved, normalised params (whole numbers as
        int). Raises ValueError with one sentence saying what to change."""
        self.check_method(method)
        p = self.resolve(N, shape)
        specs = self.dataset_specs(N, shape, sigma2_min)
        clean = {}
        for s in self.specs():
            v = getattr(p, s.name)
            if method in s.methods:
                v = specs[s.name].check(v)
            clean[s.name] = v
        p = replace(p, **clean)
        if method in GOLD:
            p.check_k_order(p.k_min, p.k_max)
            p.check_k_max(p.k_max, N)
            p.proxy_factor(shape, p.low_res)
            p.check_ivf(p.backend, p.nlist, p.nprobe)
            p.check_nlist(p.nlist, N)
        return p

    @classmethod
    def dataset_specs(
        cls, N: int, shape: tuple[int, int, int], sigma2_min: float | None = None
    ) -> dict[str, ParamSpec]:
        """{name: spec} with the bounds a dataset of N images of `shape` sets: the temperature's
        floor (`temperature_floor`); the other bounds do not depend on the data."""
        specs = {s.name: s for s in cls.specs()}
        floor = temperature_floor(N, shape, sigma2_min)
        specs["temperature"] = specs["temperature"].with_range(low=floor, low_open=False)
        return specs

    @staticmethod
    def temperature_floor(N: int, shape: tuple, sigma2_min: float | None = None) -> float:
        """The smallest valid temperature on a dataset (module-level `temperature_floor`)."""
        return temperature_floor(N, shape, sigma2_min)

    # ------------------------------------------------------------------ cross-field rules
    # Each rule is written once, here; validate, the retrieval code and the app call these.

    @staticmethod
    def check_method(name: str) -> str:
        if name not in METHODS:
            raise ValueError(f"Unknown method '{name}'; choose one of: {', '.join(METHODS)}.")
        return name

    @staticmethod
    def check_k_order(k_min: int | None, k_max: int | None) -> None:
        """k_min <= k_max (either None: nothing to compare yet)."""
        if k_min is not None and k_max is not None and k_min > k_max:
            raise ValueError(f"k_min={k_min} is larger than k_max={k_max}; make k_min <= k_max.")

    @staticmethod
    def check_k_max(k_max: int, N: int) -> None:
        """The golden subset holds at most the N images there are."""
        if k_max > N:
            raise ValueError(
                f"k_max={k_max} is larger than the dataset's N={N}; choose k_max <= {N}."
            )

    @staticmethod
    def proxy_factor(shape: tuple[int, int, int], low_res: int) -> int:
        """The pooling factor H / low_res of (C, H, W) images to the proxy resolution; the proxy
        must tile the image exactly (low_res divides H and W with the same factor)."""
        _, H, W = shape
        if low_res < 1 or H % low_res or W % low_res or H // low_res != W // low_res:
            raise ValueError(
                f"Proxy resolution {low_res} does not divide the {H}x{W} images; "
                f"choose a low_res that divides {H} (e.g. {H // 2 if H % 2 == 0 else H})."
            )
        return H // low_res

    @staticmethod
    def check_ivf(backend: str, nlist: int | None, nprobe: int | None) -> None:
        """nlist and nprobe belong to the approximate inverted-list backend only."""
        for name, v in (("nlist", nlist), ("nprobe", nprobe)):
            if v is not None and backend not in APPROXIMATE:
                raise ValueError(
                    f"{name} applies only to the 'faiss-ivf' backend; drop it or choose "
                    f"backend 'faiss-ivf'."
                )

    @staticmethod
    def check_nlist(nlist: int | None, N: int) -> None:
        """An inverted-list index has at most N lists (one image each)."""
        if nlist is not None and nlist > N:
            raise ValueError(
                f"nlist={nlist} is larger than the dataset's N={N}; choose nlist <= {N} "
                f"(default round(sqrt(N)) = {default_nlist(N)})."
            )


def default_nlist(N: int) -> int:
    """IVF lists: round(sqrt(N)) (245 for N = 60,000: about 245 proxies per list)."""
    return max(1, round(math.sqrt(N)))


def default_low_res(shape: tuple[int, int, int]) -> int:
    """Proxy resolution as in the paper: 28 -> 14, 32 -> 16, 64 -> 16; halve other even sizes."""
    H = shape[1]
    if H >= 64 and H % 16 == 0:
        return 16
    return H // 2 if H % 2 == 0 else H


def temperature_floor(
    N: int, shape: tuple[int, int, int], sigma2_min: float | None = None
) -> float:
    """The smallest temperature tau whose softmax sums stay finite in float32 on this dataset.

    The logits are logit_i = -||x_t - sqrt(abar) x_i||^2 / (2 sigma_t^2 tau) (sigma_t^2 = 1 -
    abar_t; for PCA locality the mask keeps a part of the same sum). Pixels lie in [-1, 1] and
    x_t = sqrt(abar) x0 + sigma_t eps with x0 in [-1, 1] and |eps| <= NOISE_BOUND per pixel, so
    each pixel's |x_t[n] - sqrt(abar) x_i[n]| <= 2 + NOISE_BOUND, and over D pixels
        |logit_i| <= L = (2 + NOISE_BOUND)^2 D / (2 sigma2_min tau),
    with sigma2_min the smallest sigma_t^2 of the schedule (beta_1 = 1e-4 at t = 0). The
    softmax (`core.posterior.StreamingSoftmax`) sums at most N terms of e_i (logit_i - mx), with
    e_i <= 1 and |logit_i - mx| <= 2 L, and folding two such sums adds (mx - mx') s0 <= 2 N L;
    all stay finite when 4 N L <= FLOAT32_MAX, that is
        tau >= 4 N (2 + NOISE_BOUND)^2 D / (2 sigma2_min FLOAT32_MAX).
    Above the floor every diagnostic is finite; as tau falls toward it the posterior tends to
    the nearest image (tau -> 0 is the argmax), so nothing is lost by refusing smaller values.
    """
    D = math.prod(shape)
    if sigma2_min is None:
        sigma2_min = 1.0 - NoiseSchedule().abar(0)
    logit_bound = (2.0 + NOISE_BOUND) ** 2 * D / (2.0 * sigma2_min)  # L at tau = 1
    return 4.0 * N * logit_bound / FLOAT32_MAX
