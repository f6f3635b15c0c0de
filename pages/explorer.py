"""Explorer: run GoldDiff step by step, then scrub the timesteps and watch the golden subset shrink.

UI only: sampling, diagnostics and nearest images come from golddiff; figures from
golddiff.explore. The last result lives in st.session_state["explorer"]; moving the slider, clicking
a curve or picking a sample re-renders only the `views` fragment and never samples again. A first
visit shows a finished run of the sidebar's settings (cached once per process).
"""

import time

import streamlit as st
from streamlit.errors import StreamlitAPIException

import golddiff
from golddiff import LABELS, DenoiserParams
from golddiff.explore import figures, lessons, subset_figures, takeaway
from golddiff.explore.scenarios import SCENARIOS
from pages.common import (
    build_denoiser,
    chart_config,
    check_run_cost,
    get_corpus_cached,
    get_dataset,
    get_map_cached,
    show_error,
    train_scale_cached,
    url_errors,
    watch_session,
)

STATE = "explorer"  # session_state key of the last result
PLAY_DELAY = 0.7  # seconds per frame while playing
RUNS_KEPT = 8  # finished runs kept for every session
STICKY = """<style>
div[data-testid="stLayoutWrapper"]:has(> .st-key-ex_controls) {position: sticky; top: 3.75rem;
  z-index: 990; background: var(--background-color, #fff); padding: 0.3rem 0 0.4rem 0;
  border-bottom: 1px solid rgba(49, 51, 63, 0.15);}
</style>"""  # the controls' wrapper sticks below the header while the views scroll

cfg = st.session_state.get("cfg")
st.title("Explorer: watch the golden subset shrink")
st.markdown(
    "A diffusion model turns noise into an image in a few denoising steps. The **analytical** "
    "denoiser used here needs no training: at every step it guesses the clean image as a weighted "
    "average of **training images**, weighted by how well each one explains the current noisy "
    "image (the *posterior*). Early on, with lots of noise, thousands of images are equally "
    "plausible; later only a handful are. **GoldDiff** exploits this: it averages over a small "
    "retrieved *golden subset* $S_t$ of $k_t$ images instead of all $N$."
)
if cfg is None:
    st.info("Pick a dataset that loads in the sidebar to start.")
    st.stop()


def describe(key: tuple) -> str:
    dataset, method, steps, n, seed, device = key[:6]
    return f"{method} on {dataset}, {steps} steps, {n} samples, seed {seed}, {device}"


def apply_scenario(i: int) -> None:
    """Set the sidebar to scenario i (runs before the script, so the widgets take the values)."""
    sc = SCENARIOS[i]
    for k, v in sc.settings.items():
        st.session_state[k] = v
    for spec in DenoiserParams.specs():
        if spec.default is None:  # dataset-dependent default: drop the stored value
            st.session_state.pop(f"{spec.name}_{sc.settings['dataset']}", None)
        else:
            st.session_state[spec.name] = spec.default
    for k, v in sc.params.items():
        dflt = DenoiserParams.spec(k).default
        st.session_state[k if dflt is not None else f"{k}_{sc.settings['dataset']}"] = v
    st.session_state.update(ex_scenario=i, ex_autorun=True, url_t=sc.t, ex_want_sample=sc.sample)


@st.cache_resource(show_spinner=False)
def finished_runs() -> dict:
    """Finished runs by settings, shared by every session (the first visit's run of the defaults
    is computed once per process). A plain dict, not a cached function, so that the progress bar
    of the session computing a run can be drawn; errors are never stored."""
    return {}


def cached_run(key: tuple, cfg, on_step) -> dict:
    store = finished_runs()
    if key in store:
        return store[key]
    t0 = time.perf_counter()
    den = build_denoiser(cfg)
    traj = golddiff.sample(den, steps=cfg.steps, n=cfg.n, seed=cfg.seed, callback=on_step)
    nn_idx, nn_dist = lessons.nearest_train(traj.samples, get_dataset(cfg.dataset))
    seconds = time.perf_counter() - t0
    res = dict(
        key=key, traj=traj, seconds=seconds, nn_idx=nn_idx, nn_dist=nn_dist, dataset=cfg.dataset
    )
    while len(store) >= RUNS_KEPT:
        store.pop(next(iter(store)), None)  # the oldest first
    store[key] = res
    return res


