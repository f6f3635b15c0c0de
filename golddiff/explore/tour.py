"""The Explorer's guided tour ("lecture mode"): five stops that tell the story of one run, each a
step to show and one or two sentences whose numbers are read off that run's records. Plain
functions: records in, stops out; never imports streamlit."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .galleries import missed_floor, subset_missed, subset_mode, subset_size

SINGLE = 1.5  # perplexity below this: one image holds nearly all the weight
NARROW = 0.1  # share of N below which the posterior has clearly concentrated
COPY = 0.25  # a final sample nearer than this share of the typical gap is a near-copy


@dataclass(frozen=True)
class Stop:
    title: str
    step: int  # index into traj.records: the step the stop shows
    text: str


def _first(traj, test) -> int | None:
    return next((s for s, r in enumerate(traj.records) if test(r)), None)


def _flat(traj, b: int) -> Stop:
    r = traj.records[0]
    return Stop("A flat posterior", 0, (
        f"At t = {r.t} (SNR {r.snr:.1g}) noise hides the image: the exact posterior spreads "
        f"over about {float(r.perplexity[b]):,.0f} of the N = {r.N:,} training images "
        "(perplexity), so all of them are about equally likely"
        + (": this step's guess $\\hat x_0$ is the closed-form Gaussian (Wiener) one, from the "
           "data's mean and covariance alone, which at this noise is what a blur of them all "
           "comes to." if r.method == "wiener" else " and the guess $\\hat x_0$ is a blur of many.")
    ))


def _concentrates(traj, b: int) -> Stop:
    N = traj.records[0].N
    s = _first(traj, lambda r: float(r.perplexity[b]) < NARROW * N)
    s = len(traj.records) - 1 if s is None else s
    r = traj.records[s]
    text = (f"By t = {r.t} the posterior has narrowed to about {float(r.perplexity[b]):,.0f} "
            f"images of {N:,}")
    if r.subset_idx is not None:
        k = subset_size(r, b)
        text += (f", while GoldDiff's subset still keeps k_t = {k:,}" if k > float(r.perplexity[b])
                 else f", and GoldDiff's subset keeps k_t = {k:,}")
    one = _first(traj, lambda q: float(q.perplexity[b]) < SINGLE)
    if one is not None:
        text += (f"; at t = {traj.records[one].t} one image holds nearly all the weight "
                 f"(perplexity {float(traj.records[one].perplexity[b]):.2f})")
    return Stop("The posterior concentrates", s, text + ".")


def _pool(traj, b: int) -> Stop | None:
    """The first step where S_t missed the posterior; else the first where S_t held it while
    the posterior was narrower than k_t; None without a golden subset."""
    s = _first(traj, lambda r: subset_missed(r, b))
    local = subset_mode(traj) == "local"
    if s is not None and local:
        r = traj.records[s]
        ppl = f"{float(r.perplexity[b]):.3g}"
        return Stop("The local subset and the whole-image posterior", s, (
            f"At t = {r.t} the whole-image posterior sits on about "
            f"{ppl} image{'' if ppl == '1' else 's'}, "
            f"yet the local subset of k_t = {subset_size(r, b):,} holds only W_S = "
            f"{float(r.captured_mass[b]):.3f} of its weight: it keeps the images each pixel's own "
            "posterior weighs, which need not match the whole image. The Compare page's one-step "
            "r^2 says whether the guess suffers."
        ))
    if s is not None:
        r = traj.records[s]
        return Stop("The random pool misses", s, (
            f"At t = {r.t} the posterior sits on about {float(r.perplexity[b]):.3g} "
            f"image{'' if f'{float(r.perplexity[b]):.3g}' == '1' else 's'}, "
            f"fewer than k_t = {subset_size(r, b):,}, yet $S_t$ holds only W_S = "
            f"{float(r.captured_mass[b]):.3f} of its weight: the pool of m_t = {r.m_t:,} images "
            "did not draw them, so GoldDiff averages others here. Pool = auto screens all N "
            "once the posterior is this narrow."
        ))
    s = _first(traj, lambda r: missed_floor(r, b) is not None)
    if s is None:
        return None
    r = traj.records[s]
    return Stop("The subset holds the posterior", s, (
        f"From t = {r.t} on the posterior is narrower than $S_t$ (perplexity "
        f"{float(r.perplexity[b]):,.0f} < k_t = {subset_size(r, b):,}), and $S_t$ holds W_S = "
        f"{float(r.captured_mass[b]):.3f} of its weight: "
        + ("the local screen kept the images that matter." if local
           else "the pool drew the images that matter.")
    ))


def _pixels(traj, b: int, held_at: Callable[[int], int] | None) -> Stop | None:
    """Per-pixel posteriors at the first step where the global one has settled on about one
    image (else the last step); held_at(step): how many images hold a majority of some pixel."""
    if all(r.pixel_entropy is None for r in traj.records):
        return None
    s = _first(traj, lambda r: float(r.perplexity[b]) < SINGLE and r.pixel_entropy is not None)
    if s is None:
        s = max(i for i, r in enumerate(traj.records) if r.pixel_entropy is not None)
    r = traj.records[s]
    text = (
        f"At t = {r.t} the whole-image posterior has settled (H = {float(r.entropy[b]):.2f} nats),"
        f" but each pixel weighs images by its own neighbourhood and still averages H(m) = "
        f"{float(r.pixel_entropy_mean[b]):.2f} nats: where many images agree, as on an empty "
        "background, they share the weight (ties) without changing the guess."
    )
    held = None if held_at is None else held_at(s)
    if held:
        text += (f" {held:,} training images each hold a majority of some pixel: see *Where "
                 "each pixel comes from*.")
    return Stop("Per-pixel posteriors and ties", s, text)


def _final(traj, b: int, nn: tuple[int, float] | None, gap: float | None) -> Stop:
    s = len(traj.records) - 1
    r = traj.records[s]
    text = f"At t = {r.t} the sample is done."
    if nn is not None and gap:
        i, d = nn
        verdict = ("a near-copy of it" if d < COPY * gap else
                   "no copy: look at the two side by side to tell a new image from a blur")
        text += (f" Its nearest training image, #{i}, lies {d:.3f} away (RMS, pixels in 0..1) "
                 f"against a typical {gap:.3f} between a training image and its nearest other "
                 f"one: {verdict}.")
    return Stop("The final image", s, text)


def stops(
    traj, sample: int, nn: tuple[int, float] | None = None, gap: float | None = None,
    held_at: Callable[[int], int] | None = None,
) -> list[Stop]:
    """The tour of one run for one sample: a flat posterior; where it concentrates; the pool's
    miss (or catch; GoldDiff only); per-pixel posteriors and ties (methods with them); the final
    image against its nearest training image nn = (index, RMS distance) and the typical gap."""
    out = [_flat(traj, sample), _concentrates(traj, sample), _pool(traj, sample),
           _pixels(traj, sample, held_at), _final(traj, sample, nn, gap)]
    return [s for s in out if s is not None]

