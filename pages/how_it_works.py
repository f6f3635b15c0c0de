"""How it works: the formulas behind GoldDiff, each beside a small live figure from the sidebar's
dataset.
UI only: the math is in golddiff.explore.lessons."""

import math

import streamlit as st

from golddiff import NoiseSchedule
from golddiff.core import pool_size, subset_size
from golddiff.explore import how_figures as figs
from golddiff.explore import lessons
from pages.common import (
    chart_config,
    advance_play,
    finish_play,
    get_corpus_cached,
    get_dataset,
    play_button,
    require_config,
    show_error,
)

SCHEDULE = NoiseSchedule()
GRID = list(range(0, SCHEDULE.T, 50))


@st.cache_data(
    show_spinner="Computing the posterior of this image at 20 timesteps...", max_entries=32
)
def cached_profile(dataset: str, device: str, index: int, tau: float) -> dict:
    return lessons.posterior_profile(
        get_dataset(dataset), index, GRID, seed=0, tau=tau, device=device
    )


cfg = require_config("How it works")
try:
    get_corpus_cached(cfg.dataset, cfg.device)
    data = get_dataset(cfg.dataset)
except ValueError as e:
    show_error(e)
    st.stop()
p = cfg.params
C, H, W = data.shape
st.markdown(
    f"Analytical diffusion replaces the trained network by a formula over the training set, here **{cfg.dataset}** "
    f"(N = {data.N} images of {H}x{W}, D = {data.D}). Noise: $x_t = \\sqrt{{\\bar\\alpha_t}}\\,x_0 + "
    "\\sqrt{1-\\bar\\alpha_t}\\,\\varepsilon$, with $\\bar\\alpha_t$ from the linear DDPM schedule over T = 1000 "
    "steps; DDIM then steps with the denoiser's estimate $\\hat x_0$. Pick a timestep and a training image; "
    "every figure below follows them."
)
c = st.columns([3, 0.6, 1], vertical_alignment="bottom")
st.session_state.setdefault("hiw_t", 500)
playing = advance_play("hiw", GRID[::-1])
t = c[0].select_slider(
    "timestep t (left: pure noise, right: clean)", options=GRID[::-1], key="hiw_t"
)
play_button(c[1], "hiw", GRID[::-1], playing)
index = c[2].number_input("training image", 0, data.N - 1, 0, key=f"hiw_index_{cfg.dataset}")
try:
    prof = cached_profile(cfg.dataset, cfg.device, int(index), p.get("temperature", 1.0))
except ValueError as e:
    show_error(e)
    st.stop()
i = GRID.index(t)

st.header("1. The posterior mean")
left, right = st.columns([1, 1])
with left:
    st.markdown(
        "The best $\\hat x_0$ for a finite training set is a softmax-weighted average of the training "
        "images; the weights are how likely each $x_i$ is to have produced $x_t$:"
    )
    st.latex(
        r"w_i(x_t) = \operatorname{softmax}_i\!\Big(-\frac{\|x_t - \sqrt{\bar\alpha_t}\,x_i\|^2}"
        r"{2(1-\bar\alpha_t)\,\tau}\Big)"
    )
    st.latex(r"\hat x_0 = \sum_{i=1}^N w_i\,x_i")
    st.markdown(
        f"Right: the N weights at $x_t$ = image {index} noised to t = {t} (SNR {prof['snr'][i]:.3g}), "
        f"largest first. The true image gets weight {prof['w_true'][i]:.3g}. At high noise they are all "
        'near $1/N$; at low noise one image takes everything, so sampling with this exact ("optimal") '
        "denoiser reproduces training images."
    )
right.plotly_chart(
    figs.sorted_weights(prof["sorted_w"][i], t),
    key="hiw_weights",
    config=chart_config("hiw_weights"),
)

