"""Explorer: run GoldDiff step by step, then scrub the timesteps and watch the posterior narrow.

The page reads top to bottom: the sidebar's Config, the run (from the shared run store, so a first
visit shows a finished run of the defaults at once), the view (step, sample, playing), then the
views of one step, drawn by explorer_views inside one fragment: moving the slider, clicking a
curve or picking a sample redraws only the views and never samples again.
"""

import time
from dataclasses import dataclass

import numpy as np
import streamlit as st

import golddiff
from app_pages import explorer_galleries as gal
from app_pages import explorer_tour as lecture
from app_pages import explorer_views as show
from app_pages import links, play, runs, training_map
from app_pages.config import Config, require_config
from app_pages.errors import show_error
from app_pages.resources import get_corpus_cached, get_dataset
from golddiff import DenoiserParams
from golddiff.explore import figures, lessons
from golddiff.explore.scenarios import SCENARIOS

PAGE = "ex"  # the widget-key prefix of this page
PLAY_DELAY = 0.7  # seconds per frame while playing
INTRO = (
    "A diffusion model turns noise into an image in a few denoising steps. The **analytical** "
    "denoiser used here needs no training: at every step it guesses the clean image as a weighted "
    "average of **training images**, weighted by how well each one explains the current noisy "
    "image (the *posterior*). Early on, with lots of noise, thousands of images are equally "
    "plausible; later only a handful are. **GoldDiff** exploits this: it averages over a small "
    "retrieved *golden subset* $S_t$ of $k_t$ images instead of all $N$."
)


@dataclass(frozen=True)
class ExplorerRun:
    cfg: Config  # the settings it ran with
    traj: golddiff.Trajectory
    seconds: float  # wall time of sampling and the nearest-image search
    nn_idx: np.ndarray  # (B,) nearest training image of each final sample
    nn_dist: np.ndarray  # (B,) its RMS pixel distance


def compute(cfg: Config, on_step) -> ExplorerRun:
    """Sample with the Config, or take the finished run from the shared store."""

    def make() -> ExplorerRun:
        t0 = time.perf_counter()
        traj = golddiff.sample(
            runs.build_denoiser(cfg), steps=cfg.steps, n=cfg.n, seed=cfg.seed, callback=on_step
        )
        nn_idx, nn_dist = lessons.nearest_train(traj.samples, get_dataset(cfg.dataset))
        return ExplorerRun(cfg, traj, time.perf_counter() - t0, nn_idx, nn_dist)

    return runs.shared_runs().once(cfg, make)


def apply_scenario(i: int) -> None:
    """Set the sidebar to scenario i (a callback: it runs before the widgets are drawn)."""
    sc, s = SCENARIOS[i], st.session_state
    s.update(sc.settings)
    for spec in DenoiserParams.specs():
        if spec.default is None:  # dataset-dependent default: drop the stored value
            s.pop(f"{spec.name}_{sc.settings['dataset']}", None)
        else:
            s[spec.name] = spec.default
    for k, v in sc.params.items():
        s[k if DenoiserParams.spec(k).default is not None else f"{k}_{sc.settings['dataset']}"] = v
    s.update(ex_scenario=i, ex_pending=dict(run=True, t=sc.t, sample=sc.sample))


def scenarios() -> None:
    with st.expander("Scenarios: one click sets the sidebar for a story", expanded=False):
        cols = st.columns(len(SCENARIOS))
        for i, sc in enumerate(SCENARIOS):
            cols[i].button(
                sc.title, key=f"ex_scenario_{i}", on_click=apply_scenario, args=(i,),
                width="stretch",
            )


def run_button(cfg: Config) -> bool:
    left, right = st.columns([1, 5], vertical_alignment="center")
    pressed = left.button("Run", type="primary", key="ex_run", width="stretch")
    right.caption(
        f"Samples with the sidebar settings: **{cfg.describe()}**. "
        "Change them in the sidebar, then press Run."
    )
    return pressed


