"""The Explorer's views of one step of a run: each a short render function (figures come from
golddiff.explore). Nothing here samples; `explorer.py` decides what is shown."""

from __future__ import annotations

import streamlit as st

from app_pages import play
from app_pages.downloads import Download, offer
from app_pages.resources import get_dataset, train_scale_cached
from app_pages.widgets import chart_config
from golddiff import LABELS
from golddiff.explore import figures, galleries, lessons, subset_figures, takeaway

STICKY = """<style>
div[data-testid="stLayoutWrapper"]:has(> .st-key-ex_controls) {position: sticky; top: 3.75rem;
  z-index: 990; background: var(--background-color, #fff); padding: 0.3rem 0 0.4rem 0;
  border-bottom: 1px solid rgba(49, 51, 63, 0.15);}
</style>"""  # the controls' wrapper sticks below the header while the views scroll


def fmt(v, spec: str) -> str:
    return "—" if v is None else format(v, spec)


def controls(traj, view: play.View, extra=None) -> tuple[int, int]:
    """The step slider, Play and the sample picker; they stay in view (sticky) above the views.
    extra(step, sample): more to draw inside the sticky box (the tour)."""
    recs, B = traj.records, traj.samples.shape[0]
    st.html(STICKY)
    with st.container(key="ex_controls"):
        c = st.columns([6, 1, 1.3], vertical_alignment="bottom")
        step = c[0].select_slider(
            "Timestep (left: pure noise, right: clean); or click a point on a curve",
            options=list(range(len(recs))),
            key="ex_step",
            format_func=lambda i: f"t = {recs[i].t}  ·  SNR {recs[i].snr:.2g}",
        )
        play.button(c[1], view)
        sample = c[2].selectbox(
            "Sample", list(range(B)), key="ex_sample", format_func=lambda b: f"sample {b + 1}"
        )
        if extra is not None:
            extra(step, sample)
    return step, sample


def screen(cfg, traj, step: int, sample: int) -> None:
    """One projector screen under the controls: the entropy and support curves (a click on a
    point moves the step) beside the step's images, each with its caption below."""
    left, mid, right = st.columns([1, 1, 1.1])
    select = dict(on_select="rerun", selection_mode="points")
    left.plotly_chart(
        figures.entropy_vs_snr(traj, step, sample), key="ex_entropy",
        config=chart_config("entropy_vs_snr"), **select,
    )
    mid.plotly_chart(
        figures.support_vs_snr(traj, step, sample), key="ex_support",
        config=chart_config("support_vs_snr"), **select,
    )
    right.plotly_chart(
        galleries.step_images(traj, step, sample, spread_cached(cfg, step, sample, traj)),
        key="ex_images",
        config=chart_config(f"step_t{traj.records[step].t}"),
        theme=None,  # keep the figure's own colour scales (the theme recolours the spread map)
    )
    left.caption(figures.entropy_caption(traj, traj.records[step]))
    mid.caption(figures.support_caption(traj, traj.records[step]))
    right.caption(step_caption(traj.records[step]))


def has_subset(traj) -> bool:
    return any(r.subset_idx is not None for r in traj.records)


@st.cache_resource(show_spinner=False, max_entries=64)
def maps_cached(cfg, step: int, sample: int, _traj):
    """(per-pixel spread, pixel sources) of a step, one kernel pass, kept per run and step."""
    return lessons.pixel_maps(get_dataset(cfg.dataset), _traj, step, sample, cfg.device)


def spread_cached(cfg, step: int, sample: int, traj):
    return maps_cached(cfg, step, sample, traj)[0]


def sources_cached(cfg, step: int, sample: int, traj):
    return maps_cached(cfg, step, sample, traj)[1]


def step_caption(rec) -> str:
    guess = {
        "wiener": "the Gaussian (Wiener) guess from the data's mean and covariance alone",
        "optimal": "the weighted average of all training images under the exact posterior",
    }.get(rec.method, "per pixel, the weighted average of training images under that pixel's "
          "own posterior")
    text = f"$x_t$ is the noisy image fed to the denoiser at this step; $\\hat x_0$ its guess: {guess}."
    if rec.pixel_entropy is not None:
        text += (
            " **Per-pixel entropy**: how many training images each pixel's own posterior still "
            "weighs. It stays high where many candidates **agree** on the pixel's neighbourhood "
            "(ties, such as the empty background of a digit)."
        )
    if rec.method != "wiener":
        text += (
            " **Per-pixel spread**: $\\sqrt{\\sum_i w_i(m)\\,(x_i[m]-\\hat x_0[m])^2}$, the "
            "standard deviation of the candidates' values: 0 where they agree, so it shows what "
            "is still undecided."
        )
    return text + " Colour scales are fixed over the run."