st.header("2. PCA locality: one posterior per pixel")
left, right = st.columns([1, 1])
with left:
    st.markdown(
        "Trained networks are local: an output pixel depends on a neighbourhood of input pixels. "
        "Lukoianov et al. derive the neighbourhood from the data covariance: the Wiener operator "
        "$L_t$, normalised per row and thresholded, gives a binary mask $M_t$; pixel $m$ gets its own "
        "softmax over the pixels $n$ in its column."
    )
    st.latex(
        r"L_t = U\,\mathrm{diag}\Big(\frac{\bar\alpha_t\lambda_k}"
        r"{\bar\alpha_t\lambda_k+1-\bar\alpha_t}\Big)U^\top"
    )
    st.latex(r"M^0_t[n,m] = \frac{L_t[n,m]}{L_t[n,n]}")
    st.latex(r"M_t[n,m] = \mathbb 1\big[\,|M^0_t[n,m]| \ge \theta\,\max |M^0_t|\,\big]")
    st.latex(
        r"\ell_i(m) = -\frac{\sum_n M_t[n,m]\,(x_t[n]-\sqrt{\bar\alpha_t}\,x_i[n])^2}"
        r"{2(1-\bar\alpha_t)\tau}"
    )
    st.latex(r"\hat x_0[m] = \sum_i \operatorname{softmax}_i\big(\ell_i(m)\big)\,x_i[m]")
    k = st.columns(2)
    row = k[0].number_input("pixel row", 0, H - 1, H // 2, key=f"hiw_row_{cfg.dataset}")
    col = k[1].number_input("pixel column", 0, W - 1, W // 2, key=f"hiw_col_{cfg.dataset}")
    st.caption(
        f"Threshold θ = {p.get('mask_threshold', 0.02):.3f} (sidebar). The neighbourhood shrinks as t falls: "
        "at high noise $L_t$ is proportional to the covariance, so correlated pixels join in; at low noise "
        "$L_t$ approaches the identity and the neighbourhood closes in on the pixel itself."
    )
try:
    nb = lessons.mask_neighbourhood(
        data, t, p["mask_threshold"], int(row), int(col), device=cfg.device, rule=p["mask_rule"]
    )
    right.plotly_chart(
        figs.mask_image(nb, int(row), int(col)), key="hiw_mask", config=chart_config("hiw_mask")
    )
except ValueError as e:
    show_error(e)

st.header("3. GoldDiff: the golden subset")
left, right = st.columns([1, 1])
k_min, k_max = int(p.get("k_min", 1)), int(p.get("k_max", 1))
with left:
    st.markdown(
        "The posterior concentrates as the noise falls, so few images matter at low noise. GoldDiff draws "
        "a pool of $m_t$ images, screens it in a low-resolution proxy space down to $k_{max}$, keeps the "
        "$k_t$ nearest at full resolution (the golden subset $S_t$), and runs the PCA-locality softmax "
        "over $S_t$ only:"
    )
    st.latex(r"\sigma_t = \sqrt{1-\bar\alpha_t}")
    st.latex(r"m_t = \mathrm{clip}\big(k_{max} + (N-k_{max})(1-\sigma_t),\ k_{max},\ N\big)")
    st.latex(r"k_t = \max\big(k_{min},\ k_{max} - (k_{max}-k_{min})(1-\sigma_t)\big)")
    sig = SCHEDULE.sigma(t)
    st.markdown(
        f"At t = {t}: $\\sigma_t$ = {sig:.3f}, pool $m_t$ = {pool_size(data.N, k_max, sig)}, golden subset "
        f"$k_t$ = {subset_size(k_min, k_max, sig)} of N = {data.N} (k_min = {k_min}, k_max = {k_max} from the "
        "sidebar). High noise: a small random pool (m_t near k_max), an unbiased sample of a flat "
        "posterior. As the noise falls the pool grows toward all N images while k_t shrinks, so at "
        "low noise nearly the whole data set is screened and only the nearest few are kept."
    )
right.plotly_chart(
    figs.schedules(lessons.gold_schedules(data.N, k_min, k_max), data.N, t),
    key="hiw_sched",
    config=chart_config("hiw_sched"),
)

st.header("4. Diagnostics")
left, right = st.columns([1, 1])
with left:
    st.markdown(
        "How concentrated is the posterior? Entropy in nats ($\\log N$ = uniform, 0 = one image), its "
        "exponential the perplexity (an effective number of images), the effective sample size, and the "
        "fewest images that hold 99% of the mass:"
    )
    st.latex(r"H = -\sum_i w_i\log w_i,\qquad \mathrm{PPL} = e^{H}")
    st.latex(r"\mathrm{ESS} = \frac{1}{\sum_i w_i^2}")
    st.latex(r"k_{0.99} = \min\Big\{k : \sum_{j\le k} w_{(j)} \ge 0.99\Big\}")
    st.caption("$w_{(1)} \\ge w_{(2)} \\ge \\dots$: the weights sorted, largest first.")
    m = st.columns(4)
    m[0].metric("H (nats)", f"{prof['entropy'][i]:.2f}", help=f"log N = {math.log(data.N):.2f}")
    m[1].metric("perplexity", f"{prof['perplexity'][i]:.1f}")
    m[2].metric("ESS", f"{prof['ess'][i]:.1f}")
    m[3].metric("k_0.99", int(prof["k99"][i]))
    st.caption(
        "Golden-subset diagnostics (captured mass W_S, recall of the global top-k_t) are on the Explorer "
        "page, which records them at every step."
    )
right.plotly_chart(figs.profile(prof, t), key="hiw_profile", config=chart_config("hiw_profile"))
finish_play(playing)
