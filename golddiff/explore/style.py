"""The look shared by every figure: margins, the
SNR axis (log, powers of ten, noisy on the left)."""

from __future__ import annotations

import plotly.graph_objects as go

MARGIN = dict(l=10, r=10, t=40, b=10)
SNR_TITLE = "SNR = abar / (1 - abar)   (noisy -> clean)"


def snr_axis(fig: go.Figure, **kw) -> None:
    """A log SNR x axis with power-of-ten ticks; noise on the left, clean on the right."""
    fig.update_xaxes(type="log", title_text=SNR_TITLE, exponentformat="power", **kw)


W_FLOOR = 1e-30  # posterior weights below this are drawn at it on log axes (they underflow)
T_TITLE = "t   (999 = pure noise, left -> 0 = clean, right)"


def time_axis(fig: go.Figure, **kw) -> None:
    """A timestep x axis running the same way as the SNR axes: pure noise (t = 999) on the left."""
    fig.update_xaxes(title_text=T_TITLE, autorange="reversed", **kw)


def duration(seconds: float) -> str:
    """A wall time with its unit: 0.35 ms, 12.3 ms, 10.9 s, 2.1 min."""
    if seconds < 1.0:
        return f"{seconds * 1000:.3g} ms"
    if seconds < 120.0:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min"
