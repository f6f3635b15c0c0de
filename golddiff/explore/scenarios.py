"""The stories the Explorer tells, each as sidebar settings, the step and sample to look at, and two
or three sentences on what to notice, their numbers read off the finished run; and the glossary
of the words the captions use. Plain data and text: the pages apply it to their widgets."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from .galleries import missed, subset_missed


@dataclass(frozen=True)
class Scenario:
    title: str  # the button label
    settings: dict  # dataset, method, steps, n, seed
    params: dict = field(default_factory=dict)  # DenoiserParams fields that differ from defaults
    sample: int = 0  # 0-based sample to show
    t: int | None = None  # timestep to show (None: the first)
    story: Callable | None = None  # story(trajectory, sample) -> what to notice, read off the run

    def text(self, traj, sample: int | None = None) -> str:
        """What to notice, with the numbers of this run (`traj`, a finished Trajectory)."""
        b = self.sample if sample is None else sample
        return "" if self.story is None else self.story(traj, b)


def _at(traj, t: int):
    """The record of step t (the nearest grid step)."""
    return min(traj.records, key=lambda r: abs(int(r.t) - t))


def _steps(ts) -> str:
    ts = [str(int(t)) for t in ts]
    return "none" if not ts else ts[0] if len(ts) == 1 else ", ".join(ts[:-1]) + " and " + ts[-1]


def _missed(traj, b: int) -> list[int]:
    """The steps at which the Explorer warns that sample b's golden subset missed the posterior."""
    return [int(r.t) for r in traj.records if subset_missed(r, b)]


def _concentrates(traj, b: int) -> str:
    first, last = traj.records[0], traj.records[-1]
    below = [int(r.t) for r in traj.records
             if r.k_t is not None and float(r.perplexity[b]) < r.k_t]
    p0 = float(first.perplexity[b])
    return (f"Scrub from left to right. The perplexity falls from {p0:,.0f} images at "
            f"t = {first.t} to {float(last.perplexity[b]):.1f} at t = {last.t}, while "
            f"GoldDiff's subset k_t goes only from {first.k_t} to {last.k_t}: from t = "
            f"{below[0] if below else last.t} on, the posterior lives on fewer images than the "
            "subset holds.")


def _pool_misses(traj, b: int) -> str:
    r = _at(traj, 222)
    marked = missed(traj, traj.records.index(r), b)
    p = float(r.perplexity[b])
    where = (f"sits on a single image (perplexity {p:.2f})" if p < 1.5
             else f"spreads over about {p:.0f} images (perplexity)")
    return (f"At t = {r.t} the exact posterior of sample {b + 1} {where}, but the random pool of "
            f"m_t images did not draw them: W_S is {float(r.captured_mass[b]):.3f}"
            + (" and the exact top image is marked MISSED" if int(r.top_idx[b, 0]) in marked
               else "")
            + f". Over the run, the subset misses a narrow posterior at t = "
            f"{_steps(_missed(traj, b))}.")


def _auto_fixes(traj, b: int) -> str:
    screened = [r for r in traj.records if r.pool_nearest is not None and bool(r.pool_nearest[b])]
    where = ", ".join(f"{float(r.captured_mass[b]):.2f} at t = {r.t}" for r in screened[:3])
    return ("Same noise, pool = auto: once the posterior's perplexity falls below k_t "
            f"(from t = {screened[0].t if screened else '-'} on) the pool screens all N images "
            f"and S_t catches the posterior: for sample {b + 1} W_S is {where or '-'}. Misses "
            f"left: {_steps(_missed(traj, b))}.")


def _memorizes(traj, b: int) -> str:
    r = traj.records[-1]
    return ("The exact all-N posterior collapses onto one training image: at t = "
            f"{r.t} its perplexity is {float(r.perplexity[b]):.2f} and its top image holds "
            f"{float(r.top_w[b, 0]):.3f} of the weight, so the sample is a copy (the memorization "
            "check below finds it). Compare with golddiff, whose per-pixel posteriors mix images.")


def _gaussian(traj, b: int) -> str:
    wiener = [int(r.t) for r in traj.records if r.k_t is None]
    r = traj.records[0]
    return (f"At high noise the posterior spreads over nearly all N images (perplexity "
            f"{float(r.perplexity[b]):,.0f} at t = {r.t}), so the closed-form Gaussian (Wiener) "
            "denoiser is enough: hybrid uses it while the SNR is below its switch (here t = "
            f"{_steps(wiener)}, no golden subset) and GoldDiff after that. The Gaussian regime "
            "page shows where the two part ways.")


_BASE = dict(dataset="mnist-5k", method="golddiff", steps=10, n=4, seed=0)

SCENARIOS = (
    Scenario("The posterior concentrates", _BASE, t=555, story=_concentrates),
    Scenario("The random pool misses", _BASE, {"pool": "random"}, t=222, story=_pool_misses),
    Scenario("Pool auto fixes it", _BASE, {"pool": "auto"}, t=222, story=_auto_fixes),
    Scenario("Optimal memorizes", dict(_BASE, method="optimal"), t=0, story=_memorizes),
    Scenario("The Gaussian regime", dict(_BASE, method="hybrid"), t=999, story=_gaussian),
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
    "m_t": "coarse pool: how many training images GoldDiff screens at this step (under the "
    "published schedule a random pool, growing as the noise falls; under local the candidates "
    "its quadrant or patch screens found, per sample).",
    "k_t": "golden subset size: how many it keeps and averages (S_t); under the published "
    "schedule shrinking from k_max to k_min, under adaptive and local chosen per sample and step "
    "(local also keeps the images its previous step's posterior weighed, so k_t can exceed m_t).",
    "W_S": "captured mass: the share of the exact posterior weight (over all N) inside S_t. "
    "Near k_t/N while the posterior is flat, 1 when S_t holds the images that matter.",
    "local / global weight": "local: the mean over pixels of the weight each pixel's own "
    "posterior gives an image; global: the one exact posterior over whole images.",
}
