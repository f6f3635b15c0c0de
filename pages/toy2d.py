"""2-D toy page: the paper's Figure 1 made interactive. Place the start noise, scrub t, watch the
posterior
over training points concentrate onto the golden subset. UI only: the math is in
golddiff.explore.lessons."""

import streamlit as st

from golddiff import DenoiserParams, load_dataset
from golddiff.explore import lesson_figures as figs
from golddiff.explore import lessons
from pages.common import advance_play, chart_config, finish_play, play_button, show_error

TOYS = ["moons", "gmm"]

st.title("2-D toy: posterior concentration")
st.markdown(
    "Each dot is a training point. A start point $x_T$ (pure noise) follows the deterministic DDIM "
    "trajectory of GoldDiff. At every timestep the exact posterior $w_i(x_t)$ over the training points is "
    "shown as colour: at high noise it is spread over all of them, at low noise a handful carry all the "
    "mass. Red rings mark the golden subset $S_t$ GoldDiff aggregates over. **Click anywhere on the "
    "plot** (or type coordinates) to move the start point, and scrub $t$ below it."
)

# A click on the plot's faint start grid (trace 0) sets the start point; applied once per new click.
event = st.session_state.get("toy_plot")
points = (event or {}).get("selection", {}).get("points", []) if event else []
grid_clicks = [p for p in points if p.get("curve_number") == 0]
if grid_clicks:
    p = grid_clicks[-1]
    sig = (round(p["x"], 4), round(p["y"], 4))
    if st.session_state.get("toy_last_click") != sig:
        st.session_state["toy_last_click"] = sig
        st.session_state["toy_x"], st.session_state["toy_y"] = float(sig[0]), float(sig[1])

st.session_state.setdefault("toy_x", 1.6)
st.session_state.setdefault("toy_y", -1.2)
c = st.columns([1.2, 1, 1, 1, 1.2])
name = c[0].radio("Toy set", TOYS, horizontal=True, key="toy_name")
x0 = c[1].number_input("start x", -2.0, 2.0, step=0.1, format="%.2f", key="toy_x")
y0 = c[2].number_input("start y", -2.0, 2.0, step=0.1, format="%.2f", key="toy_y")
steps = c[3].number_input("DDIM steps", 2, 200, 50, key="toy_steps")
pool = c[4].radio(
    "pool",
    ["random", "nearest"],
    horizontal=True,
    key="toy_pool",
    help="random: the published Monte-Carlo pool of m_t points; nearest: screen all N (ablation)",
)

try:
    ds = load_dataset(name)
    d = DenoiserParams.dataset_defaults(ds.N, ds.shape)
    with st.expander(f"Golden-subset sizes (N = {ds.N}; defaults N/20 and N/10 as in the paper)"):
        k = st.columns(3)
        k_min = k[0].number_input("k_min", 1, ds.N, d["k_min"], key=f"toy_kmin_{name}")
        k_max = k[1].number_input("k_max", 1, ds.N, d["k_max"], key=f"toy_kmax_{name}")
        seed = k[2].number_input("seed (random pool draws)", 0, 2**31 - 1, 0, key="toy_seed")
    traj = lessons.toy_run(
        ds,
        (x0, y0),
        steps=int(steps),
        seed=int(seed),
        k_min=int(k_min),
        k_max=int(k_max),
        pool=pool,
    )
except ValueError as e:
    show_error(e)
    st.stop()

ts = [r.t for r in traj.records]
if st.session_state.get("toy_t") not in ts:
    st.session_state["toy_t"] = min(
        ts, key=lambda v: abs(v - 200)
    )  # where the posterior is concentrating
playing = advance_play("toy", ts)
left, right = st.columns([3, 2])
with left:
    c = st.columns([5, 1], vertical_alignment="bottom")
    t = c[0].select_slider("timestep t (left: pure noise, right: clean)", options=ts, key="toy_t")
    play_button(c[1], "toy", ts, playing)
    frame = lessons.toy_frame(ds, traj, ts.index(t))
    st.plotly_chart(
        figs.toy_scene(frame),
        key="toy_plot",
        on_select="rerun",
        selection_mode="points",
        config={**chart_config("toy_plot"), "scrollZoom": False},
    )
with right:
    m = st.columns(3)
    m[0].metric(
        "perplexity",
        f"{frame['perplexity']:.1f}",
        help="exp(H): the effective number of training points under the posterior",
    )
    m[1].metric(
        "k_t", frame["k_t"], help=f"golden subset size; pool m_t = {frame['m_t']} of N = {ds.N}"
    )
    if frame["captured"] is not None:
        m[2].metric(
            "W_S",
            f"{frame['captured']:.3f}",
            help="captured mass: posterior mass of the golden subset under the exact global posterior",
        )
    st.plotly_chart(
        figs.concentration_vs_snr(
            traj.scalars("snr"),
            traj.series("entropy")[:, 0],
            traj.series("perplexity")[:, 0],
            ds.N,
            traj.scalars("k_t"),
            frame["snr"],
        ),
        key="toy_entropy", config=chart_config("toy_entropy"),
    )
    st.caption(
        "Perplexity is the effective number of points the posterior spreads over. While it is far above "
        "k_t the golden subset is a random sample of a near-uniform posterior (captured mass about "
        "k_t/N); once it falls below k_t the subset holds the whole support and GoldDiff is exact."
    )
finish_play(playing)