# ----------------------------------------------------------------------------- scenarios

with st.expander("Scenarios: one click sets the sidebar for a story", expanded=False):
    cols = st.columns(len(SCENARIOS))
    for i, sc in enumerate(SCENARIOS):
        cols[i].button(
            sc.title, key=f"ex_scenario_{i}", on_click=apply_scenario, args=(i,), width="stretch"
        )
scenario = st.session_state.get("ex_scenario")
if scenario is not None:
    st.info(f"**{SCENARIOS[scenario].title}.** {SCENARIOS[scenario].text}")

# ----------------------------------------------------------------------------- Run

left, right = st.columns([1, 5], vertical_alignment="center")
run = left.button("Run", type="primary", key="ex_run", width="stretch")
right.caption(
    f"Samples with the sidebar settings: **{describe(cfg.key())}**. "
    "Change them in the sidebar, then press Run."
)

stopped = st.session_state.pop("ex_running", None)  # set while a run works, cleared when done
if stopped is not None and not run:
    st.warning(
        f"The run ({stopped}) was stopped before it finished: the page or a setting changed while "
        "it worked. Press **Run** to start it again."
    )
first_visit = STATE not in st.session_state and stopped is None and not url_errors()
if run or st.session_state.pop("ex_autorun", False) or first_visit:
    failed = None
    st.session_state["ex_running"] = describe(cfg.key())
    with st.status(
        f"Sampling {cfg.n} images with {cfg.method} on {cfg.dataset}...", expanded=True
    ) as status:
        bar = st.progress(0.0, text="Preparing the data and its statistics...")

        def on_step(rec):
            bar.progress(
                (rec.step + 1) / cfg.steps,
                text=f"step {rec.step + 1}/{cfg.steps}:  t = {rec.t},  "
                f"{rec.time_step * 1000:.0f} ms",
            )

        kept = cfg.key() in finished_runs()  # computed before (by any visitor): shown at once
        try:
            check_run_cost(cfg)  # GOLDDIFF_APP_MAX_SECONDS
            watch_session()  # stop computing once the tab is closed
            get_corpus_cached(cfg.dataset, cfg.device)
            res = cached_run(cfg.key(), cfg, on_step)
        except ValueError as e:
            failed = e
            status.update(label="Sampling failed: the reason is below.", state="error")
        else:
            st.session_state[STATE] = res
            st.session_state["ex_step"] = 0
            st.session_state["ex_sample"] = st.session_state.pop("ex_want_sample", 0)
            st.session_state["ex_playing"] = False
            status.update(
                label=f"Done: {res['traj'].meta['steps']} steps in {res['seconds']:.1f} s"
                + (" (computed earlier and kept, so shown at once)." if kept else "."),
                state="complete",
                expanded=False,
            )
    st.session_state.pop("ex_running", None)
    if failed is not None:
        show_error(failed)  # in the main area, not inside the collapsed status (finding 1)
        st.stop()

res = st.session_state.get(STATE)
if res is None:
    st.info("Press **Run** to sample with the sidebar settings.")
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


@st.cache_resource(show_spinner=False, max_entries=64)
def spread_cached(key: tuple, step: int, sample: int, _res: dict):
    return lessons.pixel_spread(get_dataset(_res["dataset"]), _res["traj"], step, sample, key[5])


def click_to_step(snr) -> None:
    """A click on the entropy or support curve moves the step (each click is applied once)."""
    for chart in ("ex_entropy", "ex_support"):
        event = st.session_state.get(chart)
        points = (event or {}).get("selection", {}).get("points", []) if event else []
        sig = str(points)
        if points and st.session_state.get(f"{chart}_seen") != sig:
            st.session_state[f"{chart}_seen"] = sig
            step = figures.clicked_step(snr, points)
            if step is not None:
                st.session_state["ex_step"] = step
                st.session_state["ex_playing"] = False


