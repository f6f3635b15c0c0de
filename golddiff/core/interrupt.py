"""A cooperative stop for long computations: the caller (the app, when its browser session goes
away) installs a check for its own thread, and the chunk loops call `checkpoint()`, which runs it.

The check raises whatever exception the caller wants to unwind with; without one, `checkpoint()`
does nothing. Each thread has its own check, so app sessions (one thread each) never stop another.
"""

from __future__ import annotations

import threading
from typing import Callable

_LOCAL = threading.local()


def set_stop_check(check: Callable[[], None] | None) -> None:
    """Install (or with None remove) this thread's stop check; it raises to stop the run."""
    _LOCAL.check = check


def checkpoint() -> None:
    """Run this thread's stop check, if one is installed (cheap: one attribute look-up)."""
    check = getattr(_LOCAL, "check", None)
    if check is not None:
        check()
