"""The Explorer's guided tour: the stops of golddiff.explore.tour for the run on screen, shown in
the sticky controls with Back / Next, the stop kept in the link (?tour=N, 1-based)."""

from __future__ import annotations

import streamlit as st

from app_pages import explorer_views as show
from app_pages.resources import train_scale_cached
from golddiff.explore import tour

KEY = "ex_tour"  # the 0-based stop on screen; None once the tour is closed


def stops(res, sample: int) -> list[tour.Stop]:
    """The tour of the run on screen for the chosen sample, every number read off the run."""
    cfg, traj = res.cfg, res.traj

    def held_at(step: int) -> int:
        src = show.sources_cached(cfg, step, sample, traj)
        return 0 if src is None else len(src.images)

    nn = (int(res.nn_idx[sample]), float(res.nn_dist[sample]))
    return tour.stops(traj, sample, nn, train_scale_cached(cfg.dataset), held_at)


def _go(i: int | None, step: int | None = None) -> None:
    """Callback: show stop i (None: close the tour) and move the step to it."""
    s = st.session_state
    s[KEY] = i
    if step is not None:
        s["ex_step"], s["ex_playing"] = step, False


def open_from_link(view, n_steps: int, res) -> None:
    """Before the controls are drawn: a link's ?tour=N opens stop N at its step; a first visit
    opens the tour at its first stop (the step the page starts on)."""
    s = st.session_state
    if (n := s.pop("url_tour", None)) is not None:
        route = stops(res, view.sample)
        i = min(max(n, 1), len(route)) - 1
        s[KEY], view.step = i, route[i].step
    s.setdefault(KEY, 0)


def box(res, step: int, sample: int) -> None:
    """The current stop in a bordered box with Back / Next / Close, or a button that starts it."""
    i = st.session_state.get(KEY)
    if i is None:
        st.query_params.pop("tour", None)
        st.button("Guided tour", key="ex_tour_start", icon=":material/school:",
                  on_click=_go, args=(0, stops(res, sample)[0].step))
        return
    route = stops(res, sample)
    i = min(i, len(route) - 1)
    stop = route[i]
    if i == 0:  # the first stop is where every visit starts: the link needs no tour
        st.query_params.pop("tour", None)
    else:
        st.query_params["tour"] = str(i + 1)
    with st.container(border=True, key="ex_tour_box"):
        text, back, nxt, close = st.columns([8, 1, 1, 1], vertical_alignment="center")
        text.markdown(f"**Tour {i + 1}/{len(route)}: {stop.title}.** {stop.text}")
        back.button("Back", key="ex_tour_back", disabled=i == 0, width="stretch",
                    on_click=_go, args=(i - 1, route[max(i - 1, 0)].step))
        last = i == len(route) - 1
        nxt.button("Next", key="ex_tour_next", disabled=last, type="primary", width="stretch",
                   on_click=_go, args=(i + 1, route[min(i + 1, len(route) - 1)].step))
        close.button("Close", key="ex_tour_close", width="stretch", on_click=_go, args=(None,))
        if step != stop.step:
            text.caption(f"This stop is about t = {res.traj.records[stop.step].t}; the slider "
                         f"shows t = {res.traj.records[step].t}.")
