"""Inputs whose every value reaches the server, so a bad one is explained, never dropped.

A Streamlit number_input with min_value / max_value keeps an out-of-range entry in the browser (a
red box) and the script goes on with the previous value. These inputs carry no bounds; each value
is checked against its `ParamSpec` (`ParamSpec.problem`, the same check the library and the CLI
make) and a value outside its range is reported in one sentence."""

from __future__ import annotations

import streamlit as st

import golddiff
from golddiff import METHODS, DenoiserParams
from golddiff.denoise import ParamSpec

from . import links


def spec_number(where, spec: ParamSpec, label: str, key: str, problems: list, **kw):
    """A number input for `spec` with no browser-side bounds. Returns its value, or None (with
    the spec's sentence appended to `problems`) when it is empty or outside the spec's range."""
    whole = spec.kind is int
    v = where.number_input(label, key=key, step=kw.pop("step", 1 if whole else 0.1), **kw)
    why = spec.problem(v, label)
    if why:
        problems.append(why)
        return None
    return None if v is None else int(v) if whole else float(v)


def number(where, label: str, low, high, key: str, problems: list, **kw):
    """`spec_number` for a page's own input, whole (or whole=False) in [low, high]."""
    kind = int if kw.pop("whole", True) else float
    return spec_number(where, ParamSpec(key, kind, None, label, low=low, high=high), label, key,
                       problems, **kw)


def stop_on(problems: list[str]) -> None:
    """Show each problem as its own sentence and stop the page (nothing runs on a bad value)."""
    for sentence in problems:
        st.error(sentence)
    if problems:
        st.stop()


def _label(spec) -> str:
    if len(spec.methods) < len(METHODS):
        return f"{spec.name} ({', '.join(spec.methods)})"
    return spec.name


def widget_key(spec, dataset: str) -> str:
    """A field's widget key; it carries the dataset's name where its default depends on it."""
    return f"{spec.name}_{dataset}" if spec.default is None else spec.name


def param_widgets(ds: golddiff.Dataset, methods: tuple = tuple(METHODS)) -> dict:
    """One widget per DenoiserParams field used by one of `methods`, built from its spec (label,
    choices, tooltip); defaults are the dataset's. Fields no shown method uses keep their last
    value (or the link's, or the default) without a widget. Returns {name: value} for every
    field; `param_problems` checks them."""
    defaults = DenoiserParams().resolve(ds.N, ds.shape)
    values, from_url = {}, links.pop_params()
    for spec in DenoiserParams.specs():
        default, key = getattr(defaults, spec.name), widget_key(spec, ds.name)
        if spec.name in from_url:
            st.session_state[key] = from_url[spec.name]
        if not set(spec.methods) & set(methods):
            values[spec.name] = st.session_state.get(key, default)
            continue
        st.session_state.setdefault(key, default)  # state, not value=: links and scenarios set it
        tip = spec.help + (" (empty = automatic)" if spec.optional else "")
        if spec.choices is not None:
            values[spec.name] = st.radio(
                _label(spec), list(spec.choices), horizontal=True, key=key, help=tip
            )
            continue
        v = st.number_input(
            _label(spec), key=key, help=tip, placeholder="automatic" if spec.optional else None,
            step=1 if spec.kind is int else 0.005, format=None if spec.kind is int else "%g",
        )
        whole = v is not None and spec.kind is int and v == int(v)
        values[spec.name] = int(v) if whole else v  # a bad value stays as typed: checked later
    return values


def param_problems(ds: golddiff.Dataset, values: dict, methods) -> list[str]:
    """One sentence per shown field whose value is empty or outside its spec's range on this
    dataset; with none, the cross-field rules (`DenoiserParams.validate`) of each method."""
    specs = DenoiserParams.dataset_specs(ds.N, ds.shape)
    shown = [s for s in specs.values() if set(s.methods) & set(methods)]
    problems = [p for p in (s.problem(values[s.name]) for s in shown) if p]
    if problems:
        return problems
    for m in methods:
        try:
            DenoiserParams.from_mapping(values).validate(m, ds.N, ds.shape)
        except ValueError as e:
            if str(e) not in problems:
                problems.append(str(e))
    return problems


def chart_config(name: str) -> dict:
    """Plotly's modebar for every figure: its camera button downloads the figure as PNG or SVG
    (the sidebar's choice), named after the figure."""
    fmt = st.session_state.get("fig_format", "png")
    return {"toImageButtonOptions": {"format": fmt, "filename": name, "scale": 2}}