def numbers(traj, step: int, sample: int) -> None:
    """The step's numbers: t, SNR, N, perplexity, and for a step with a golden subset GoldDiff's
    m_t, k_t, W_S and recall."""
    rec = traj.records[step]
    subset = rec.subset_idx is not None
    m = st.columns(4) + (st.columns(4) if subset else [])
    m[0].metric("t (timestep)", rec.t)
    m[1].metric("SNR", f"{rec.snr:.2g}")
    m[2].metric("N (training images)", f"{rec.N:,}")
    ppl = rec.perplexity[sample]
    m[3].metric(LABELS["perplexity"], f"{ppl:,.0f}" if ppl >= 10 else f"{ppl:.2f}")
    if not subset:
        if has_subset(traj):  # hybrid's Wiener steps
            st.caption(f"This {rec.method} step uses no golden subset.")
        return
    m[4].metric("m_t (coarse pool)", fmt(galleries.pool_size(rec, sample), ","))
    m[5].metric("k_t (golden subset)", fmt(galleries.subset_size(rec, sample), ","))
    m[6].metric(LABELS["captured_mass"], f"{rec.captured_mass[sample]:.3f}")
    m[7].metric(
        "recall",
        "—" if rec.recall is None else f"{rec.recall[sample]:.2f}",
        help=f"{LABELS['recall']}: the share of the exact posterior's k_t heaviest images that "
        "S_t holds. Once nearly all weight sits on fewer than k_t images the rest of that "
        "top-k_t are ties at about 0, so recall can read high while W_S is 0, or low while W_S "
        "is 1. It reads — under the adaptive and local subsets: their k_t differs from sample "
        "to sample, and the run keeps no top-k_t per sample to compare with.",
    )
    st.caption(numbers_caption(rec, sample))
    if warning := galleries.miss_warning(traj, step, sample):
        st.warning(warning, icon=":material/report:")


def numbers_caption(rec, sample: int) -> str:
    text = (
        "**m_t**: how many training images GoldDiff screens at this step; **k_t**: how many it "
        "keeps and averages (the golden subset $S_t$). **W_S**: the share of the *exact* "
        "posterior weight (over all N images) inside $S_t$. At high noise all images are about "
        "equally likely, so a random $S_t$ holds about $k_t/N$ of it; that is fine, because a "
        "random sample of a flat posterior averages to the same guess. As the noise falls the "
        "weight piles onto a few images: $W_S$ reaches 1 when $S_t$ holds them, 0 when the pool "
        "missed them."
    )
    ws, ppl, rc = float(rec.captured_mass[sample]), float(rec.perplexity[sample]), rec.recall
    if rc is not None and ppl < rec.k_t and abs(float(rc[sample]) - ws) > 0.3:
        text += (
            f" Here recall ({float(rc[sample]):.2f}) and W_S ({ws:.3f}) disagree: the posterior "
            f"sits on about {ppl:.3g} images, so the rest of its top {rec.k_t:,} have weight ~0 "
            "and recall counts them as much as the ones that matter."
        )
    if rec.m_b is not None:  # the local subset: what S_t is at this step
        text += " " + galleries.local_step_makeup(rec, sample)
    return text


def memorization(res, sample: int, data) -> None:
    """The final sample beside its nearest training image, against the typical gap."""
    i, d = int(res.nn_idx[sample]), float(res.nn_dist[sample])
    scale = train_scale_cached(res.cfg.dataset)
    left, right = st.columns([2, 3], vertical_alignment="center")
    left.plotly_chart(
        galleries.gallery(
            [res.traj.samples[sample], data.images[i].numpy()],
            ["final sample", f"nearest training image #{i}"],
            ["final sample", f"training image #{i}"],
            ncol=2,
            width_px=320,
        ),
        key="ex_nn",
        config=chart_config("memorization"),
    )
    right.markdown(
        f"**Memorization check.** RMS pixel distance to the nearest training image: **{d:.3f}** "
        f"(pixels in 0..1). A training image of {res.cfg.dataset} typically lies "
        f"**{scale:.3f}** from its nearest other training image."
    )
    right.caption(
        "A distance near 0 means the sample is a copy of a training image (the exact, "
        "all-N posterior does this). A larger distance only says it is no copy: a new image and "
        "a blur (such as the Wiener guess) both lie far from every training image, so look at "
        "the pair."
    )


@st.cache_resource(show_spinner=False, max_entries=32)
def download_bytes(cfg, what: str, sample: int, _traj, _images) -> bytes:
    """The bytes of one download, made once per run (cfg) and sample."""
    if what == "npz":
        return takeaway.run_bytes(_traj)
    return takeaway.run_gif(_traj, sample, _images.numpy())


def takeaways(cfg, traj, sample: int, data) -> None:
    """The run as the CLI's .npz and the chosen sample as an animated GIF."""
    st.subheader("Take it away")
    d = st.columns(3)
    name = f"{cfg.dataset}_{traj.meta['method']}_seed{traj.meta['seed']}"
    offer(d[0], Download(
        "ex_dl_npz", "Run (.npz, as the CLI's --out)", f"{name}.npz", "application/octet-stream",
        lambda: download_bytes(cfg, "npz", 0, traj, data.images),
    ))
    offer(d[1], Download(
        "ex_dl_gif", f"Animated GIF of sample {sample + 1}", f"{name}_sample{sample + 1}.gif",
        "image/gif", lambda: download_bytes(cfg, "gif", sample, traj, data.images),
        icon=":material/animation:",
    ))
    d[2].caption(
        "The GIF shows, per step: x_t, x0_hat, then the top 8 training images. Every chart saves "
        "as PNG or SVG with the camera button above it (format in the sidebar)."
    )


def adaptive_k(traj, step: int) -> None:
    if (k_fig := subset_figures.k_per_sample(traj, step)) is not None:  # adaptive, local
        st.plotly_chart(k_fig, key="ex_k_adaptive")
        st.caption(subset_figures.k_per_sample_caption(traj))
