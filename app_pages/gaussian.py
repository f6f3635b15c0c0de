"""Gaussian-regime page: the Wiener denoiser, the closed-form Gaussian PF-ODE, where the linear
score is enough, and teleporting past the first DDIM steps. The page: the Config, the cached
demos, then one render function per section; the teleport run sits behind its button. UI only:
the math is in golddiff.explore.gaussian."""

import numpy as np
import streamlit as st

from app_pages import runs
from app_pages.config import require_config
from app_pages.errors import show_error
from app_pages.resources import get_corpus_cached, get_dataset
from app_pages.widgets import chart_config
from golddiff import NoiseSchedule
from golddiff.explore import gaussian
from golddiff.explore import lesson_figures as figs
from golddiff.explore.style import duration

SCHEDULE = NoiseSchedule()
BUTTON = "Teleport and finish with GoldDiff"
INTRO = (
    "Replace the training set by one Gaussian $\\mathcal N(\\mu, \\Sigma)$ with the same mean and "
    "covariance and the posterior mean becomes linear, the **Wiener filter**; the probability-flow "
    "ODE then has a closed-form solution, so a sampler can *teleport* from $x_T$ to any $t$ in one "
    "matrix product (Wang & Vastola). At high noise the real posterior is close to this Gaussian "
    "one; as the noise drops it concentrates on a few training images and the linear picture "
    "breaks down."
)


@st.cache_data(show_spinner="Comparing the Gaussian and the exact posterior mean...", max_entries=8)
def cached_gap(dataset: str, device: str, seed: int, tau: float) -> dict:
    return gaussian.wiener_gap(
        get_dataset(dataset), list(range(0, SCHEDULE.T, 50)), n=16, seed=seed, tau=tau,
        device=device,
    )


@st.cache_data(show_spinner=False, max_entries=8)
def cached_demo(dataset: str, device: str, steps: int, n: int, seed: int) -> dict:
    return gaussian.gaussian_demo(get_dataset(dataset), steps, n, seed, device=device)


def tiles(x, shape, px: int = 56):
    return figs.tile(x.reshape(shape), px=px)


def trajectory(demo: dict, shape, steps: int) -> None:
    st.subheader("1. Wiener denoiser and the closed-form trajectory")
    st.caption(f"Sample 1 of the batch at t = {', '.join(map(str, demo['ts']))} (left to right).")
    for k, label in (
        ("closed_x", "exact Gaussian ODE: x_t"),
        ("ddim_x", "DDIM with the Wiener denoiser: x_t"),
        ("ddim_x0", "Wiener x0_hat at each step"),
    ):
        strip = tiles(np.stack([x[0] for x in demo[k]]), shape, px=64)
        st.image(strip, width=strip.shape[1], caption=label)
    c = st.columns(2)
    c[0].image(tiles(demo["ddim_sample"], shape), caption="DDIM + Wiener: final samples")
    c[1].image(tiles(demo["closed_sample"], shape), caption="closed-form ODE endpoint (t = 0)")
    st.caption(
        f"r² of the DDIM samples against the closed-form endpoint: {demo['r2']:.4f} ({steps} "
        "steps; it approaches 1 as the steps grow and the DDIM discretization error vanishes)."
    )


