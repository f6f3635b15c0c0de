"""What a page shows of a run (the step, the sample, whether Play runs) and the one play loop.

The step and sample are widget states (`{page}_step`, `{page}_sample`), so links, scenarios and
curve clicks set them before the widgets are drawn; `View` reads and writes them as one object.
Play moves the step about PLAY_FRAMES frames from noise to clean, one frame per rerun."""

from __future__ import annotations

import time
from dataclasses import dataclass

import streamlit as st
from streamlit.errors import StreamlitAPIException

PLAY_FRAMES = 12  # frames of a Play through the steps
PLAY_DELAY = 0.5  # seconds per frame


@dataclass
class View:
    page: str  # widget-key prefix, e.g. "ex"
    n_steps: int  # slider options are the step indices 0 .. n_steps - 1 (0: pure noise)
    step: int = 0
    sample: int = 0
    playing: bool = False

    @classmethod
    def load(cls, page: str, n_steps: int, n_samples: int = 1, start: int = 0) -> "View":
        """The page's view, each field clamped to this run (a new run may be shorter)."""
        s = st.session_state
        step = s.get(f"{page}_step", start)
        sample = s.get(f"{page}_sample", 0)
        return cls(
            page, n_steps,
            step=step if isinstance(step, int) and 0 <= step < n_steps else start,
            sample=sample if isinstance(sample, int) and 0 <= sample < n_samples else 0,
            playing=bool(s.get(f"{page}_playing", False)),
        )

    def save(self) -> None:
        """Write the view into the widgets' state: call before the widgets are drawn."""
        st.session_state.update(
            {f"{self.page}_step": self.step, f"{self.page}_sample": self.sample,
             f"{self.page}_playing": self.playing}
        )

    @property
    def last(self) -> int:
        return self.n_steps - 1


def advance(view: View) -> View:
    """While playing, move one frame towards clean; stop at the last step. Before the widgets."""
    if view.playing and st.session_state.pop(f"{view.page}_hold", False):
        pass  # the first frame of a Play is the step it starts from (pure noise on a replay)
    elif view.playing:
        if view.step >= view.last:
            view.playing = False
        else:
            view.step = min(view.last, view.step + max(1, view.n_steps // PLAY_FRAMES))
    view.save()
    return view


def _toggle(page: str, n_steps: int) -> None:
    s = st.session_state
    s[f"{page}_playing"] = playing = not s.get(f"{page}_playing", False)
    s[f"{page}_hold"] = playing  # draw the starting frame before the first move
    if playing and s.get(f"{page}_step", 0) >= n_steps - 1:
        s[f"{page}_step"] = 0  # replay from pure noise


def button(where, view: View) -> None:
    where.button(
        "Pause" if view.playing else "Play",
        icon=":material/pause:" if view.playing else ":material/play_arrow:",
        key=f"{view.page}_play",
        on_click=_toggle,
        args=(view.page, view.n_steps),
        width="stretch",
    )


def finish(view: View, delay: float = PLAY_DELAY) -> None:
    """At the end of what plays: wait one frame and draw it again (only the fragment when this
    run is a fragment's own rerun)."""
    if not view.playing:
        return
    time.sleep(delay)
    try:
        st.rerun(scope="fragment")
    except StreamlitAPIException:
        st.rerun()
