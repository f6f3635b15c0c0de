"""The Compare page's views of a finished comparison: each a short render function (figures
come from golddiff.explore.lesson_figures). Nothing here runs a method."""

import numpy as np
import streamlit as st

from app_pages.widgets import chart_config
from golddiff import REFERENCE
from golddiff.explore import lesson_figures as figs

NUMBER_FORMATS = {
    "ms / step": "%.2f", f"speed-up vs {REFERENCE}": "%.1f", "screen ms": "%.2f",
    "select ms": "%.2f", "aggregate ms": "%.2f", "final MSE": "%.5f", "final r²": "%.3f",
    "one-step r² (mean)": "%.3f", "min one-step r²": "%.3f", "nearest-image distance": "%.3f",
    "CPU ms / step": "%.2f",
}
BUSY_LOAD = 1.0  # load average per core above which other processes compete for the cores


def samples_view(out: dict, data) -> None:
    """One row of final samples per method over their nearest training images."""
    st.subheader("Final samples")
    st.caption(
        "One row per method, same start noise in each column. Under each row: the nearest "
        "training image of each sample; a distance near 0 means the sample is a copy of a "
        "training image."
    )
    for m, r in out["results"].items():
        idx, dist = out["nn"][m]
        mosaic = figs.tile(
            np.concatenate([r.trajectory.samples, data.images[idx].numpy()]), ncol=len(idx), px=56
        )
        cols = st.columns([1, 5])
        cols[0].markdown(
            f"**{m}**  \n{r.ms_per_step:.1f} ms/step  \nr² vs {REFERENCE}: final "
            f"{r.final_r2:.3f}"
            + (f", one-step {np.mean(r.onestep_r2):.3f}" if r.onestep_r2 else "")
            + "  \n"
            + f"nearest-image distance {dist.mean():.3f}"
        )
        cols[1].image(
            mosaic, width=mosaic.shape[1], caption="top: samples; bottom: nearest training images"
        )


def table_view(out: dict, device: str) -> None:
    """Speed and fidelity per method, and the time per step by phase."""
    res = out["results"]
    ref_ms = res[REFERENCE].ms_per_step
    st.subheader("Speed and fidelity")
    rows = [
        {
            "method": m, "ms / step": r.ms_per_step,
            f"speed-up vs {REFERENCE}": ref_ms / max(r.ms_per_step, 1e-9),
            "screen ms": r.phase_ms.get("screen"), "select ms": r.phase_ms.get("select"),
            "aggregate ms": r.phase_ms.get("aggregate"), "final MSE": r.final_mse,
            "final r²": r.final_r2,
            "one-step r² (mean)": float(np.mean(r.onestep_r2)) if r.onestep_r2 else None,
            "min one-step r²": float(np.min(r.onestep_r2)) if r.onestep_r2 else None,
            "CPU ms / step": cpu_ms(r),
            "nearest-image distance": float(out["nn"][m][1].mean()),
        }
        for m, r in res.items()
    ]
    fmt = {k: st.column_config.NumberColumn(format=f) for k, f in NUMBER_FORMATS.items()}
    st.dataframe(rows, hide_index=True, column_config=fmt)
    st.caption(
        f"Times are medians of the denoiser calls on this machine ({device}), diagnostics "
        "excluded; phases: screen = pool + proxy search, select = full-resolution pick of S_t, "
        "aggregate = the posterior softmax. CPU ms: the process's CPU time per call (all "
        "threads), which waiting for a busy core does not inflate. **One-step r²**: each method "
        f"denoises {REFERENCE}'s own $x_t$ at every step, so it measures the error of one call "
        "from the same input; **final r²** compares the finished samples, where every step's "
        "error has moved the trajectory."
    )
    if (note := busy_note(out.get("load"), out.get("cores"))) is not None:
        st.warning(note, icon=":material/speed:")
    left, right = st.columns([2, 3])
    left.plotly_chart(
        figs.step_times(
            {m: r.ms_per_step for m, r in res.items()}, {m: r.phase_ms for m, r in res.items()}
        ),
        key="cmp_times", config=chart_config("cmp_times"),
    )
    right.markdown(
        f"**{REFERENCE}** scans all N images with one softmax per pixel at every step; "
        "**golddiff** does the same over the golden subset only; **hybrid** skips the data "
        "entirely while the SNR is below its switch (the Wiener steps cost a matrix product). "
        "**optimal** is one softmax over all N (cheap, but it memorizes)."
    )


