"""UI helpers shared by app.py and the pages: cached resources, the shared sidebar, error display.

UI only: all math comes from golddiff. Cached resources are keyed by names and parameters (never by
big
arrays) and are never mutated by a page.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import asdict, dataclass, field

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
        bar.empty()  # finding 12: no "Downloading..." bar left behind a failed download
        sb.error(safe_message(e))
        return False
    bar.empty()
    return True


# What each page reads from the sidebar (the rest is shown disabled or hidden, finding 10).
# params: the methods whose parameters the page uses (None: the sidebar's chosen method).
PAGE_USES = {
    "Explorer": dict(method=True, run=True, params=None),
    "Compare methods": dict(method=False, run=True, params=METHODS),
    "Gaussian regime": dict(method=False, run=True, params=("golddiff", "hybrid")),
    "How it works": dict(method=False, run=False, params=("golddiff",)),
    "2-D toy": dict(method=False, run=False, params=()),
}
URL_INTS = {"steps": (1, 1000), "n": (1, 64), "seed": (0, 2**31 - 1)}


def url_errors() -> list[str]:
    """Sentences about the link's values that could not be used (shown with st.error)."""
    return st.session_state.get("url_errors", [])


def _url_int(raw: str, low: int, high: int | None) -> int:
    try:
        v = int(raw)
    except ValueError:
        raise ValueError("it is not a whole number") from None
    if v < low or (high is not None and v > high):
        raise ValueError(f"it is outside {low}..{high if high is not None else 'any'}")
    return v


def read_url(names: list[str]) -> None:
    """Once per session, before the widgets exist: copy the link's settings (st.query_params) into
    the widgets' state. Bad values are kept out and explained in url_errors()."""
    if st.session_state.get("_url_read"):
        return
    st.session_state["_url_read"] = True
    q, errors = st.query_params, []

    def bad(key: str, why: str) -> None:
        errors.append(f"The link sets {key}={q[key]!r}, but {why}; that value was not used.")

    if "dataset" in q:
        if q["dataset"] in names:
            st.session_state["dataset"] = q["dataset"]
        else:
            bad("dataset", f"there is no such dataset (choose one of {', '.join(names)})")
    if "method" in q:
        if q["method"] in METHODS:
            st.session_state["method"] = q["method"]
        else:
            bad("method", f"there is no such method (choose one of {', '.join(METHODS)})")
    for key, (low, high) in URL_INTS.items():
        if key in q:
            try:
                st.session_state[key] = _url_int(q[key], low, high)
            except ValueError as e:
                bad(key, str(e))
    if "t" in q:
        try:
            st.session_state["url_t"] = _url_int(q["t"], 0, 999)
        except ValueError as e:
            bad("t", str(e))
    st.session_state["url_params"] = {k: q[k] for k in DenoiserParams.names() if k in q}
    st.session_state["url_errors"] = errors


def _url_param(spec, raw: str, high):
    """A DenoiserParams value from its link text, checked against the widget's range."""
    if spec.choices is not None:
        if raw not in spec.choices:
            raise ValueError(f"it is not one of {', '.join(spec.choices)}")
        return raw
    if spec.kind is int:
        return _url_int(raw, int(spec.low or 0), high)
    try:
        v = float(raw)
    except ValueError:
        raise ValueError("it is not a number") from None
    low = spec.low if spec.low is not None else -float("inf")
    if v < low or (spec.low_open and v == low) or (spec.high is not None and v > spec.high):
        raise ValueError(f"it is outside the range of {spec.name}")
    return v


def write_url(cfg: "Config", defaults: dict) -> None:
    """Keep the link equal to the sidebar: the run settings always, parameters that differ from
    the dataset's defaults, and the step the Explorer shows (t)."""
    want = dict(dataset=cfg.dataset, method=cfg.method, steps=cfg.steps, n=cfg.n, seed=cfg.seed)
    want.update({k: v for k, v in cfg.params.items() if v is not None and v != defaults.get(k)})
    want = {k: str(v) for k, v in want.items()}
    if "t" in st.query_params:
        want["t"] = st.query_params["t"]
    if st.query_params.to_dict() != want:
        st.query_params.from_dict(want)


def sidebar(page: str | None = None) -> Config | None:
    """Draw the shared sidebar; store and return the Config (None when the dataset cannot load).

    page: the page's title; the controls it does not use are disabled (and say so), and only the
    parameters of the methods it runs are shown."""
    sb = st.sidebar
    uses = PAGE_USES.get(page or "Explorer", PAGE_USES["Explorer"])
    sb.header("Run settings")
    st.session_state["cfg"] = None  # until this run's choices load: pages never use stale settings
    names = image_datasets()
    read_url(names)
    status = {n: dataset_status(n)[0] for n in names}  # file checks only, no decoding
    tag = {"found": "", "downloadable": " (download)", "not found": " (not found)"}
    if page == "2-D toy":
        sb.info("The 2-D toy uses its own controls on the page; these settings apply elsewhere.")
    st.session_state.setdefault("dataset", DEFAULT_DATASET)  # state, not index: links set it
    dataset = sb.selectbox(
        "Dataset",
        names,
        format_func=lambda n: n + tag[status[n]],
        key="dataset",
        disabled=page == "2-D toy",
    )
    if status[dataset] == "downloadable" and not download_dataset(dataset):
        return None
    try:
        ds = get_dataset(dataset)
    except ValueError as e:
        sb.error(safe_message(e))
        return None
    unused = "not used on this page"
    for key, value in (("method", "golddiff"), ("steps", 10), ("n", 4), ("seed", 0)):
        st.session_state.setdefault(key, value)
    method = sb.selectbox(
        "Method",
        list(METHODS),
        key="method",
        disabled=not uses["method"],
        help=None if uses["method"] else f"{unused}: it runs its own methods",
    )
    off = None if uses["run"] else unused
    steps = sb.number_input("Steps", 1, 1000, key="steps", disabled=bool(off), help=off)
    n = sb.number_input("Samples", 1, 64, key="n", disabled=bool(off), help=off)
    seed = sb.number_input("Seed", 0, 2**31 - 1, key="seed", disabled=bool(off), help=off)
    shown = uses["params"] if uses["params"] is not None else (method,)
    with sb.expander("Method parameters", expanded=False):
        if not shown:
            st.caption("This page sets its own parameters.")
        params = param_widgets(ds, shown)
    device = device_name()
    sb.caption(f"Device: {device_label(torch.device(device))}")
    glossary()
    sb.radio(
        "Figure downloads",
        ["png", "svg"],
        horizontal=True,
        key="fig_format",
        help="the camera button above each chart saves it in this format",
    )
    cfg = Config(dataset, method, int(steps), int(n), int(seed), device, params)
    st.session_state["cfg"] = cfg
    write_url(cfg, asdict(DenoiserParams().resolve(ds.N, ds.shape)))
    for e in url_errors():
        st.error(e)
    return cfg


