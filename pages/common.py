"""UI helpers shared by app.py and the pages: cached resources, the shared sidebar, error display.

UI only: all math comes from golddiff. Cached resources are keyed by names and parameters (never by
big
arrays) and are never mutated by a page.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

import streamlit as st
import torch

import golddiff
from golddiff import METHODS, DenoiserParams, device_label, get_corpus, make_denoiser, pick_device
from golddiff.data import REGISTRY, dataset_status, image_datasets

DEFAULT_DATASET = "mnist-5k"


@st.cache_resource(show_spinner="Loading dataset...")
def get_dataset(name: str) -> golddiff.Dataset:
    return golddiff.load_dataset(name)


@st.cache_resource(show_spinner="Preparing data statistics...")
def get_corpus_cached(name: str, device: str):
    """The dataset on the device with its statistics computed (shared by every session)."""
    c = get_corpus(get_dataset(name), torch.device(device))
    _ = c.stats
    return c


@st.cache_resource(show_spinner=False)
def get_map_cached(name: str):
    """The cached 2-D UMAP map of a dataset, or None while it has not been built (clear() after
    building).
    Raises ImportError / AttributeError when golddiff.embed is missing or older than expected."""
    from golddiff.explore import embed

    return embed.load_map(get_dataset(name))


@st.cache_data(show_spinner=False)
def train_scale_cached(name: str) -> float:
    """Typical distance between a training image and its nearest other training image (see
    lessons)."""
    from golddiff.explore import lessons

    return lessons.train_nn_distance(get_dataset(name))


def device_name() -> str:
    return str(pick_device(None))


def build_denoiser(cfg: "Config"):
    """A denoiser for the sidebar's choices; its corpus comes from the shared cache."""
    get_corpus_cached(cfg.dataset, cfg.device)
    return make_denoiser(
        cfg.method,
        get_dataset(cfg.dataset),
        device=cfg.device,
        params=DenoiserParams.from_mapping(cfg.params),
    )


@dataclass(frozen=True)
class Config:
    dataset: str  # registry name
    method: str  # one of METHODS
    steps: int  # DDIM steps
    n: int  # samples in the batch
    seed: int  # start-noise seed
    device: str  # "cpu" or "cuda"
    params: dict = field(
        default_factory=dict, hash=False
    )  # k_min, k_max, low_res, mask_threshold, ...

    def key(self) -> tuple:
        """Hashable identity of a run (used to tell whether a stored result is stale)."""
        return (
            self.dataset,
            self.method,
            self.steps,
            self.n,
            self.seed,
            self.device,
            tuple(sorted(self.params.items())),
        )


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
        bar.progress(
            frac,
            text=f"Downloading {name}: {done / 2**20:.1f}"
            + (f" / {total / 2**20:.1f} MB" if total else " MB"),
        )

    try:
        golddiff.load_dataset(name, progress=progress)  # decoded and cached on disk
    except ValueError as e:
        sb.error(safe_message(e))
        return False
    bar.empty()
    return True


def sidebar() -> Config | None:
    """Draw the shared sidebar; store and return the Config (None when the dataset cannot load)."""
    sb = st.sidebar
    sb.header("Run settings")
    st.session_state["cfg"] = None  # until this run's choices load: pages never use stale settings
    names = image_datasets()
    status = {n: dataset_status(n)[0] for n in names}  # file checks only, no decoding
    tag = {"found": "", "downloadable": " (download)", "not found": " (not found)"}
    dataset = sb.selectbox(
        "Dataset",
        names,
        index=names.index(DEFAULT_DATASET),
        format_func=lambda n: n + tag[status[n]],
        key="dataset",
    )
    if status[dataset] == "downloadable" and not download_dataset(dataset):
        return None
    try:
        ds = get_dataset(dataset)
    except ValueError as e:
        sb.error(safe_message(e))
        return None
    method = sb.selectbox(
        "Method", list(METHODS), index=list(METHODS).index("golddiff"), key="method"
    )
    steps = sb.number_input("Steps", 1, 1000, 10, key="steps")
    n = sb.number_input("Samples", 1, 64, 4, key="n")
    seed = sb.number_input("Seed", 0, 2**31 - 1, 0, key="seed")
    with sb.expander("Method parameters", expanded=False):
        params = param_widgets(ds)
    device = device_name()
    sb.caption(f"Device: {device_label(torch.device(device))}")
    cfg = Config(dataset, method, int(steps), int(n), int(seed), device, params)
    st.session_state["cfg"] = cfg
    return cfg


