"""Explorer: run GoldDiff step by step, then scrub the timesteps and watch the golden subset shrink.

UI only: sampling, diagnostics and nearest images come from golddiff; figures from
golddiff.explore.figures.
The last result lives in st.session_state["explorer"]; moving the slider or picking a sample
re-renders only
the `views` fragment and never samples again.
"""

import time

import streamlit as st
from streamlit.errors import StreamlitAPIException

import golddiff
from golddiff import LABELS
from golddiff.explore import figures, lessons, subset_figures
from pages.common import build_denoiser, get_dataset, get_map_cached, show_error, train_scale_cached

STATE = "explorer"  # session_state key of the last result
PLAY_DELAY = 0.7  # seconds per frame while playing

cfg = st.session_state.get("cfg")
st.title("Explorer: watch the golden subset shrink")
st.markdown(
    "A diffusion model turns noise into an image in a few denoising steps. The **analytical** denoiser used here "
    "needs no training: at every step it guesses the clean image as a weighted average of **training images**, "
    "weighted by how well each one explains the current noisy image (the *posterior*). Early on, with lots of "
    "noise, thousands of images are equally plausible; later only a handful are. **GoldDiff** exploits this: "
    "it averages over a small retrieved *golden subset* $S_t$ of $k_t$ images instead of all $N$."
)
if cfg is None:
    st.info("Pick a dataset that loads in the sidebar to start.")
    st.stop()


def describe(key: tuple) -> str:
    dataset, method, steps, n, seed, device = key[:6]
    return f"{method} on {dataset}, {steps} steps, {n} samples, seed {seed}, {device}"


# ----------------------------------------------------------------------------- Run

left, right = st.columns([1, 5], vertical_alignment="center")
run = left.button("Run", type="primary", key="ex_run", width="stretch")
right.caption(
    f"Samples with the sidebar settings: **{describe(cfg.key())}**. "
    "Change them in the sidebar, then press Run."
)

if run:
    with st.status(
        f"Sampling {cfg.n} images with {cfg.method} on {cfg.dataset}...", expanded=True
    ) as status:
        bar = st.progress(0.0, text="Preparing the data and its statistics...")
        t0 = time.perf_counter()

        def on_step(rec):
            bar.progress(
                (rec.step + 1) / cfg.steps,
                text=f"step {rec.step + 1}/{cfg.steps}:  t = {rec.t},  {rec.time_step * 1000:.0f} ms",
            )

        try:
            den = build_denoiser(cfg)
            traj = golddiff.sample(den, steps=cfg.steps, n=cfg.n, seed=cfg.seed, callback=on_step)
            data = get_dataset(cfg.dataset)
            nn_idx, nn_dist = lessons.nearest_train(traj.samples, data)
            seconds = time.perf_counter() - t0
        except ValueError as e:
            status.update(label="Sampling failed.", state="error")
            show_error(e)
            st.stop()
        st.session_state[STATE] = dict(
            key=cfg.key(),
            traj=traj,
            seconds=seconds,
            nn_idx=nn_idx,
            nn_dist=nn_dist,
            dataset=cfg.dataset,
        )
        st.session_state["ex_step"] = 0
        st.session_state["ex_sample"] = 0
        st.session_state["ex_playing"] = False
        status.update(
            label=f"Done: {cfg.steps} steps in {seconds:.1f} s.", state="complete", expanded=False
        )

res = st.session_state.get(STATE)
if res is None:
    st.info(
        "Press **Run**. With the defaults (mnist-5k, golddiff, 10 steps, 4 samples) it takes a few seconds "
        "on a CPU."
    )
    st.stop()
if res["key"] != cfg.key():
    st.warning(
        f"The results below are from the previous settings ({describe(res['key'])}); "
        "press Run to recompute with the current ones."
    )


# ----------------------------------------------------------------------------- views of one step


def toggle_play(last: int) -> None:
    playing = not st.session_state.get("ex_playing", False)
    st.session_state["ex_playing"] = playing
    if playing and st.session_state.get("ex_step", 0) >= last:
        st.session_state["ex_step"] = 0  # replay from the noisiest step


def fmt(v, spec: str) -> str:
    return "—" if v is None else format(v, spec)