def run_now(cfg: Config, sample: int = 0) -> None:
    """Sample with a progress bar inside a status box; a failure is one sentence below it."""
    failed, kept = None, runs.shared_runs().get(cfg) is not None
    with st.status(
        f"Sampling {cfg.n} images with {cfg.method_label()} on {cfg.dataset}...", expanded=True
    ) as status:
        bar = st.progress(0.0, text="Preparing the data and its statistics...")
        if (others := golddiff.device_sharing(cfg.device)) > 0:
            st.caption(
                f"{others} other run{'s' if others > 1 else ''} on this server "
                f"{'are' if others > 1 else 'is'} using the {cfg.device.split(':')[0].upper()} "
                "too: the runs take turns step by step, so this one is slower than usual."
            )

        def on_step(rec):
            bar.progress(
                (rec.step + 1) / cfg.steps,
                text=f"step {rec.step + 1}/{cfg.steps}:  t = {rec.t},  "
                f"{rec.time_step * 1000:.0f} ms",
            )

        try:
            with runs.working("ex_running", "run"):
                runs.check_run_cost(cfg)  # GOLDDIFF_APP_MAX_SECONDS
                runs.watch_session()  # stop computing once the tab is closed
                get_corpus_cached(cfg.dataset, cfg.device)
                res = compute(cfg, on_step)
        except ValueError as e:
            failed = e
            status.update(label="Sampling failed: the reason is below.", state="error")
        else:
            runs.keep("explorer", cfg, res)
            play.View(PAGE, len(res.traj.records), sample=sample).save()
            status.update(
                label=f"Done: {res.traj.meta['steps']} steps in {res.seconds:.1f} s"
                + (" (computed earlier and kept, so shown at once)." if kept else "."),
                state="complete",
                expanded=False,
            )
    if failed is not None:
        show_error(failed)  # in the main area, not inside the collapsed status
        st.stop()


def pick_step(view: play.View, traj) -> None:
    """A step asked for by the link or a scenario (its t), or by a click on a curve."""
    want_t = st.session_state.pop("url_t", None)
    if want_t is None:
        want_t = st.session_state.get("ex_pending", {}).pop("t", None)
    if want_t is not None:
        view.step = min(range(view.n_steps), key=lambda i: abs(traj.records[i].t - want_t))
    seen = st.session_state.setdefault("ex_clicks_seen", {})
    for chart in ("ex_entropy", "ex_support"):
        points = ((st.session_state.get(chart) or {}).get("selection") or {}).get("points", [])
        if points and seen.get(chart) != str(points):
            seen[chart] = str(points)  # each click is applied once
            if (step := figures.clicked_step(traj.scalars("snr"), points)) is not None:
                view.step, view.playing = step, False


@st.fragment
def views() -> None:
    t_start = time.perf_counter()
    res = runs.last("explorer").value
    traj = res.traj
    view = play.View.load(PAGE, len(traj.records), traj.samples.shape[0])
    pick_step(view, traj)
    lecture.open_from_link(view, len(traj.records), res)
    play.advance(view)
    step, sample = show.controls(traj, view, lambda s, b: lecture.box(res, s, b))
    st.query_params["t"] = str(traj.records[step].t)  # the link holds the step
    data = get_dataset(res.cfg.dataset)
    show.screen(res.cfg, traj, step, sample)
    show.numbers(traj, step, sample)
    gal.galleries(res.cfg, traj, step, sample, data)
    gal.pixel_sources(res.cfg, traj, step, sample, data)
    if step == view.last:
        show.memorization(res, sample, data)
    show.takeaways(res.cfg, traj, sample, data)
    show.adaptive_k(traj, step)
    training_map.map_view(traj, step, sample, res.cfg.dataset)
    st.caption(
        f"Views drawn in {time.perf_counter() - t_start:.2f} s.", help="time of this re-render"
    )
    play.finish(view, PLAY_DELAY)


cfg = require_config("Explorer: watch the posterior narrow onto a few images", INTRO)
scenarios()
pressed = run_button(cfg)
stopped = st.session_state.get("ex_running") is not None
runs.notice_stopped("ex_running", pressed, "Run")
pending = st.session_state.setdefault("ex_pending", {})  # what a scenario asked for
first_visit = runs.last("explorer") is None and not stopped and not links.errors()
if pressed or pending.pop("run", False) or first_visit:
    run_now(cfg, pending.pop("sample", 0))
res = runs.last("explorer")
if res is None:
    st.info("Press **Run** to sample with the sidebar settings.")
    st.stop()
if res.key != cfg:
    st.warning(
        f"The results below are from the previous settings ({res.key.describe()}); "
        "press Run to recompute with the current ones."
    )
if (i := st.session_state.get("ex_scenario")) is not None and res.key == cfg:
    st.info(f"**{SCENARIOS[i].title}.** {SCENARIOS[i].text(res.value.traj)}")  # this run's numbers
views()