def param_widgets(ds: golddiff.Dataset) -> dict:
    """One widget per DenoiserParams field, built from its spec (label, range or choices, tooltip);
    defaults
    are the dataset's. Keys carry the dataset name where the default depends on it. Returns {name:
    value}.
    """
    defaults = DenoiserParams().resolve(ds.N, ds.shape)
    values = {}
    for spec in DenoiserParams.specs():
        default = getattr(defaults, spec.name)
        label = (
            f"{spec.name} ({', '.join(spec.methods)})"
            if len(spec.methods) < len(METHODS)
            else spec.name
        )
        key = f"{spec.name}_{ds.name}" if spec.default is None else spec.name
        if spec.choices is not None:
            values[spec.name] = st.radio(
                label,
                list(spec.choices),
                index=list(spec.choices).index(default),
                horizontal=True,
                key=key,
                help=spec.help,
            )
        elif spec.kind is int:
            high = (
                ds.N
                if spec.name in ("k_min", "k_max", "nlist")
                else ds.shape[1] if spec.name == "low_res" else None
            )
            v = st.number_input(
                label,
                min_value=int(spec.low or 0),
                max_value=high,
                value=default,
                step=1,
                key=key,
                help=spec.help + (" (empty = automatic)" if spec.optional else ""),
                placeholder="automatic",
            )
            values[spec.name] = None if v is None else int(v)
        else:
            low = None if spec.low is None else float(spec.low) + (0.01 if spec.low_open else 0.0)
            high = None if spec.high is None else float(spec.high)
            v = st.number_input(
                label,
                min_value=low,
                max_value=high,
                value=float(default),
                step=0.005,
                format="%.3f",
                key=key,
                help=spec.help,
            )
            values[spec.name] = float(v)
    return values


def require_config(title: str, what: str = "") -> Config:
    """Title the page and return the sidebar's Config; without one (the dataset did not load) say so
    and stop."""
    st.title(title)
    cfg = st.session_state.get("cfg")
    if cfg is None:
        st.info(f"Pick a dataset that loads in the sidebar{what}.")
        st.stop()
    return cfg


# an absolute path in a message: '/' then path characters up to a space, quote or bracket
_PATH = re.compile(r"(?:(?<=folder:)|(?<![\w.:/]))/[^\s'\"()\[\],;]+")


def safe_message(e: Exception) -> str:
    """The text of an error for the browser: a ValueError's sentence, else a generic one, with every
    absolute server path cut to its last part (a file name says enough; the folders are private)."""
    text = str(e) if isinstance(e, ValueError) else f"Something went wrong ({type(e).__name__})."
    return _PATH.sub(lambda m: os.path.basename(m.group(0).rstrip("/.")) or "/", text)


def show_error(e: Exception) -> None:
    """One clear sentence for errors a user can cause; never a traceback nor a server path."""
    st.error(safe_message(e))


def check_run_cost(cfg: "Config", methods: list[str] | None = None, passes: int = 1) -> float:
    """Refuse (ValueError) a run whose rough cost estimate exceeds GOLDDIFF_APP_MAX_SECONDS (600 s
    when unset, 0 for none) before it starts; returns the estimate in seconds."""
    ds = get_dataset(cfg.dataset)
    seconds = golddiff.estimate_seconds(
        methods or [cfg.method],
        ds.N,
        ds.shape,
        cfg.steps,
        cfg.n,
        DenoiserParams.from_mapping(cfg.params),
        cfg.device,
        passes,
    )
    golddiff.check_cost(seconds, golddiff.max_seconds(os.environ))
    return seconds


def stop_if_gone() -> None:
    """Stop this script run (StopException) when its browser session has gone away (tab closed)."""
    from streamlit import runtime
    from streamlit.runtime.scriptrunner import get_script_run_ctx
    from streamlit.runtime.scriptrunner_utils.exceptions import StopException

    ctx = get_script_run_ctx(suppress_warning=True)
    if ctx is None or not runtime.exists():
        return
    if not runtime.get_instance().is_active_session(ctx.session_id):
        raise StopException()


def watch_session() -> None:
    """From here on, the library's long loops stop this run once its session has gone away."""
    golddiff.set_stop_check(stop_if_gone)
