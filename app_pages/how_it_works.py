"""How it works: the formulas behind GoldDiff, each beside a small live figure from the sidebar's
dataset. The page: the Config, the picked timestep and training image (a View that can Play), then
one render function per section. UI only: the math is in golddiff.explore.lessons."""

import math

import streamlit as st

from app_pages import play
from app_pages.config import require_config
from app_pages.errors import show_error
from app_pages.resources import get_corpus_cached, get_dataset
from app_pages.widgets import chart_config, number, stop_on
from golddiff import NoiseSchedule
from golddiff.core import pool_size, subset_size
from golddiff.explore import how_figures as figs
from golddiff.explore import lessons

SCHEDULE = NoiseSchedule()
GRID = list(range(0, SCHEDULE.T, 50))
TS = GRID[::-1]  # slider order: pure noise on the left


@st.cache_data(
    show_spinner="Computing the posterior of this image at 20 timesteps...", max_entries=32
)
def cached_profile(dataset: str, device: str, index: int, tau: float) -> dict:
    return lessons.posterior_profile(
        get_dataset(dataset), index, GRID, seed=0, tau=tau, device=device
    )


def controls(cfg, data) -> tuple[play.View, int, int]:
    """The timestep slider with Play, and the training image; returns (view, t, image index)."""
    c = st.columns([3, 0.6, 1], vertical_alignment="bottom")
    view = play.advance(play.View.load("hiw", len(TS), start=TS.index(500)))
    step = c[0].select_slider(
        "timestep t (left: pure noise, right: clean)", options=list(range(len(TS))),
        format_func=lambda i: str(TS[i]), key="hiw_step",
    )
    play.button(c[1], view)
    problems = []
    st.session_state.setdefault(f"hiw_index_{cfg.dataset}", 0)
    index = number(c[2], "training image", 0, data.N - 1, f"hiw_index_{cfg.dataset}", problems)
    stop_on(problems)
    return view, TS[step], index


def posterior_mean(prof: dict, i: int, t: int, index: int) -> None:
    st.header("1. The posterior mean")
    left, right = st.columns([1, 1])
    left.markdown(
        "The best $\\hat x_0$ for a finite training set is a softmax-weighted average of the "
        "training images; the weights are how likely each $x_i$ is to have produced $x_t$:"
    )
    left.latex(
        r"w_i(x_t) = \operatorname{softmax}_i\!\Big(-\frac{\|x_t - \sqrt{\bar\alpha_t}\,x_i\|^2}"
        r"{2(1-\bar\alpha_t)\,\tau}\Big)"
    )
    left.latex(r"\hat x_0 = \sum_{i=1}^N w_i\,x_i")
    left.markdown(
        f"Right: the N weights at $x_t$ = image {index} noised to t = {t} (SNR "
        f"{prof['snr'][i]:.3g}), largest first. The true image gets weight "
        f"{prof['w_true'][i]:.3g}. At high noise they are all near $1/N$; at low noise one image "
        'takes everything, so sampling with this exact ("optimal") denoiser reproduces training '
        "images."
    )
    right.plotly_chart(
        figs.sorted_weights(prof["sorted_w"][i], t), key="hiw_weights",
        config=chart_config("hiw_weights"),
    )


