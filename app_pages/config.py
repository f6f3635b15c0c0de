"""The sidebar's settings as one Config, what each page reads of them, and the one page guard."""

from __future__ import annotations

from dataclasses import dataclass, field

import streamlit as st

from golddiff import METHODS
from golddiff.denoise import ParamSpec

# The run settings every sampling page shares, each a whole number with its range.
RUN_SPECS = {
    "steps": ParamSpec("steps", int, 10, "DDIM steps", low=1, high=1000),
    "n": ParamSpec("n", int, 4, "samples in the batch", low=1, high=64),
    "seed": ParamSpec("seed", int, 0, "start-noise seed", low=0, high=2**31 - 1),
}
RUN_DEFAULTS = {"method": "golddiff", **{k: s.default for k, s in RUN_SPECS.items()}}
DEFAULT_DATASET = "mnist-5k"

# What each page reads from the sidebar (the rest is shown disabled or hidden).
# params: the methods whose parameters the page uses (None: the sidebar's chosen method).
PAGE_USES = {
    "Explorer": dict(method=True, run=True, params=None),
    "Compare methods": dict(method=False, run=True, params=METHODS),
    "Gaussian regime": dict(method=False, run=True, params=("golddiff", "hybrid")),
    "How it works": dict(method=False, run=False, params=("golddiff",)),
    "2-D toy": dict(method=False, run=False, params=()),
}


@dataclass(frozen=True)
class Config:
    """One run's settings. Equal Configs mean the same run, so a Config is the key of a stored
    result (params is left out of the hash but not of ==)."""

    dataset: str  # registry name
    method: str  # one of METHODS
    steps: int  # DDIM steps
    n: int  # samples in the batch
    seed: int  # start-noise seed
    device: str  # "cpu" or "cuda"
    params: dict = field(default_factory=dict, hash=False)  # every DenoiserParams field

    def describe(self) -> str:
        return (
            f"{self.method_label()} on {self.dataset}, {self.steps} steps, {self.n} samples, "
            f"seed {self.seed}, {self.device}"
        )

    def method_label(self) -> str:
        """The method, with its golden-subset mode when that is not the published schedule."""
        subset = self.params.get("subset")
        if self.method in ("golddiff", "hybrid") and subset not in (None, "schedule"):
            return f"{self.method} ({subset} subset)"
        return self.method


def current() -> Config | None:
    """The Config the sidebar drew in this script run (None: no dataset loaded or a bad value)."""
    return st.session_state.get("cfg")


def require_config(title: str, intro: str | None = None) -> Config:
    """Title the page (and its intro), then return the sidebar's Config. Without one, say why in the
    main area (each invalid sidebar value as its own sentence) and stop the page."""
    st.title(title)
    if intro:
        st.markdown(intro)
    cfg = current()
    if cfg is None:
        problems = st.session_state.get("cfg_problems") or []
        for sentence in problems:
            st.error(sentence)
        if not problems:
            st.info("Pick a dataset that loads in the sidebar.")
        st.stop()
    return cfg
