"""2-D toy page: the paper's Figure 1 made interactive. Place the start noise, scrub t, watch the
posterior over training points concentrate onto the golden subset. The page: its own controls
(the sidebar does not apply here), the run, the view (step, playing), then the scene and its
numbers. UI only: the math is in golddiff.explore.lessons."""

from dataclasses import dataclass

import streamlit as st

from app_pages import play
from app_pages.errors import show_error
from app_pages.widgets import chart_config, number, stop_on
from golddiff import DenoiserParams, load_dataset
from golddiff.explore import lesson_figures as figs
from golddiff.explore import lessons

TOYS = ["moons", "gmm"]
INTRO = (
    "Each dot is a training point. A start point $x_T$ (pure noise) follows the deterministic "
    "DDIM trajectory of GoldDiff. At every timestep the exact posterior $w_i(x_t)$ over the "
    "training points is shown as colour: at high noise it is spread over all of them, at low noise "
    "a handful carry all the mass. Red rings mark the golden subset $S_t$ GoldDiff aggregates "
    "over. **Click anywhere on the plot** (or type coordinates) to move the start point, and "
    "scrub $t$ below it."
)


@dataclass(frozen=True)
class ToyConfig:
    name: str  # one of TOYS
    start: tuple[float, float]  # x_T
    steps: int
    pool: str
    k_min: int
    k_max: int
    seed: int


def take_click() -> None:
    """A click on the plot's faint start grid (trace 0) sets the start point, once per click."""
    event = st.session_state.get("toy_plot") or {}
    points = (event.get("selection") or {}).get("points", [])
    grid_clicks = [p for p in points if p.get("curve_number") == 0]
    if grid_clicks:
        p = grid_clicks[-1]
        sig = (round(p["x"], 4), round(p["y"], 4))
        if st.session_state.get("toy_last_click") != sig:
            st.session_state["toy_last_click"] = sig
            st.session_state["toy_x"], st.session_state["toy_y"] = float(sig[0]), float(sig[1])


def controls() -> ToyConfig:
    """The toy's own settings; each invalid value is a sentence and the page stops."""
    s = st.session_state
    for key, value in (("toy_x", 1.6), ("toy_y", -1.2), ("toy_steps", 50), ("toy_seed", 0)):
        s.setdefault(key, value)
    c, problems = st.columns([1.2, 1, 1, 1, 1.2]), []
    name = c[0].radio("Toy set", TOYS, horizontal=True, key="toy_name")
    x0 = number(c[1], "start x", -2.0, 2.0, "toy_x", problems, whole=False, format="%.2f")
    y0 = number(c[2], "start y", -2.0, 2.0, "toy_y", problems, whole=False, format="%.2f")
    steps = number(c[3], "DDIM steps", 2, 200, "toy_steps", problems)
    pool = c[4].radio(
        "pool", ["random", "nearest"], horizontal=True, key="toy_pool",
        help="random: the published Monte-Carlo pool of m_t points; nearest: screen all N "
        "(ablation)",
    )
    ds = load_dataset(name)  # generated on the fly, cached by the library
    N, d = ds.N, DenoiserParams.dataset_defaults(ds.N, ds.shape)
    with st.expander(f"Golden-subset sizes (N = {N}; defaults N/20 and N/10 as in the paper)"):
        k = st.columns(3)
        s.setdefault(f"toy_kmin_{name}", d["k_min"])
        s.setdefault(f"toy_kmax_{name}", d["k_max"])
        k_min = number(k[0], "k_min", 1, N, f"toy_kmin_{name}", problems)
        k_max = number(k[1], "k_max", 1, N, f"toy_kmax_{name}", problems)
        seed = number(k[2], "seed (random pool draws)", 0, 2**31 - 1, "toy_seed", problems)
    stop_on(problems)
    return ToyConfig(name, (x0, y0), steps, pool, k_min, k_max, seed)


def scene(ds, traj, view: play.View, ts: list[int]) -> dict:
    """The slider with Play over the scene of the chosen step; returns that step's frame."""
    c = st.columns([5, 1], vertical_alignment="bottom")
    step = c[0].select_slider(
        "timestep t (left: pure noise, right: clean)", options=list(range(len(ts))),
        format_func=lambda i: str(ts[i]), key="toy_step",
    )
    play.button(c[1], view)
    frame = lessons.toy_frame(ds, traj, step)
    st.plotly_chart(
        figs.toy_scene(frame), key="toy_plot", on_select="rerun", selection_mode="points",
        config={**chart_config("toy_plot"), "scrollZoom": False},
    )
    return frame


def concentration(ds, traj, frame: dict) -> None:
    """Perplexity, k_t and W_S of the step, and their curves along the run."""
    m = st.columns(3)
    m[0].metric(
        "perplexity", f"{frame['perplexity']:.1f}",
        help="exp(H): the effective number of training points under the posterior",
    )
    m[1].metric(
        "k_t", frame["k_t"], help=f"golden subset size; pool m_t = {frame['m_t']} of N = {ds.N}"
    )
    if frame["captured"] is not None:
        m[2].metric(
            "W_S", f"{frame['captured']:.3f}",
            help="captured mass: posterior mass of the golden subset under the exact global "
            "posterior",
        )
    st.plotly_chart(
        figs.concentration_vs_snr(
            traj.scalars("snr"), traj.series("entropy")[:, 0], traj.series("perplexity")[:, 0],
            ds.N, traj.scalars("k_t"), frame["snr"],
        ),
        key="toy_entropy", config=chart_config("toy_entropy"),
    )
    st.caption(
        "Perplexity is the effective number of points the posterior spreads over. While it is far "
        "above k_t the golden subset is a random sample of a near-uniform posterior (captured "
        "mass about k_t/N); once it falls below k_t the subset holds the whole support and "
        "GoldDiff is exact."
    )


st.title("2-D toy: posterior concentration")
st.markdown(INTRO)
take_click()
toy = controls()
try:
    ds = load_dataset(toy.name)
    traj = lessons.toy_run(
        ds, toy.start, steps=toy.steps, seed=toy.seed, k_min=toy.k_min, k_max=toy.k_max,
        pool=toy.pool,
    )
except ValueError as e:
    show_error(e)
    st.stop()
ts = [r.t for r in traj.records]
start = min(range(len(ts)), key=lambda i: abs(ts[i] - 200))  # where the posterior concentrates
view = play.advance(play.View.load("toy", len(ts), start=start))
left, right = st.columns([3, 2])
with left:
    frame = scene(ds, traj, view, ts)
with right:
    concentration(ds, traj, frame)
play.finish(view)