def locality(cfg, data, t: int) -> None:
    st.header("2. PCA locality: one posterior per pixel")
    left, right = st.columns([1, 1])
    left.markdown(
        "Trained networks are local: an output pixel depends on a neighbourhood of input pixels. "
        "Lukoianov et al. derive the neighbourhood from the data covariance: the Wiener operator "
        "$L_t$, normalised per row and thresholded, gives a binary mask $M_t$; pixel $m$ gets its "
        "own softmax over the pixels $n$ in its column."
    )
    for formula in (
        r"L_t = U\,\mathrm{diag}\Big(\frac{\bar\alpha_t\lambda_k}"
        r"{\bar\alpha_t\lambda_k+1-\bar\alpha_t}\Big)U^\top",
        r"M^0_t[n,m] = \frac{L_t[n,m]}{L_t[n,n]}",
        r"M_t[n,m] = \mathbb 1\big[\,|M^0_t[n,m]| \ge \theta\,\max |M^0_t|\,\big]",
        r"\ell_i(m) = -\frac{\sum_n M_t[n,m]\,(x_t[n]-\sqrt{\bar\alpha_t}\,x_i[n])^2}"
        r"{2(1-\bar\alpha_t)\tau}",
        r"\hat x_0[m] = \sum_i \operatorname{softmax}_i\big(\ell_i(m)\big)\,x_i[m]",
    ):
        left.latex(formula)
    _, H, W = data.shape
    k, problems = left.columns(2), []
    st.session_state.setdefault(f"hiw_row_{cfg.dataset}", H // 2)
    st.session_state.setdefault(f"hiw_col_{cfg.dataset}", W // 2)
    row = number(k[0], "pixel row", 0, H - 1, f"hiw_row_{cfg.dataset}", problems)
    col = number(k[1], "pixel column", 0, W - 1, f"hiw_col_{cfg.dataset}", problems)
    left.caption(
        f"Threshold θ = {cfg.params['mask_threshold']:.3f} (sidebar). The neighbourhood shrinks "
        "as t falls: at high noise $L_t$ is proportional to the covariance, so correlated pixels "
        "join in; at low noise $L_t$ approaches the identity and the neighbourhood closes in on "
        "the pixel itself."
    )
    for sentence in problems:
        right.error(sentence)
    if not problems:
        mask_view(right, cfg, data, t, row, col)


def mask_view(where, cfg, data, t: int, row: int, col: int) -> None:
    """The PCA-locality neighbourhood of one pixel at t, as the denoiser's mask holds it."""
    p = cfg.params
    try:
        nb = lessons.mask_neighbourhood(
            data, t, p["mask_threshold"], row, col, device=cfg.device, rule=p["mask_rule"]
        )
    except ValueError as e:
        show_error(e, where)
        return
    where.plotly_chart(
        figs.mask_image(nb, row, col), key="hiw_mask", config=chart_config("hiw_mask")
    )


def golden_subset(cfg, data, t: int) -> None:
    st.header("3. GoldDiff: the golden subset")
    left, right = st.columns([1, 1])
    k_min, k_max = int(cfg.params["k_min"]), int(cfg.params["k_max"])
    left.markdown(
        "The posterior concentrates as the noise falls, so few images matter at low noise. "
        "GoldDiff draws a pool of $m_t$ images, screens it in a low-resolution proxy space down to "
        "$k_{max}$, keeps the $k_t$ nearest at full resolution (the golden subset $S_t$), and runs "
        "the PCA-locality softmax over $S_t$ only:"
    )
    left.latex(r"\sigma_t = \sqrt{1-\bar\alpha_t}")
    left.latex(r"m_t = \mathrm{clip}\big(k_{max} + (N-k_{max})(1-\sigma_t),\ k_{max},\ N\big)")
    left.latex(r"k_t = \max\big(k_{min},\ k_{max} - (k_{max}-k_{min})(1-\sigma_t)\big)")
    sig = SCHEDULE.sigma(t)
    left.markdown(
        f"At t = {t}: $\\sigma_t$ = {sig:.3f}, pool $m_t$ = {pool_size(data.N, k_max, sig)}, "
        f"golden subset $k_t$ = {subset_size(k_min, k_max, sig)} of N = {data.N} (k_min = "
        f"{k_min}, k_max = {k_max} from the sidebar). High noise: a small random pool (m_t near "
        "k_max), an unbiased sample of a flat posterior. As the noise falls the pool grows toward "
        "all N images while k_t shrinks, so at low noise nearly the whole data set is screened "
        "and only the nearest few are kept."
    )
    right.plotly_chart(
        figs.schedules(lessons.gold_schedules(data.N, k_min, k_max), data.N, t),
        key="hiw_sched", config=chart_config("hiw_sched"),
    )


def diagnostics(prof: dict, i: int, t: int, N: int) -> None:
    st.header("4. Diagnostics")
    left, right = st.columns([1, 1])
    left.markdown(
        "How concentrated is the posterior? Entropy in nats ($\\log N$ = uniform, 0 = one image), "
        "its exponential the perplexity (an effective number of images), the effective sample "
        "size, and the fewest images that hold 99% of the mass:"
    )
    left.latex(r"H = -\sum_i w_i\log w_i,\qquad \mathrm{PPL} = e^{H}")
    left.latex(r"\mathrm{ESS} = \frac{1}{\sum_i w_i^2}")
    left.latex(r"k_{0.99} = \min\Big\{k : \sum_{j\le k} w_{(j)} \ge 0.99\Big\}")
    left.caption("$w_{(1)} \\ge w_{(2)} \\ge \\dots$: the weights sorted, largest first.")
    m = left.columns(4)
    m[0].metric("H (nats)", f"{prof['entropy'][i]:.2f}", help=f"log N = {math.log(N):.2f}")
    m[1].metric("perplexity", f"{prof['perplexity'][i]:.1f}")
    m[2].metric("ESS", f"{prof['ess'][i]:.1f}")
    m[3].metric("k_0.99", int(prof["k99"][i]))
    left.caption(
        "Golden-subset diagnostics (captured mass W_S, recall of the global top-k_t) are on the "
        "Explorer page, which records them at every step."
    )
    right.plotly_chart(figs.profile(prof, t), key="hiw_profile", config=chart_config("hiw_profile"))


cfg = require_config("How it works")
try:
    get_corpus_cached(cfg.dataset, cfg.device)
    data = get_dataset(cfg.dataset)
except ValueError as e:
    show_error(e)
    st.stop()
_, H, W = data.shape
st.markdown(
    "Analytical diffusion replaces the trained network by a formula over the training set, here "
    f"**{cfg.dataset}** (N = {data.N} images of {H}x{W}, D = {data.D}). Noise: $x_t = "
    "\\sqrt{\\bar\\alpha_t}\\,x_0 + \\sqrt{1-\\bar\\alpha_t}\\,\\varepsilon$, with $\\bar\\alpha_t$ "
    "from the linear DDPM schedule over T = 1000 steps; DDIM then steps with the denoiser's "
    "estimate $\\hat x_0$. Pick a timestep and a training image; every figure below follows them."
)
view, t, index = controls(cfg, data)
try:
    prof = cached_profile(cfg.dataset, cfg.device, index, cfg.params["temperature"])
except ValueError as e:
    show_error(e)
    st.stop()
i = GRID.index(t)
posterior_mean(prof, i, t, index)
locality(cfg, data, t)
golden_subset(cfg, data, t)
diagnostics(prof, i, t, data.N)
play.finish(view)
