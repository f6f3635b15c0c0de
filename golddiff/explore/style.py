"""The look shared by every figure: margins, the
SNR axis (log, powers of ten, noisy on the left)."""

from __future__ import annotations

import plotly.graph_objects as go

MARGIN = dict(l=10, r=10, t=40, b=10)
SNR_TITLE = "SNR = abar / (1 - abar)   (noisy -> clean)"


def snr_axis(fig: go.Figure, **kw) -> None:
    """A log SNR x axis with power-of-ten ticks; noise on the left, clean on the right."""
    fig.update_xaxes(type="log", title_text=SNR_TITLE, exponentformat="power", **kw)