@st.fragment
def views() -> None:
    t_start = time.perf_counter()
    res = st.session_state[STATE]
    traj, recs = res["traj"], res["traj"].records
    S, B = len(recs), traj.samples.shape[0]
    if st.session_state.get("ex_playing") and "ex_next" in st.session_state:
        st.session_state["ex_step"] = st.session_state.pop("ex_next")
    if st.session_state.get("ex_step", 0) >= S:
        st.session_state["ex_step"] = 0
    if st.session_state.get("ex_sample", 0) >= B:
        st.session_state["ex_sample"] = 0
    playing = st.session_state.get("ex_playing", False)

    c = st.columns([6, 1, 1.3], vertical_alignment="bottom")
    step = c[0].select_slider(
        "Timestep (left: pure noise, right: clean)",
        options=list(range(S)),
        key="ex_step",
        format_func=lambda i: f"t = {recs[i].t}  ·  SNR {recs[i].snr:.2g}",
    )
    c[1].button(
        "Pause" if playing else "Play",
        icon=":material/pause:" if playing else ":material/play_arrow:",
        key="ex_play",
        on_click=toggle_play,
        args=(S - 1,),
        width="stretch",
    )
    sample = c[2].selectbox(
        "Sample", list(range(B)), key="ex_sample", format_func=lambda b: f"sample {b + 1}"
    )
    rec = recs[step]
    data = get_dataset(res["dataset"])

    # --- numbers of this step
    m = st.columns(4) + st.columns(4)
    m[0].metric("t (timestep)", rec.t)
    m[1].metric("SNR", f"{rec.snr:.2g}")
    m[2].metric("N (training images)", f"{rec.N:,}")
    m[3].metric(
        LABELS["perplexity"],
        (
            f"{rec.perplexity[sample]:,.0f}"
            if rec.perplexity[sample] >= 10
            else f"{rec.perplexity[sample]:.2f}"
        ),
    )
    m[4].metric("m_t (coarse pool)", fmt(rec.m_t, ","))
    m[5].metric("k_t (golden subset)", fmt(rec.k_t, ","))
    m[6].metric(
        LABELS["captured_mass"],
        "—" if rec.captured_mass is None else f"{rec.captured_mass[sample]:.3f}",
    )
    m[7].metric(
        "recall",
        "—" if rec.recall is None else f"{rec.recall[sample]:.2f}",
        help=f"{LABELS['recall']}: the share of the exact posterior's k_t heaviest images that S_t holds. "
        "Once nearly all weight sits on fewer than k_t images the rest of that top-k_t are ties at "
        "about 0, so recall can read low while W_S is 1.",
    )
    st.caption(
        "**m_t**: how many training images GoldDiff screens at this step (a random pool, growing as the noise "
        "falls); **k_t**: how many it keeps and averages (the golden subset $S_t$, shrinking). "
        "**W_S**: the share of the *exact* posterior weight (over all N images) inside $S_t$. At high noise all "
        "images are about equally likely, so a random $S_t$ holds about $k_t/N$ of it; that is fine, because a "
        "random sample of a flat posterior averages to the same guess. As the noise falls the weight piles onto "
        "a few images: $W_S$ reaches 1 when $S_t$ holds them, 0 when the random pool missed them. "
        "**perplexity**: how many images the exact posterior effectively spreads over."
    )

    # --- images of this step
    st.plotly_chart(
        figures.step_images(traj, step, sample), key="ex_images", config={"displayModeBar": False}
    )
    st.caption(
        "$x_t$ is the noisy image fed to the denoiser at this step; $\\hat x_0$ its guess of the clean image "
        "(the weighted average of training images). The entropy map shows, pixel by pixel, how undecided the "
        "local posterior still is: bright = many training images still compete for that pixel, dark = one image "
        "decides it. Same colour scale for every step of this sample."
    )
    if step == S - 1:
        i, d = int(res["nn_idx"][sample]), float(res["nn_dist"][sample])
        scale = train_scale_cached(res["dataset"])
        left, right = st.columns([2, 3], vertical_alignment="center")
        left.plotly_chart(
            figures.gallery(
                [traj.samples[sample], data.images[i].numpy()],
                ["final sample", f"nearest training image #{i}"],
                ["final sample", f"training image #{i}"],
                ncol=2,
                width_px=320,
            ),
            key="ex_nn",
            config={"displayModeBar": False},
        )
        right.markdown(
            f"**Memorization check.** RMS pixel distance to the nearest training image: **{d:.3f}** "
            f"(pixels in 0..1). Two different training images of {res['dataset']} typically lie "
            f"**{scale:.3f}** apart."
        )
        right.caption(
            "A distance near 0 means the sample is a copy of a training image (the exact, "
            "all-N posterior does this). A distance comparable to the typical gap means a new image."
        )

    # --- the golden subset
    idx, w, kind = figures.subset_view(traj, step, sample)
    if kind == "subset":
        st.subheader(f"Golden subset $S_t$: top {len(idx)} of its {rec.k_t:,} images")
        st.caption(
            "The training images GoldDiff averaged at this step, ranked by their mean per-pixel weight "
            "(**w**, summed over the whole subset = 1). Early on the weights are tiny and spread out; "
            "near the end a few images take almost all of it."
        )
    else:
        st.subheader(f"Global posterior: top {len(idx)} of all {rec.N:,} images")
        st.caption(
            f"The {rec.method} step uses no golden subset; these are the training images with the largest "
            "exact posterior weight **w** over all N images."
        )
    st.plotly_chart(
        figures.subset_gallery(traj, step, sample, data.images),
        key="ex_subset",
        config={"displayModeBar": False},
    )

    # --- curves along the whole run
    left, right = st.columns(2)
    left.plotly_chart(figures.entropy_vs_snr(traj, step, sample), key="ex_entropy")
    left.caption(
        "Entropy measures how spread out the posterior weights are: log N if every training image were "
        "equally likely, 0 if one image held all the weight. The global entropy (blue, exact, all N) "
        "collapses as the SNR rises; the mean per-pixel entropy (orange) is that of GoldDiff's local "
        "posteriors. Faint lines: the other samples; ring: the chosen step."
    )
    right.plotly_chart(figures.support_vs_snr(traj, step, sample), key="ex_support")
    right.caption(
        "How many training images really matter, three ways (perplexity, effective sample size, fewest "
        "images holding 99% of the weight), against GoldDiff's budgets: it screens $m_t$ and keeps "
        "$k_t$. Once the true support drops far below $k_t$, a small subset is enough."
    )

    if (k_fig := subset_figures.k_per_sample(traj, step)) is not None:  # adaptive subset only
        st.plotly_chart(k_fig, key="ex_k_adaptive")
    # --- map
    map_view(traj, step, sample, res["dataset"])
    st.caption(
        f"Views drawn in {time.perf_counter() - t_start:.2f} s.", help="time of this re-render"
    )

    # --- play: advance one step per frame
    if playing:
        if step < S - 1:
            time.sleep(PLAY_DELAY)
            st.session_state["ex_next"] = step + 1
        else:
            st.session_state["ex_playing"] = False
        try:
            st.rerun(scope="fragment")  # only the views, when this run is a fragment rerun
        except StreamlitAPIException:
            st.rerun()  # a full run (e.g. the sidebar changed while playing)