def cpu_ms(r) -> float | None:
    """Median process CPU time of a method's denoiser calls (ms), None where not recorded."""
    cpu = [rec.cpu_step for rec in r.trajectory.records if rec.cpu_step is not None]
    return float(np.median(cpu) * 1000) if cpu else None


def busy_note(load: tuple | None, cores: int | None) -> str | None:
    """A warning when the machine was busy while the comparison ran: the 1-minute load average
    (before, after) above BUSY_LOAD per core."""
    if not load or not cores or max(load) <= BUSY_LOAD * cores:
        return None
    return (
        f"**Timed on a busy machine**: the load average was {load[0]:.1f} before and "
        f"{load[1]:.1f} after this comparison on {cores} core{'s' if cores > 1 else ''}, so "
        "other processes competed for the cores. Wall times and speed-ups are noisy; compare the "
        "CPU ms column, or rerun on an idle machine."
    )


def onestep_view(out: dict, snr_switch) -> None:
    """One step from the reference's own x_t: r² and MSE against it, along the SNR."""
    res = out["results"]
    snr = res[REFERENCE].trajectory.scalars("snr")
    others = {m: r for m, r in res.items() if m != REFERENCE}
    switch = {"hybrid switch": snr_switch} if "hybrid" in res else None
    left, right = st.columns(2)
    left.plotly_chart(
        figs.curves_vs_snr(
            {m: (snr, np.array(r.onestep_r2)) for m, r in others.items()},
            "one-step r² vs pca", "One step from the same x_t: r²", vlines=switch,
        ),
        key="cmp_r2", config=chart_config("cmp_r2"),
    )
    right.plotly_chart(
        figs.curves_vs_snr(
            {m: (snr, np.maximum(np.array(r.onestep_mse), 1e-12)) for m, r in others.items()},
            "one-step MSE vs pca", "One step from the same x_t: MSE", vlines=switch, ylog=True,
        ),
        key="cmp_mse", config=chart_config("cmp_mse"),
    )


def copies_view(out: dict) -> None:
    st.subheader("Copies or new images?")
    left, right = st.columns([2, 3])
    left.plotly_chart(
        figs.nn_distances({m: out["nn"][m][1] for m in out["results"]}, out["train_scale"]),
        key="cmp_nn", config=chart_config("cmp_nn"),
    )
    right.markdown(
        "The **optimal** (empirical-Bayes) denoiser's posterior collapses onto one training "
        "image, so its samples are copies: distance about 0. The **local** methods (pca, "
        "golddiff, hybrid) combine different training images in different pixel neighbourhoods, "
        "so their samples are not copies: their distances sit near the typical gap between two "
        "distinct training images (dotted line), some a little below it, none near 0. **wiener** "
        "is a single Gaussian: new, but blurry."
    )


def ablation_view(curves: dict) -> None:
    st.subheader("Ablation: random pool vs nearest pool")
    left, right = st.columns([3, 2])
    left.plotly_chart(
        figs.curves_vs_snr(
            curves, "one-step r² vs pca", "GoldDiff pool mode: one-step r²", yrange=None
        ),
        key="cmp_ablation_fig", config=chart_config("cmp_ablation_fig"),
    )
    right.markdown(
        "At high noise (left) the posterior is nearly uniform: a **random** pool of $m_t$ images "
        "is an unbiased Monte-Carlo sample of it, while the **nearest** images are a biased "
        "sample, hence the lower $r^2$. At low noise the posterior has concentrated on the "
        "nearest images and both modes agree."
    )
