"""Gaussian-regime page: the Wiener denoiser, the closed-form Gaussian PF-ODE, where the linear
score is enough,
and teleporting past the first DDIM steps. UI only: the math is in golddiff.explore.gaussian."""

import numpy as np
import streamlit as st

from golddiff import NoiseSchedule
from golddiff.explore import lesson_figures as figs
from golddiff.explore import gaussian
from golddiff.explore.style import duration
from pages.common import (
    announce_stopped,
    chart_config,
    get_corpus_cached,
    get_dataset,
    require_config,
    show_error,
)

SCHEDULE = NoiseSchedule()


@st.cache_data(show_spinner="Comparing the Gaussian and the exact posterior mean...", max_entries=8)
def cached_gap(dataset: str, device: str, seed: int, tau: float) -> dict:
    return gaussian.wiener_gap(
        get_dataset(dataset),
        list(range(0, SCHEDULE.T, 50)),
        n=16,
        seed=seed,
        tau=tau,
        device=device,
    )


@st.cache_data(show_spinner=False, max_entries=8)
def cached_demo(dataset: str, device: str, steps: int, n: int, seed: int) -> dict:
    return gaussian.gaussian_demo(get_dataset(dataset), steps, n, seed, device=device)


cfg = require_config("The Gaussian regime")
st.markdown(
    "Replace the training set by one Gaussian $\\mathcal N(\\mu, \\Sigma)$ with the same mean and covariance and "
    "the posterior mean becomes linear, the **Wiener filter**; the probability-flow ODE then has a closed-form "
    "solution, so a sampler can *teleport* from $x_T$ to any $t$ in one matrix product (Wang & Vastola). At high "
    "noise the real posterior is close to this Gaussian one; as the noise drops it concentrates on a few "
    "training images and the linear picture breaks down."
)
st.latex(
    r"\hat x_0 = \mu + U\,\mathrm{diag}(s_k)\,U^\top\!\Big(\tfrac{x_t}{\sqrt{\bar\alpha_t}} - \mu\Big),\quad "
    r"s_k = \frac{\bar\alpha_t\lambda_k}{\bar\alpha_t\lambda_k + 1 - \bar\alpha_t};\qquad "
    r"u_k^\top\big(x_t - \sqrt{\bar\alpha_t}\mu\big) \propto "
    r"\sqrt{1 + \bar\alpha_t(\lambda_k - 1)}"
)

try:
    get_corpus_cached(cfg.dataset, cfg.device)
    data = get_dataset(cfg.dataset)
    tau = cfg.params.get("temperature", 1.0)
    demo = cached_demo(cfg.dataset, cfg.device, cfg.steps, cfg.n, cfg.seed)
    gap = cached_gap(cfg.dataset, cfg.device, cfg.seed, tau)
except ValueError as e:
    show_error(e)
    st.stop()

shape = (-1,) + data.shape
st.subheader("1. Wiener denoiser and the closed-form trajectory")
ts = demo["ts"]
st.caption(f"Sample 1 of the batch at t = {', '.join(map(str, ts))} (left to right).")
for k, label in (
    ("closed_x", "exact Gaussian ODE: x_t"),
    ("ddim_x", "DDIM with the Wiener denoiser: x_t"),
    ("ddim_x0", "Wiener x0_hat at each step"),
):
    strip = figs.tile(np.stack([x[0] for x in demo[k]]).reshape(shape), px=64)
    st.image(strip, width=strip.shape[1], caption=label)
c = st.columns(2)
c[0].image(
    figs.tile(demo["ddim_sample"].reshape(shape), px=56), caption="DDIM + Wiener: final samples"
)
c[1].image(
    figs.tile(demo["closed_sample"].reshape(shape), px=56),
    caption="closed-form ODE endpoint (t = 0)",
)
st.caption(
    f"r² of the DDIM samples against the closed-form endpoint: {demo['r2']:.4f} "
    f"({cfg.steps} steps; it approaches 1 as the steps grow and the DDIM discretization error vanishes)."
)

