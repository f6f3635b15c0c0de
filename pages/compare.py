"""Compare page: the same start noise through every method; samples, wall time per step, fidelity
against the
full-scan PCA-locality reference (final and one-step), memorization, and the random-vs-nearest pool
ablation.
Runs golddiff.compare, the same function as `python -m golddiff bench`. UI only."""

import numpy as np
import streamlit as st

from golddiff import METHODS, REFERENCE, compare, frontier
from golddiff.explore import lesson_figures as figs
from golddiff.explore import lessons, subset_figures
from pages.common import (
    announce_stopped,
    chart_config,
    check_run_cost,
    get_corpus_cached,
    get_dataset,
    require_config,
    show_error,
    watch_session,
)

cfg = require_config("Compare methods", " to compare methods")
st.markdown(
    f"Every method starts from the **same noise** (seed {cfg.seed}, {cfg.n} samples, {cfg.steps} DDIM steps on "
    f"**{cfg.dataset}**, from the sidebar). Fidelity is measured against the full-scan PCA-locality denoiser "
    "(`pca`), which GoldDiff approximates: on the final samples, and one step at a time from the reference's "
    "own states $x_t$. Per-image $r^2 = 1 - \\|a-b\\|^2 / (D\\,\\mathrm{var}(b))$."
)

c = st.columns([3, 1, 1])
methods = c[0].multiselect(
    "Methods",
    list(METHODS),
    default=list(METHODS),
    key="cmp_methods",
    help=f"'{REFERENCE}' (the reference) always runs first",
)
ablation = c[1].checkbox(
    "pool ablation",
    value=True,
    key="cmp_ablation",
    help="also run GoldDiff's one step with a random pool and with the nearest pool",
)
run = c[2].button("Run comparison", type="primary", key="cmp_run")
key = (cfg.key(), tuple(methods), ablation)

if not run:
    announce_stopped("cmp_running", "comparison")
if run:
    if not methods:
        st.error("Choose at least one method to compare.")
        st.stop()
    order = [REFERENCE] + [m for m in methods if m != REFERENCE]
    total = len(order) * cfg.steps + (1 if ablation else 0)
    bar = st.progress(0.0, text="Preparing data statistics...")
    done = {"n": 0}

    def on_step(method, rec):
        done["n"] += 1
        bar.progress(
            min(1.0, done["n"] / total),
            text=f"{method}: step {rec.step + 1}/{cfg.steps} (t = {rec.t})",
        )

    st.session_state["cmp_running"] = True
    try:
        check_run_cost(cfg, order, passes=2)  # GOLDDIFF_APP_MAX_SECONDS
        watch_session()  # stop computing once the tab is closed
        data = get_dataset(cfg.dataset)
        get_corpus_cached(cfg.dataset, cfg.device)
        res = compare(
            data, methods, cfg.steps, cfg.n, cfg.seed, cfg.params, cfg.device, True, on_step
        )
        out = dict(key=key, results=res, nn={}, ablation=None)
        for m, r in res.items():
            out["nn"][m] = lessons.nearest_train(r.trajectory.samples, data)
        out["train_scale"] = lessons.train_nn_distance(data)
        if ablation:
            bar.progress(
                min(1.0, done["n"] / total), text="pool ablation: golddiff random vs nearest"
            )
            out["ablation"] = lessons.pool_ablation(
                data, res[REFERENCE].trajectory, cfg.params, cfg.seed, cfg.device
            )
        st.session_state["compare"] = out
        st.session_state.pop("cmp_running", None)
        bar.progress(1.0, text="Done.")
    except ValueError as e:
        st.session_state.pop("cmp_running", None)
        bar.empty()
        show_error(e)
        st.stop()

st.subheader("Speed vs fidelity: GoldDiff's golden-subset frontier")
st.caption(
    "GoldDiff with the adaptive subset at three tolerances and with the published schedule at four "
    "k_max (k_min = k_max / 2), each against the full scan from the same noise (the same sweep as "
    "`python -m golddiff bench --frontier`). Bars run down to the worst sample's final r²."
)
fkey = cfg.key()
if st.button("Run frontier", key="cmp_frontier_run"):
    with st.spinner("Running the full scan and seven GoldDiff configurations..."):
        try:
            n_img = get_dataset(cfg.dataset).N
            ks = sorted({max(2, min(n_img, round(n_img * f))) for f in (0.1, 0.05, 0.025, 0.0125)})
            st.session_state["cmp_frontier"] = (
                fkey,
                frontier(
                    get_dataset(cfg.dataset), (0.03, 0.01, 0.003), ks[::-1], cfg.steps, cfg.n,
                    cfg.seed, cfg.params, cfg.device,
                ),
            )
        except ValueError as e:
            show_error(e)
fr = st.session_state.get("cmp_frontier")
if fr is not None:
    if fr[0] != fkey:
        st.warning("The settings changed since this frontier was computed; run it again.")
    st.plotly_chart(subset_figures.frontier_figure(fr[1]), key="cmp_frontier_fig")

out = st.session_state.get("compare")
if out is None:
    st.info(
        f"Press **Run comparison**. It runs every method on **{cfg.dataset}** with the sidebar "
        "settings; on mnist-5k with the defaults that takes a few seconds on a CPU."
    )
    st.stop()
if out["key"] != key:
    st.warning(
        "The settings changed since these results were computed; press Run comparison to update them."
    )

