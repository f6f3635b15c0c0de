"""The stories the Explorer tells, each as sidebar settings, the step and sample to look at, and two
or three sentences on what to notice; and the glossary of the words the captions use. Plain data:
the pages apply it to their widgets."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Scenario:
    title: str  # the button label
    settings: dict  # dataset, method, steps, n, seed
    params: dict = field(default_factory=dict)  # DenoiserParams fields that differ from defaults
    sample: int = 0  # 0-based sample to show
    t: int | None = None  # timestep to show (None: the first)
    text: str = ""  # what to notice


_BASE = dict(dataset="mnist-5k", method="golddiff", steps=10, n=4, seed=0)

SCENARIOS = (
    Scenario(
        "The posterior concentrates",
        _BASE,
        t=555,
        text="Scrub from left to right. The perplexity falls from about N = 5,000 images at "
        "t = 999 to 1 at t = 0, while GoldDiff's subset k_t only halves (500 to 252): after "
        "t = 555 the posterior lives on far fewer images than the subset holds.",
    ),
    Scenario(
        "The random pool misses",
        _BASE,
        {"pool": "random"},
        sample=0,
        t=222,
        text="At t = 222 the exact posterior of sample 1 sits on a single image (perplexity 1), "
        "but the random pool of m_t images did not draw it: W_S is about 0 and the exact top "
        "image is marked MISSED. GoldDiff averages the wrong images here and at t = 111.",
    ),
    Scenario(
        "Pool auto fixes it",
        _BASE,
        {"pool": "auto"},
        sample=0,
        t=222,
        text="Same noise, pool = auto: once the posterior's perplexity falls below k_t (from "
        "t = 555 on) the pool screens all N images and S_t catches the posterior: for sample 1 "
        "W_S is 0.74 at t = 555, 0.98 at t = 444 and 1 at t = 222, where the random pool had "
        "about 0.",
    ),
    Scenario(
        "Optimal memorizes",
        dict(_BASE, method="optimal"),
        t=0,
        text="The exact all-N posterior collapses onto one training image: at the last step the "
        "memorization check finds a distance of about 0, the sample is a copy. Compare with "
        "golddiff, whose per-pixel posteriors mix images.",
    ),
    Scenario(
        "The Gaussian regime",
        dict(_BASE, method="hybrid"),
        t=999,
        text="At high noise the posterior spreads over nearly all N images, so the closed-form "
        "Gaussian (Wiener) denoiser is enough: hybrid uses it while the SNR is below its switch "
        "(t = 999, 888, 777, no golden subset) and GoldDiff after that. The Gaussian regime page "
        "shows where the two part ways.",
    ),
)

GLOSSARY = {
    "abar (alpha-bar)": "abar_t = prod (1 - beta_s): the share of the clean image left in x_t. "
    "1 at t = 0, near 0 at t = 999.",
    "SNR": "signal-to-noise ratio abar / (1 - abar). Charts put it on a log axis, noisy (left) to "
    "clean (right).",
    "posterior w_i": "how likely training image i is to have produced x_t; the guess x0_hat is "
    "the w-weighted average of the training images.",
    "tau (temperature)": "logits are divided by tau; 1 is the exact posterior, larger spreads it.",
    "perplexity": "exp(entropy): the effective number of images the exact posterior spreads over "
    "(N when flat, 1 when one image holds all the weight).",
    "ESS": "effective sample size 1 / sum w^2, another count of the images that matter.",
    "k_0.99": "the fewest images that hold 99% of the posterior weight.",
    "m_t": "coarse pool: how many training images GoldDiff screens at this step (random by "
    "default, growing as the noise falls).",
    "k_t": "golden subset size: how many it keeps and averages (S_t), shrinking from k_max to "
    "k_min.",
    "W_S": "captured mass: the share of the exact posterior weight (over all N) inside S_t. "
    "Near k_t/N while the posterior is flat, 1 when S_t holds the images that matter.",
    "local / global weight": "local: the mean over pixels of the weight each pixel's own "
    "posterior gives an image; global: the one exact posterior over whole images.",
}