@st.fragment
def views() -> None:
    t_start = time.perf_counter()
    res = st.session_state[STATE]
    traj, recs = res["traj"], res["traj"].records
    S, B = len(recs), traj.samples.shape[0]
    if st.session_state.get("ex_playing") and "ex_next" in st.session_state:
        st.session_state["ex_step"] = st.session_state.pop("ex_next")
    want_t = st.session_state.pop("url_t", None)  # from the link or a scenario
    if want_t is not None:
        st.session_state["ex_step"] = min(range(S), key=lambda i: abs(recs[i].t - want_t))
    click_to_step(traj.scalars("snr"))
    if st.session_state.get("ex_step", 0) >= S:
        st.session_state["ex_step"] = 0
    if st.session_state.get("ex_sample", 0) >= B:
        st.session_state["ex_sample"] = 0
    playing = st.session_state.get("ex_playing", False)

    # --- the controls stay in view (sticky) above the curves and images they drive
    st.html(STICKY)
    with st.container(key="ex_controls"):
        c = st.columns([6, 1, 1.3], vertical_alignment="bottom")
        step = c[0].select_slider(
            "Timestep (left: pure noise, right: clean); or click a point on a curve",
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
    st.query_params["t"] = str(rec.t)  # the link holds the step
    data = get_dataset(res["dataset"])

    # --- curves along the whole run: click a point to move the step
    left, right = st.columns(2)
    select = dict(on_select="rerun", selection_mode="points")
    left.plotly_chart(
        figures.entropy_vs_snr(traj, step, sample),
        key="ex_entropy",
        config=chart_config("entropy_vs_snr"),
        **select,
    )
    right.plotly_chart(
        figures.support_vs_snr(traj, step, sample),
        key="ex_support",
        config=chart_config("support_vs_snr"),
        **select,
    )

    # --- images of this step
    spread = spread_cached(res["key"], step, sample, res)
    st.plotly_chart(
        figures.step_images(traj, step, sample, spread),
        key="ex_images",
        config=chart_config(f"step_t{rec.t}"),
        theme=None,  # keep the figure's own colour scales (the theme recolours the spread map)
    )
    left, right = st.columns(2)
    left.caption(
        "Entropy: how spread out the posterior weights are, in nats: log N if every training "
        "image were equally likely, 0 if one image held all the weight. The exact global entropy "
        "(blue, over all N images) collapses as the SNR rises. The mean per-pixel entropy (orange) "
        "of the local posteriors does not fall as far: see *ties* under the images. Faint lines: "
        "the other samples; ring: the chosen step."
    )
    right.caption(
        "How many training images really matter, three ways (perplexity, ESS, k_0.99: the fewest "
        "images holding 99% of the weight), against GoldDiff's budgets: it screens $m_t$ and keeps "
        "$k_t$. Once the true support drops far below $k_t$, a small subset is enough."
    )
    st.caption(
        "$x_t$ is the noisy image fed to the denoiser at this step; $\\hat x_0$ its guess of the "
        "clean image (the weighted average of training images). **Per-pixel entropy**: how many "
        "training images each pixel's own posterior still weighs. It stays high where many "
        "candidates **agree** on the pixel's neighbourhood (ties, such as the empty background of "
        "a digit): many images hold weight, but they all say the same thing. **Per-pixel spread**: "
        "$\\sqrt{\\sum_i w_i(m)\\,(x_i[m]-\\hat x_0[m])^2}$, the standard deviation of the "
        "candidates' values. It is 0 where they agree, so it shows what is still undecided. "
        "Colour scales are fixed over the run."
    )

    # --- numbers of this step
    m = st.columns(4) + st.columns(4)
    m[0].metric("t (timestep)", rec.t)
    m[1].metric("SNR", f"{rec.snr:.2g}")
    m[2].metric("N (training images)", f"{rec.N:,}")
    ppl = rec.perplexity[sample]
    m[3].metric(LABELS["perplexity"], f"{ppl:,.0f}" if ppl >= 10 else f"{ppl:.2f}")
    m[4].metric("m_t (coarse pool)", fmt(rec.m_t, ","))
    m[5].metric("k_t (golden subset)", fmt(rec.k_t, ","))
    m[6].metric(
        LABELS["captured_mass"],
        "—" if rec.captured_mass is None else f"{rec.captured_mass[sample]:.3f}",
    )
    m[7].metric(
        "recall",
        "—" if rec.recall is None else f"{rec.recall[sample]:.2f}",
        help=f"{LABELS['recall']}: the share of the exact posterior's k_t heaviest images that "
        "S_t holds. Once nearly all weight sits on fewer than k_t images the rest of that "
        "top-k_t are ties at about 0, so recall can read low while W_S is 1.",
    )
    st.caption(
        "**m_t**: how many training images GoldDiff screens at this step (a random pool by "
        "default, growing as the noise falls); **k_t**: how many it keeps and averages (the "
        "golden subset $S_t$, shrinking). **W_S**: the share of the *exact* posterior weight (over "
        "all N images) inside $S_t$. At high noise all images are about equally likely, so a "
        "random $S_t$ holds about $k_t/N$ of it; that is fine, because a random sample of a flat "
        "posterior averages to the same guess. As the noise falls the weight piles onto a few "
        "images: $W_S$ reaches 1 when $S_t$ holds them, 0 when the random pool missed them."
    )
    warning = figures.miss_warning(traj, step, sample)
    if warning:
        st.warning(warning, icon=":material/report:")

    # --- the exact posterior's top images next to the golden subset
    left, right = st.columns([1, 2])
    left.subheader("Exact posterior: top 8")
    left.plotly_chart(
        figures.global_top_gallery(traj, step, sample, data.images),
        key="ex_top",
        config=chart_config(f"posterior_top_t{rec.t}"),
    )
    left.caption(
        f"The images with the largest exact posterior weight **w** over all N = {rec.N:,}, at "
        "this step. "
        + (
            "**MISSED**: not in the golden subset $S_t$."
            if rec.subset_idx is not None
            else "This step has no golden subset."
        )
    )
    idx, w, kind = figures.subset_view(traj, step, sample)
    if kind == "subset":
        right.subheader(f"Golden subset $S_t$: top {len(idx)} of its {rec.k_t:,} images")
    else:
        right.subheader(f"Global posterior: top {len(idx)} of all {rec.N:,} images")
    right.plotly_chart(
        figures.subset_gallery(traj, step, sample, data.images),
        key="ex_subset",
        config=chart_config(f"subset_t{rec.t}"),
    )
    right.caption(figures.subset_caption(traj, step, sample))

    if step == S - 1:
        memorization(res, traj, sample, data)

    # --- take it away
    st.subheader("Take it away")
    d = st.columns(3)
    name = f"{res['dataset']}_{traj.meta['method']}_seed{traj.meta['seed']}"
    d[0].download_button(
        "Run (.npz, as the CLI's --out)",
        data=lambda: takeaway.run_bytes(traj),
        file_name=f"{name}.npz",
        mime="application/octet-stream",
        key="ex_dl_npz",
        icon=":material/download:",
    )
    d[1].download_button(
        f"Animated GIF of sample {sample + 1}",
        data=lambda: takeaway.run_gif(traj, sample, data.images.numpy()),
        file_name=f"{name}_sample{sample + 1}.gif",
        mime="image/gif",
        key="ex_dl_gif",
        icon=":material/animation:",
    )
    d[2].caption(
        "The GIF shows, per step: x_t, x0_hat, then the top 8 training images. Every chart saves "
        "as PNG or SVG with the camera button above it (format in the sidebar)."
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


def memorization(res: dict, traj, sample: int, data) -> None:
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
        config=chart_config("memorization"),
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
            f"A 2-D UMAP map of {dataset} places similar images close together, so you can see "
            "where the "
            "golden subset sits and how the guess $\\hat x_0$ travels. It is built once and cached "
            "(about 100 s on a 2-core CPU the first time)."
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
    st.plotly_chart(
        figures.umap_figure(emap, traj, step, sample), key="ex_map", config=chart_config("map")
    )
    st.caption(
        "Grey: training images (similar images lie close). Gold: the golden subset $S_t$ of the "
        "chosen "
        "sample; red: its top images, darker = more weight (one colour scale for the whole run). "
        "Blue line: where the guess $\\hat x_0$ sits "
        "at each step (placed among its nearest training images), ringed at the chosen step. Early "
        "guesses are blurry averages and sit between clusters; the subset then narrows to one "
        "region."
    )


views()
