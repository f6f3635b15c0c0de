"""The link (st.query_params) and the sidebar, both ways: a link's settings fill the widgets once
per session; the sidebar's settings are written back. A bad value in the link is kept out and
explained in one sentence."""

from __future__ import annotations

import streamlit as st

from golddiff import METHODS, DenoiserParams
from golddiff.denoise import ParamSpec

from .config import RUN_SPECS, Config

T_SPEC = ParamSpec("t", int, None, "the step the Explorer shows", low=0, high=999)
TOUR_SPEC = ParamSpec("tour", int, None, "the Explorer's lecture stop", low=1, high=9)


def errors() -> list[str]:
    """Sentences about the link's values that could not be used."""
    return st.session_state.get("url_errors", [])


def _bad(key: str, raw: str, why: str) -> None:
    st.session_state["url_errors"] = errors() + [
        f"The link sets {key}={raw!r}, but {why}; that value was not used."
    ]


def _parse(spec: ParamSpec, raw: str, into: dict, key: str | None = None) -> None:
    """into[key or spec.name] = the link's value for spec, or a sentence about why not (the
    spec's own range: the dataset-dependent rules are checked with the sidebar's values)."""
    try:
        into[key or spec.name] = spec.parse(raw)
    except ValueError as e:
        _bad(spec.name, raw, str(e))


def read(names: list[str]) -> None:
    """Once per session, before the widgets exist: copy the link's settings into the widgets'
    state. Parameter values wait in url_params until their widget's key is known."""
    if st.session_state.get("_url_read"):
        return
    st.session_state["_url_read"] = True
    st.session_state["url_errors"] = []
    q = st.query_params
    for key, choices in (("dataset", names), ("method", list(METHODS))):
        if key in q:
            if q[key] in choices:
                st.session_state[key] = q[key]
            else:
                _bad(key, q[key], f"there is no such {key} (choose one of {', '.join(choices)})")
    for spec in RUN_SPECS.values():
        if spec.name in q:
            _parse(spec, q[spec.name], st.session_state)
    if "t" in q:
        _parse(T_SPEC, q["t"], st.session_state, "url_t")
    if "tour" in q:
        _parse(TOUR_SPEC, q["tour"], st.session_state, "url_tour")
    params = {}
    for spec in DenoiserParams.specs():
        if spec.name in q:
            _parse(spec, q[spec.name], params)
    st.session_state["url_params"] = params


def pop_params() -> dict:
    """The link's parameter values, once (the widgets take them into their state)."""
    return st.session_state.pop("url_params", {})


def write(cfg: Config, defaults: dict) -> None:
    """Keep the link equal to the sidebar: the run settings always, parameters that differ from
    the dataset's defaults, and the step the Explorer shows (t)."""
    want = dict(dataset=cfg.dataset, method=cfg.method, steps=cfg.steps, n=cfg.n, seed=cfg.seed)
    want.update({k: v for k, v in cfg.params.items() if v is not None and v != defaults.get(k)})
    want = {k: str(v) for k, v in want.items()}
    for key in ("t", "tour"):  # the Explorer's step and lecture stop
        if key in st.query_params:
            want[key] = st.query_params[key]
    if st.query_params.to_dict() != want:
        st.query_params.from_dict(want)