def linear_score(cfg, gap: dict) -> int:
    """Where the Wiener estimate meets the exact posterior mean; returns the chosen t_skip."""
    st.subheader("2. Where is the linear score enough?")
    ts_all = SCHEDULE.timesteps(cfg.steps)
    if st.session_state.get("gauss_tskip") not in ts_all:
        st.session_state["gauss_tskip"] = ts_all[min(len(ts_all) - 1, max(1, len(ts_all) // 4))]
    left, right = st.columns([3, 2])
    t_skip = right.select_slider(
        "teleport to t_skip (left: pure noise, right: clean)", options=ts_all, key="gauss_tskip",
        help="a DDIM timestep; the closed form replaces every step before it",
    )
    switch = cfg.params["snr_switch"]
    left.plotly_chart(
        figs.wiener_gap_figure(gap, switch, SCHEDULE.snr(t_skip)),
        key="gauss_gap", config=chart_config("gauss_gap"),
    )
    right.markdown(
        "x_t here is a noised training image, $\\sqrt{\\bar\\alpha_t}x_i + \\sigma_t\\varepsilon$ "
        "(16 of them). Left of the plot (pure noise) the Wiener estimate equals the exact "
        "posterior mean ($r^2 \\approx 1$) while the posterior still spreads over most of the data "
        "(perplexity / N near 1). Where the posterior concentrates, the two part ways. At the "
        "clean end both return about $x_t$ itself, so they meet again. The hybrid denoiser uses "
        f"Wiener below SNR {switch:.3g} (orange line); teleporting to t = {t_skip} (SNR "
        f"{SCHEDULE.snr(t_skip):.3g}, blue line) trusts the Gaussian up to there."
    )
    return t_skip


def teleport_numbers(o: dict) -> None:
    """Time and calls of the run from T against the teleported one, and their agreement."""
    m = st.columns(4)
    saved = o["calls_full"] - o["calls_teleport"]
    m[0].metric(
        "GoldDiff from T", duration(o["seconds_full"]), help=f"{o['calls_full']} denoiser calls"
    )
    m[1].metric(
        f"teleport to {o['t_skip']} + GoldDiff",
        duration(o["seconds_teleport"]),
        # a saving only from calls really skipped, at their own measured cost
        delta=f"{duration(o['seconds_saved'])} saved in {saved} skipped calls"
        if saved > 0 else None,
        delta_color="normal",
        help=f"{o['calls_teleport']} denoiser calls; the closed-form jump took "
        f"{duration(o['seconds_jump'])}",
    )
    m[2].metric(
        "denoiser calls saved", saved,
        help=f"the skipped calls cost this much in the run from T: {duration(o['seconds_saved'])}",
    )
    m[3].metric("r² of teleported vs full", f"{o['r2']:.3f}", help=f"MSE {o['mse']:.5f}")
    st.caption(
        "The time saved is the measured cost of the high-noise GoldDiff calls the teleport "
        "skipped (none when t_skip is the first step); run-to-run timing noise makes the two "
        "totals differ a little even then. The closed-form jump itself is one matrix product."
    )


def teleport_pictures(o: dict, shape) -> None:
    c = st.columns(3)
    c[0].image(tiles(o["full"], shape), caption="GoldDiff from T")
    c[1].image(
        tiles(o["x_skip"], shape), clamp=True, caption=f"teleported state x_t at t = {o['t_skip']}"
    )
    c[2].image(tiles(o["teleported"], shape), caption="teleport + GoldDiff")
    names = ("GoldDiff from T", "teleport + GoldDiff")
    st.plotly_chart(
        figs.time_saved(
            dict(zip(names, (o["seconds_full"], o["seconds_teleport"]))),
            dict(zip(names, (o["calls_full"], o["calls_teleport"]))),
        ),
        key="gauss_time", config=chart_config("gauss_time"),
    )


cfg = require_config("The Gaussian regime", INTRO)
st.latex(
    r"\hat x_0 = \mu + U\,\mathrm{diag}(s_k)\,U^\top\!\Big(\tfrac{x_t}{\sqrt{\bar\alpha_t}} - \mu"
    r"\Big),\quad s_k = \frac{\bar\alpha_t\lambda_k}{\bar\alpha_t\lambda_k + 1 - \bar\alpha_t};"
    r"\qquad u_k^\top\big(x_t - \sqrt{\bar\alpha_t}\mu\big) \propto "
    r"\sqrt{1 + \bar\alpha_t(\lambda_k - 1)}"
)
try:
    get_corpus_cached(cfg.dataset, cfg.device)
    data = get_dataset(cfg.dataset)
    demo = cached_demo(cfg.dataset, cfg.device, cfg.steps, cfg.n, cfg.seed)
    gap = cached_gap(cfg.dataset, cfg.device, cfg.seed, cfg.params["temperature"])
except ValueError as e:
    show_error(e)
    st.stop()
shape = (-1,) + data.shape
trajectory(demo, shape, cfg.steps)
t_skip = linear_score(cfg, gap)

st.subheader("3. Teleport, then finish with GoldDiff")
st.caption(
    "Both runs start from the same x_T and use the same GoldDiff settings (sidebar); the "
    "teleported run replaces the DDIM steps before t_skip by one closed-form jump."
)
pressed = st.button(BUTTON, type="primary", key="gauss_run")
runs.notice_stopped("gauss_running", pressed, BUTTON)
if pressed:
    try:
        with runs.working("gauss_running", "teleport run"), st.spinner(
            "Running GoldDiff from T and from the teleported state..."
        ):
            out = gaussian.teleport_run(
                data, cfg.params, cfg.steps, cfg.n, cfg.seed, t_skip, cfg.device
            )
        runs.keep("gaussian", (cfg, t_skip), out)
    except ValueError as e:
        show_error(e)
run = runs.last("gaussian")
if run is None:
    st.info(f"Pick t_skip and press **{BUTTON}** to compare with GoldDiff run from T.")
    st.stop()
runs.notice_stale(run, (cfg, t_skip), BUTTON)
teleport_numbers(run.value)
teleport_pictures(run.value, shape)