def map_view(traj, step: int, sample: int, dataset: str) -> None:
    st.subheader("Map of the training set")
    try:
        from golddiff.explore import embed

        emap = get_map_cached(dataset)
    except (ImportError, AttributeError):
        st.caption(
            "The map needs golddiff.explore.embed, which is not available in this installation."
        )
        return
    if emap is None:
        st.caption(
            f"A 2-D UMAP map of {dataset} places similar images close together, so you can see where the "
            "golden subset sits and how the guess $\\hat x_0$ travels. It is built once and cached "
            "(about a minute on a CPU the first time)."
        )
        if st.button("Build the map", key="ex_build_map", icon=":material/map:"):
            with st.status(f"Building the map of {dataset}...", expanded=True) as status:
                bar = st.progress(0.0, text="starting")
                try:
                    embed.build_map(
                        get_dataset(dataset),
                        progress=lambda f, s: bar.progress(min(1.0, f), text=s),
                    )
                except ValueError as e:
                    status.update(label="The map could not be built.", state="error")
                    show_error(e)
                    return
                status.update(label="Map ready.", state="complete")
            get_map_cached.clear()
            st.rerun()
        return
    st.plotly_chart(figures.umap_figure(emap, traj, step, sample), key="ex_map")
    st.caption(
        "Grey: training images (similar images lie close). Gold: the golden subset $S_t$ of the chosen "
        "sample; red: its top images, darker = more weight. Blue line: where the guess $\\hat x_0$ sits "
        "at each step (placed among its nearest training images), ringed at the chosen step. Early "
        "guesses are blurry averages and sit between clusters; the subset then narrows to one region."
    )


views()