res = out["results"]
data = get_dataset(out["key"][0][0])
ref_ms = res[REFERENCE].ms_per_step

st.subheader("Final samples")
st.caption(
    "One row per method, same start noise in each column. Under each row: the nearest training image "
    "of each sample; a distance near 0 means the sample is a copy of a training image."
)
for m, r in res.items():
    idx, dist = out["nn"][m]
    mosaic = figs.tile(
        np.concatenate([r.trajectory.samples, data.images[idx].numpy()]), ncol=len(idx), px=56
    )
    cols = st.columns([1, 5])
    cols[0].markdown(
        f"**{m}**  \n{r.ms_per_step:.1f} ms/step  \nr² {r.final_r2:.3f} vs {REFERENCE}  \n"
        f"nearest-image distance {dist.mean():.3f}"
    )
    cols[1].image(
        mosaic, width=mosaic.shape[1], caption="top: samples; bottom: nearest training images"
    )

st.subheader("Speed and fidelity")
rows = [
    {
        "method": m,
        "ms / step": r.ms_per_step,
        f"speed-up vs {REFERENCE}": ref_ms / max(r.ms_per_step, 1e-9),
        "screen ms": r.phase_ms.get("screen"),
        "select ms": r.phase_ms.get("select"),
        "aggregate ms": r.phase_ms.get("aggregate"),
        "final MSE": r.final_mse,
        "final r²": r.final_r2,
        "min one-step r²": float(np.min(r.onestep_r2)) if r.onestep_r2 else None,
        "nearest-image distance": float(out["nn"][m][1].mean()),
    }
    for m, r in res.items()
]
fmt = {
    k: st.column_config.NumberColumn(format=f)
    for k, f in (
        ("ms / step", "%.2f"),
        (f"speed-up vs {REFERENCE}", "%.1f"),
        ("screen ms", "%.2f"),
        ("select ms", "%.2f"),
        ("aggregate ms", "%.2f"),
        ("final MSE", "%.5f"),
        ("final r²", "%.3f"),
        ("min one-step r²", "%.3f"),
        ("nearest-image distance", "%.3f"),
    )
}
st.dataframe(rows, hide_index=True, column_config=fmt)
st.caption(
    "Times are medians of the denoiser calls on this machine "
    f"({out['key'][0][5]}), diagnostics excluded; phases: screen = pool + proxy search, select = "
    "full-resolution pick of S_t, aggregate = the posterior softmax."
)
left, right = st.columns([2, 3])
left.plotly_chart(
    figs.step_times(
        {m: r.ms_per_step for m, r in res.items()}, {m: r.phase_ms for m, r in res.items()}
    ),
    key="cmp_times", config=chart_config("cmp_times"),
)
right.markdown(
    f"**{REFERENCE}** scans all N images with one softmax per pixel at every step; **golddiff** does the same "
    "over the golden subset only; **hybrid** skips the data entirely while the SNR is below its switch (the "
    "Wiener steps cost a matrix product). **optimal** is one softmax over all N (cheap, but it memorizes)."
)

snr = res[REFERENCE].trajectory.scalars("snr")
others = {m: r for m, r in res.items() if m != REFERENCE}
switch = {"hybrid switch": cfg.params.get("snr_switch")} if "hybrid" in res else None
left, right = st.columns(2)
left.plotly_chart(
    figs.curves_vs_snr(
        {m: (snr, np.array(r.onestep_r2)) for m, r in others.items()},
        "one-step r² vs pca",
        "One step from the same x_t: r²",
        vlines=switch,
    ),
    key="cmp_r2", config=chart_config("cmp_r2"),
)
right.plotly_chart(
    figs.curves_vs_snr(
        {m: (snr, np.maximum(np.array(r.onestep_mse), 1e-12)) for m, r in others.items()},
        "one-step MSE vs pca",
        "One step from the same x_t: MSE",
        vlines=switch,
        ylog=True,
    ),
    key="cmp_mse", config=chart_config("cmp_mse"),
)

st.subheader("Copies or new images?")
left, right = st.columns([2, 3])
left.plotly_chart(
    figs.nn_distances({m: out["nn"][m][1] for m in res}, out["train_scale"]),
    key="cmp_nn",
    config=chart_config("cmp_nn"),
)
right.markdown(
    "The **optimal** (empirical-Bayes) denoiser's posterior collapses onto one training image, so its samples "
    "are copies: distance about 0. The **local** methods (pca, golddiff, hybrid) combine different training "
    "images in different pixel neighbourhoods, so their samples are not copies: their distances "
    "sit near the typical gap between two distinct training images (dotted line), some a little "
    "below it, none near 0. **wiener** is a single Gaussian: new, but blurry."
)

if out["ablation"] is not None:
    st.subheader("Ablation: random pool vs nearest pool")
    left, right = st.columns([3, 2])
    left.plotly_chart(
        figs.curves_vs_snr(
            out["ablation"], "one-step r² vs pca", "GoldDiff pool mode: one-step r²", yrange=None
        ),
        key="cmp_ablation_fig", config=chart_config("cmp_ablation_fig"),
    )
    right.markdown(
        "At high noise (left) the posterior is nearly uniform: a **random** pool of $m_t$ images is an "
        "unbiased Monte-Carlo sample of it, while the **nearest** images are a biased sample, hence the lower "
        "$r^2$. At low noise the posterior has concentrated on the nearest images and both modes agree."
    )