def glossary() -> None:
    """The words the captions use, in a popover at the foot of the sidebar."""
    from golddiff.explore.scenarios import GLOSSARY

    with st.sidebar.popover("Glossary", icon=":material/menu_book:", width="stretch"):
        for term, text in GLOSSARY.items():
            st.markdown(f"**{term}**: {text}")


def param_widgets(ds: golddiff.Dataset, methods: tuple = tuple(METHODS)) -> dict:
    """One widget per DenoiserParams field used by one of `methods`, built from its spec (label,
    range or choices, tooltip); defaults are the dataset's. Keys carry the dataset name where the
    default depends on it. Fields no shown method uses keep their last value (or the link's, or
    the default) without a widget. Returns {name: value} for every field.
    """
    defaults = DenoiserParams().resolve(ds.N, ds.shape)
    values, from_url = {}, st.session_state.pop("url_params", {})
    for spec in DenoiserParams.specs():
        default = getattr(defaults, spec.name)
        label = (
            f"{spec.name} ({', '.join(spec.methods)})"
            if len(spec.methods) < len(METHODS)
            else spec.name
        )
        key = f"{spec.name}_{ds.name}" if spec.default is None else spec.name
        high = (
            ds.N
            if spec.name in ("k_min", "k_max", "nlist")
            else ds.shape[1] if spec.name == "low_res" else None
        )
        if spec.name in from_url:
            try:
                st.session_state[key] = _url_param(spec, from_url[spec.name], high)
            except ValueError as e:
                st.session_state["url_errors"] = url_errors() + [
                    f"The link sets {spec.name}={from_url[spec.name]!r}, but {e}; "
                    "that value was not used."
                ]
        if not set(spec.methods) & set(methods):
            values[spec.name] = st.session_state.get(key, default)
            continue
        st.session_state.setdefault(key, default)  # state, not value=: links and scenarios set it
        if spec.choices is not None:
            values[spec.name] = st.radio(
                label,
                list(spec.choices),
                horizontal=True,
                key=key,
                help=spec.help,
            )
        elif spec.kind is int:
            v = st.number_input(
                label,
                min_value=int(spec.low or 0),
                max_value=high,
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


PLAY_FRAMES = 12  # frames of a Play through the steps of a teaching page
PLAY_DELAY = 0.5  # seconds per frame


def _toggle_play(prefix: str, options: list) -> None:
    playing = not st.session_state.get(f"{prefix}_playing", False)
    st.session_state[f"{prefix}_playing"] = playing
    if playing and st.session_state.get(f"{prefix}_t") == options[-1]:
        st.session_state[f"{prefix}_t"] = options[0]  # replay from pure noise


def advance_play(prefix: str, options: list) -> bool:
    """Before the slider `{prefix}_t` is drawn: while playing, move it one frame to the right
    (about PLAY_FRAMES frames from noise to clean). Returns whether it is playing."""
    if not st.session_state.get(f"{prefix}_playing"):
        return False
    now = st.session_state.get(f"{prefix}_t")
    i = options.index(now) if now in options else 0
    if i >= len(options) - 1:
        st.session_state[f"{prefix}_playing"] = False
        return False
    stride = max(1, len(options) // PLAY_FRAMES)
    st.session_state[f"{prefix}_t"] = options[min(len(options) - 1, i + stride)]
    return True


def play_button(where, prefix: str, options: list, playing: bool) -> None:
    where.button(
        "Pause" if playing else "Play",
        icon=":material/pause:" if playing else ":material/play_arrow:",
        key=f"{prefix}_play",
        on_click=_toggle_play,
        args=(prefix, options),
        width="stretch",
    )


def finish_play(playing: bool) -> None:
    """At the end of a page that plays: wait one frame and run again."""
    if playing:
        time.sleep(PLAY_DELAY)
        st.rerun()


def announce_stopped(flag: str, what: str) -> None:
    """A page sets st.session_state[flag] while a run works and clears it when the run ends; a
    flag still set means a page or setting change stopped that run (finding 11): say so."""
    if st.session_state.pop(flag, None):
        st.warning(
            f"The last {what} was stopped before it finished: the page or a setting changed while "
            "it worked. Press its button to run it again."
        )


def chart_config(name: str) -> dict:
    """Plotly's modebar for every figure: its camera button downloads the figure as PNG or SVG
    (the sidebar's choice), named after the figure."""
    fmt = st.session_state.get("fig_format", "png")
    return {"toImageButtonOptions": {"format": fmt, "filename": name, "scale": 2}}


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
