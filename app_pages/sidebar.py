"""The shared sidebar: dataset (with its download), method, run settings, method parameters.

Draws the widgets, checks every value they hold, and stores the Config in st.session_state["cfg"]
(None, with the reasons in "cfg_problems", when the dataset cannot load or a value is invalid), so
that no page ever runs with an older value than the one shown."""

from __future__ import annotations

from dataclasses import asdict

import streamlit as st
import torch

import golddiff
from golddiff import METHODS, DenoiserParams, device_label
from golddiff.data import REGISTRY, dataset_status, image_datasets

from . import links
from .config import DEFAULT_DATASET, PAGE_USES, RUN_DEFAULTS, RUN_SPECS, Config
from .errors import safe_message
from .resources import device_name, get_dataset
from .widgets import param_problems, param_widgets, spec_number

UNUSED = "not used on this page"
TAG = {"found": "", "downloadable": " (download)", "not found": " (not found)"}


def download_dataset(name: str) -> bool:
    """Ask before downloading a dataset, then download it with a byte progress bar. True once it is
    on disk."""
    sb = st.sidebar
    sb.info(f"{name} is not on this machine yet: {REGISTRY[name].source}.")
    if not sb.button(f"Download {name}", key=f"download_{name}"):
        return False
    bar = sb.progress(0.0, text=f"Downloading {name}...")

    def progress(done: int, total: int | None) -> None:
        frac = min(1.0, done / total) if total else 0.0
        size = f" / {total / 2**20:.1f} MB" if total else " MB"
        bar.progress(frac, text=f"Downloading {name}: {done / 2**20:.1f}{size}")

    try:
        golddiff.load_dataset(name, progress=progress)  # decoded and cached on disk
    except ValueError as e:
        bar.empty()  # no "Downloading..." bar left behind a failed download
        sb.error(safe_message(e))
        return False
    bar.empty()
    return True


def pick_dataset(page: str) -> golddiff.Dataset | None:
    """The dataset selectbox; the dataset once it is on disk and loads, else None."""
    sb, names = st.sidebar, image_datasets()
    links.read(names)
    status = {n: dataset_status(n)[0] for n in names}  # file checks only, no decoding
    if page == "2-D toy":
        sb.info("The 2-D toy uses its own controls on the page; these settings apply elsewhere.")
    st.session_state.setdefault("dataset", DEFAULT_DATASET)  # state, not index: links set it
    name = sb.selectbox(
        "Dataset", names, format_func=lambda n: n + TAG[status[n]], key="dataset",
        disabled=page == "2-D toy",
    )
    if status[name] == "downloadable" and not download_dataset(name):
        return None
    try:
        return get_dataset(name)
    except ValueError as e:
        sb.error(safe_message(e))
        return None


def run_settings(uses: dict, problems: list) -> dict:
    """Method, steps, samples and seed; a control the page does not use is disabled and its value
    is not checked."""
    sb = st.sidebar
    for key, value in RUN_DEFAULTS.items():
        st.session_state.setdefault(key, value)
    method = sb.selectbox(
        "Method", list(METHODS), key="method", disabled=not uses["method"],
        help=None if uses["method"] else f"{UNUSED}: it runs its own methods",
    )
    out = dict(method=method)
    for key, label in (("steps", "Steps"), ("n", "Samples"), ("seed", "Seed")):
        if uses["run"]:
            out[key] = spec_number(sb, RUN_SPECS[key], label, key, problems)
        else:
            out[key] = int(sb.number_input(label, key=key, step=1, disabled=True, help=UNUSED))
    return out


def glossary() -> None:
    """The words the captions use, in a popover at the foot of the sidebar."""
    from golddiff.explore.scenarios import GLOSSARY

    with st.sidebar.popover("Glossary", icon=":material/menu_book:", width="stretch"):
        for term, text in GLOSSARY.items():
            st.markdown(f"**{term}**: {text}")


def sidebar(page: str | None = None) -> Config | None:
    """Draw the shared sidebar for `page` (its title); store and return the Config, or None."""
    sb = st.sidebar
    uses = PAGE_USES.get(page or "Explorer", PAGE_USES["Explorer"])
    sb.header("Run settings")
    st.session_state["cfg"] = None  # until this run's choices load: pages never use stale settings
    st.session_state["cfg_problems"] = problems = []
    ds = pick_dataset(page)
    if ds is None:
        return None
    run = run_settings(uses, problems)
    shown = uses["params"] if uses["params"] is not None else (run["method"],)
    with sb.expander("Method parameters", expanded=False):
        if not shown:
            st.caption("This page sets its own parameters.")
        params = param_widgets(ds, shown)
    problems += param_problems(ds, params, shown)
    device = device_name()
    sb.caption(f"Device: {device_label(torch.device(device))}")
    glossary()
    sb.radio(
        "Figure downloads", ["png", "svg"], horizontal=True, key="fig_format",
        help="the camera button above each chart saves it in this format",
    )
    for e in links.errors():
        st.error(e)
    if problems:
        return None
    cfg = Config(st.session_state["dataset"], run["method"], run["steps"], run["n"], run["seed"], device, params)
    st.session_state["cfg"] = cfg
    links.write(cfg, asdict(DenoiserParams().resolve(ds.N, ds.shape)))
    return cfg
