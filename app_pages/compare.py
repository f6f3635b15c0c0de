"""Compare page: the same start noise through every method; samples, wall time per step, fidelity
against the full-scan PCA-locality reference (final and one-step), memorization, the golden-subset
frontier and the random-vs-nearest pool ablation. Runs golddiff.compare, the same function as
`python -m golddiff bench`. UI only."""

import os

import streamlit as st

from app_pages import compare_views as show
from app_pages import runs
from app_pages.config import require_config
from app_pages.errors import show_error
from app_pages.resources import get_corpus_cached, get_dataset
from golddiff import METHODS, REFERENCE, compare, frontier
from golddiff.explore import lessons, subset_figures


def run_comparison(cfg, methods: list[str], ablation: bool) -> dict:
    """Every method from the same noise against the reference, with a progress bar."""
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

    load = os.getloadavg()[0]  # how busy the machine is while it times the methods
    try:
        runs.check_run_cost(cfg, order, passes=2)  # GOLDDIFF_APP_MAX_SECONDS
        runs.watch_session()  # stop computing once the tab is closed
        data = get_dataset(cfg.dataset)
        get_corpus_cached(cfg.dataset, cfg.device)
        res = compare(
            data, methods, cfg.steps, cfg.n, cfg.seed, cfg.params, cfg.device, True, on_step
        )
        out = dict(results=res, ablation=None, train_scale=lessons.train_nn_distance(data),
                   load=(load, os.getloadavg()[0]), cores=os.cpu_count())
        out["nn"] = {m: lessons.nearest_train(r.trajectory.samples, data) for m, r in res.items()}
        if ablation:
            bar.progress(
                min(1.0, done["n"] / total), text="pool ablation: golddiff random vs nearest"
            )
            out["ablation"] = lessons.pool_ablation(
                data, res[REFERENCE].trajectory, cfg.params, cfg.seed, cfg.device
            )
    except ValueError:
        bar.empty()
        raise
    bar.progress(1.0, text="Done.")
    return out


def frontier_view(cfg) -> None:
    """GoldDiff's speed / fidelity frontier, behind its own button."""
    st.subheader("Speed vs fidelity: GoldDiff's golden-subset frontier")
    st.caption(
        "GoldDiff's published schedule at three k_max (k_min = k_max / 2), the adaptive subset at "
        "two tolerances and the local subset at three k_max, with the Wiener and optimal closed "
        "forms, each against the full scan from the same noise (the protocol of `python -m "
        "golddiff bench --frontier`, here one seed). Each point is a whole run with the "
        "diagnostics off; its height is the one-step r² at the full scan's own states at its "
        "worst step, and the bar runs down to that step's worst sample."
    )
    if st.button("Run frontier", key="cmp_frontier_run"):
        with st.spinner("Running the full scan and ten configurations..."):
            try:
                data = get_dataset(cfg.dataset)
                ks = [max(2, min(data.N, round(data.N * f))) for f in (0.1, 0.05, 0.025)]
                points = frontier(
                    data, (0.03, 0.01), ks, cfg.steps, cfg.n, (cfg.seed,), cfg.params,
                    cfg.device, local_k_maxes=[2 * k for k in ks],
                )
                runs.keep("frontier", cfg, points)
            except ValueError as e:
                show_error(e)
    if (fr := runs.last("frontier")) is not None:
        runs.notice_stale(fr, cfg, "Run frontier")
        st.plotly_chart(subset_figures.frontier_figure(fr.value), key="cmp_frontier_fig")


cfg = require_config("Compare methods")
st.markdown(
    f"Every method starts from the **same noise** (seed {cfg.seed}, {cfg.n} samples, "
    f"{cfg.steps} DDIM steps on **{cfg.dataset}**, from the sidebar). Fidelity is measured "
    "against the full-scan PCA-locality denoiser (`pca`), which GoldDiff approximates: on the "
    "final samples, and one step at a time from the reference's own states $x_t$. "
    "Per-image $r^2 = 1 - \\|a-b\\|^2 / (D\\,\\mathrm{var}(b))$."
)
c = st.columns([3, 1, 1])
methods = c[0].multiselect(
    "Methods", list(METHODS), default=list(METHODS), key="cmp_methods",
    help=f"'{REFERENCE}' (the reference) always runs first",
)
ablation = c[1].checkbox(
    "pool ablation", value=True, key="cmp_ablation",
    help="also run GoldDiff's one step with a random pool and with the nearest pool",
)
pressed = c[2].button("Run comparison", type="primary", key="cmp_run")
key = (cfg, tuple(methods), ablation)
runs.notice_stopped("cmp_running", pressed, "Run comparison")
if pressed and not methods:
    st.error("Choose at least one method to compare.")
    st.stop()
if pressed:
    try:
        with runs.working("cmp_running", "comparison"):
            runs.keep("compare", key, run_comparison(cfg, methods, ablation))
    except ValueError as e:
        show_error(e)
        st.stop()
frontier_view(cfg)
kept = runs.last("compare")
if kept is None:
    st.info(
        f"Press **Run comparison**. It runs every method on **{cfg.dataset}** with the sidebar "
        "settings; on mnist-5k with the defaults that takes a few seconds on a CPU."
    )
    st.stop()
runs.notice_stale(kept, key, "Run comparison")
ran = kept.key[0]  # the Config the results were computed with
show.samples_view(kept.value, get_dataset(ran.dataset))
show.table_view(kept.value, ran.device)
show.onestep_view(kept.value, ran.params.get("snr_switch"))
show.copies_view(kept.value)
if kept.value["ablation"] is not None:
    show.ablation_view(kept.value["ablation"])