st.subheader("2. Where is the linear score enough?")
ts_all = SCHEDULE.timesteps(cfg.steps)
if st.session_state.get("gauss_tskip") not in ts_all:
    st.session_state["gauss_tskip"] = ts_all[min(len(ts_all) - 1, max(1, len(ts_all) // 4))]
left, right = st.columns([3, 2])
t_skip = right.select_slider(
    "teleport to t_skip (left: pure noise, right: clean)",
    options=ts_all,
    key="gauss_tskip",
    help="a DDIM timestep; the closed form replaces every step before it",
)
left.plotly_chart(
    figs.wiener_gap_figure(gap, cfg.params.get("snr_switch"), SCHEDULE.snr(t_skip)),
    key="gauss_gap",
    config=chart_config("gauss_gap"),
)
right.markdown(
    "x_t here is a noised training image, $\\sqrt{\\bar\\alpha_t}x_i + \\sigma_t\\varepsilon$ (16 of them). "
    "Left of the plot (pure noise) the Wiener estimate equals the exact posterior mean ($r^2 \\approx 1$) "
    "while the posterior still spreads over most of the data (perplexity / N near 1). Where the posterior "
    "concentrates, the two part ways. At the clean end both return about $x_t$ itself, so they meet again. "
    f"The hybrid denoiser uses Wiener below SNR {cfg.params.get('snr_switch', 0):.3g} (orange line); "
    f"teleporting to t = {t_skip} (SNR {SCHEDULE.snr(t_skip):.3g}, blue line) trusts the Gaussian up to there."
)

st.subheader("3. Teleport, then finish with GoldDiff")
st.caption(
    "Both runs start from the same x_T and use the same GoldDiff settings (sidebar); the teleported run "
    "replaces the DDIM steps before t_skip by one closed-form jump."
)
if st.button("Teleport and finish with GoldDiff", type="primary", key="gauss_run"):
    st.session_state["gauss_running"] = True
    try:
        with st.spinner("Running GoldDiff from T and from the teleported state..."):
            st.session_state["gauss_teleport"] = dict(
                key=(cfg.key(), t_skip),
                out=gaussian.teleport_run(
                    data, cfg.params, cfg.steps, cfg.n, cfg.seed, t_skip, cfg.device
                ),
            )
    except ValueError as e:
        show_error(e)
    st.session_state.pop("gauss_running", None)
else:
    announce_stopped("gauss_running", "teleport run")
run = st.session_state.get("gauss_teleport")
if run is None:
    st.info(
        "Pick t_skip and press **Teleport and finish with GoldDiff** to compare with GoldDiff run from T."
    )
    st.stop()
if run["key"] != (cfg.key(), t_skip):
    st.warning("The settings changed since this run; press the button again to update it.")
o = run["out"]
m = st.columns(4)
calls_saved = o["calls_full"] - o["calls_teleport"]
m[0].metric(
    "GoldDiff from T",
    duration(o["seconds_full"]),
    help=f"{o['calls_full']} denoiser calls",
)
m[1].metric(
    f"teleport to {o['t_skip']} + GoldDiff",
    duration(o["seconds_teleport"]),
    # a saving only from calls really skipped, at their measured cost (finding 6)
    # (the skipped calls' own cost, so it need not equal the difference of two noisy totals)
    delta=f"{duration(o['seconds_saved'])} saved in {calls_saved} skipped calls"
    if calls_saved > 0
    else None,
    delta_color="normal",
    help=f"{o['calls_teleport']} denoiser calls; the closed-form jump took "
    f"{duration(o['seconds_jump'])}",
)
m[2].metric(
    "denoiser calls saved",
    calls_saved,
    help="the skipped calls cost this much in the run from T: "
    f"{duration(o['seconds_saved'])}",
)
m[3].metric("r² of teleported vs full", f"{o['r2']:.3f}", help=f"MSE {o['mse']:.5f}")
st.caption(
    "The time saved is the measured cost of the high-noise GoldDiff calls the teleport skipped (none "
    "when t_skip is the first step); run-to-run timing noise makes the two totals differ a little "
    "even then. The closed-form jump itself is one matrix product."
)
c = st.columns(3)
c[0].image(figs.tile(o["full"].reshape(shape), px=56), caption="GoldDiff from T")
c[1].image(
    figs.tile(o["x_skip"].reshape(shape), px=56),
    clamp=True,
    caption=f"teleported state x_t at t = {o['t_skip']}",
)
c[2].image(figs.tile(o["teleported"].reshape(shape), px=56), caption="teleport + GoldDiff")
st.plotly_chart(
    figs.time_saved(
        {"GoldDiff from T": o["seconds_full"], "teleport + GoldDiff": o["seconds_teleport"]},
        {"GoldDiff from T": o["calls_full"], "teleport + GoldDiff": o["calls_teleport"]},
    ),
    key="gauss_time", config=chart_config("gauss_time"),
)
