"""Runs behind a button: building the denoiser, the cost check, stopping when the tab has gone,
the notice for a run that was stopped, and where each page keeps its last result.

A page's last result lives in this session (`keep` / `last`) beside the settings it was computed
with, so the page can say when the sidebar has moved on. The Explorer's finished runs are also
shared by every session (`shared_runs`), so a run computed once is shown at once to anyone."""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass

import streamlit as st

import golddiff
from golddiff import DenoiserParams, make_denoiser

from .config import Config
from .resources import get_corpus_cached, get_dataset


def build_denoiser(cfg: Config):
    """A denoiser for the sidebar's choices; its corpus comes from the shared cache."""
    get_corpus_cached(cfg.dataset, cfg.device)
    return make_denoiser(
        cfg.method,
        get_dataset(cfg.dataset),
        device=cfg.device,
        params=DenoiserParams.from_mapping(cfg.params),
    )


def check_run_cost(cfg: Config, methods: list[str] | None = None, passes: int = 1) -> float:
    """Refuse (ValueError) a run whose rough cost estimate exceeds GOLDDIFF_APP_MAX_SECONDS (600 s
    when unset, 0 for none) before it starts; returns the estimate in seconds."""
    ds = get_dataset(cfg.dataset)
    seconds = golddiff.estimate_seconds(
        methods or [cfg.method], ds.N, ds.shape, cfg.steps, cfg.n,
        DenoiserParams.from_mapping(cfg.params), cfg.device, passes,
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


# ----------------------------------------------------------------------------- the stop notice


@contextmanager
def working(flag: str, what: str):
    """Mark a run as working while the body runs. A rerun or stop (page or setting change) ends
    the script with a BaseException that passes through here, so the mark stays and the next
    visit's `notice_stopped` says so; a finished or failed run clears it."""
    st.session_state[flag] = what
    try:
        yield
    except Exception:
        st.session_state.pop(flag, None)
        raise
    st.session_state.pop(flag, None)


def notice_stopped(flag: str, pressed: bool, button: str) -> None:
    """Before a page's run button acts: warn once that the last run was stopped (unless the button
    was just pressed again)."""
    what = st.session_state.pop(flag, None)
    if what and not pressed:
        st.warning(
            f"The last {what} was stopped before it finished: the page or a setting changed while "
            f"it worked. Press **{button}** to run it again."
        )


# ----------------------------------------------------------------------------- results


@dataclass
class Result:
    key: object  # the settings it was computed with (a Config, or a tuple holding one)
    value: object


def keep(page: str, key, value) -> Result:
    st.session_state[f"result_{page}"] = res = Result(key, value)
    return res


def last(page: str) -> Result | None:
    return st.session_state.get(f"result_{page}")


def notice_stale(res: Result, key, button: str) -> None:
    if res.key != key:
        st.warning(
            "The settings changed since these results were computed; press "
            f"**{button}** to update them."
        )


class RunStore:
    """Finished runs by Config, the oldest dropped past `kept`; a lock guards it because app
    sessions share it from several threads. Errors are never stored. `once` computes a Config
    once however many sessions ask for it at the same time (a class opening the page together)."""

    def __init__(self, kept: int):
        self.kept, self._runs, self._lock = kept, OrderedDict(), threading.Lock()
        self._making: dict = {}  # Config -> [its lock, sessions asking]

    def once(self, cfg: Config, make):
        """The finished run of cfg: stored, or made by make() in this session while any other
        session asking for the same cfg waits for it (its stop check runs while it waits)."""
        with self._lock:
            entry = self._making.setdefault(cfg, [threading.Lock(), 0])
            entry[1] += 1
        try:
            while not entry[0].acquire(timeout=0.2):
                golddiff.checkpoint()  # a waiting session whose tab has closed stops here
            try:
                if (done := self.get(cfg)) is not None:
                    return done
                run = make()
                self.put(cfg, run)
                return run
            finally:
                entry[0].release()
        finally:
            with self._lock:
                entry[1] -= 1
                if entry[1] == 0:
                    self._making.pop(cfg, None)

    def get(self, cfg: Config):
        with self._lock:
            return self._runs.get(cfg)

    def put(self, cfg: Config, run) -> None:
        with self._lock:
            self._runs[cfg] = run
            while len(self._runs) > self.kept:
                self._runs.popitem(last=False)


@st.cache_resource(show_spinner=False)
def shared_runs() -> RunStore:
    """The Explorer's finished runs, shared by every session (the first visit's run of the
    defaults is computed once per process)."""
    return RunStore(kept=8)
