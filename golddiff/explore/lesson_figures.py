"""Plotly figures (and image tiles) for the teaching pages. Plain functions: arrays in, figure out.

Never imports streamlit. Every SNR axis is logarithmic and runs from noisy (left) to clean (right).
"""

from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..data.datasets import to_uint8
from .style import MARGIN, duration, snr_axis

METHOD_COLORS = {
    "pca": "#636efa",
    "optimal": "#ef553b",
    "wiener": "#00cc96",
    "golddiff": "#ab63fa",
    "hybrid": "#ffa15a",
    "random": "#ab63fa",
    "nearest": "#19d3f3",
}


def tile(images: np.ndarray, ncol: int | None = None, pad: int = 2, px: int = 56) -> np.ndarray:
    """(B, C, H, W) images in [-1, 1] -> one uint8 mosaic (grayscale 2-D or RGB 3-D) with white
    gaps.

    Each image is enlarged by nearest neighbour to about `px` pixels so tiny images (8x8) stay
    crisp.
    """
    x = np.asarray(images, dtype=np.float32)
    B, C, H, W = x.shape
    f = max(1, px // H)
    x = np.repeat(np.repeat(x, f, axis=2), f, axis=3)
    H, W = H * f, W * f
    ncol = min(ncol or B, B)
    nrow = math.ceil(B / ncol)
    out = np.full((nrow * (H + pad) - pad, ncol * (W + pad) - pad, C), 255, np.uint8)
    u8 = to_uint8(x).transpose(0, 2, 3, 1)  # (B, H, W, C)
    for i in range(B):
        r, c = divmod(i, ncol)
        out[r * (H + pad) : r * (H + pad) + H, c * (W + pad) : c * (W + pad) + W] = u8[i]
    return out[..., 0] if C == 1 else out


def _vline(
    fig: go.Figure, x: float, text: str, color: str = "gray", position: str = "top left", **kw
) -> None:
    if x and x > 0:
        fig.add_vline(
            x=x,
            line_dash="dot",
            line_color=color,
            annotation_text=text,
            annotation_position=position,
            annotation_font_color=color,
            **kw,
        )


# ----------------------------------------------------------------------------- 2-D toy


def toy_scene(frame: dict, lim: float = 2.0, grid: int = 41) -> go.Figure:
    """Training points coloured by posterior weight, golden subset ringed, x_t and its path, the
    x0_hat path.

    A faint grid of clickable points (trace name 'start grid') lets the user pick a new start x_T.
    """
    P, w = frame["points"], frame["weights"]
    fig = go.Figure()
    g = np.linspace(-lim, lim, grid)
    gx, gy = np.meshgrid(g, g)
    fig.add_trace(
        go.Scatter(
            x=gx.ravel(),
            y=gy.ravel(),
            mode="markers",
            name="start grid",
            marker=dict(size=9, color="rgba(120,120,120,0.04)"),
            hoverinfo="x+y",
            hovertemplate="click: start here (%{x:.2f}, %{y:.2f})<extra></extra>",
            showlegend=False,
        )
    )
    order = np.argsort(w)  # heaviest drawn last (on top)
    fig.add_trace(
        go.Scatter(
            x=P[order, 0],
            y=P[order, 1],
            mode="markers",
            name="training points",
            marker=dict(
                size=6,
                color=w[order],
                colorscale="Viridis",
                cmin=0.0,
                cmax=float(w.max()),
                colorbar=dict(title="w_i", thickness=12),
            ),
            hovertemplate="w = %{marker.color:.2e}<extra></extra>",
        )
    )
    S = frame["subset"]
    if len(S):
        fig.add_trace(
            go.Scatter(
                x=P[S, 0],
                y=P[S, 1],
                mode="markers",
                name=f"golden subset (k_t={len(S)})",
                marker=dict(size=11, color="rgba(0,0,0,0)", line=dict(color="#d62728", width=1.5)),
                hoverinfo="skip",
            )
        )
    xp, x0 = frame["x_path"], frame["x0_path"]
    fig.add_trace(
        go.Scatter(
            x=xp[:, 0],
            y=xp[:, 1],
            mode="lines+markers",
            name="x_t path",
            line=dict(color="#1f77b4", width=2),
            marker=dict(size=4),
        )
    )
    fig.add_trace(
        go.Scatter(
            x=x0[:, 0],
            y=x0[:, 1],
            mode="lines+markers",
            name="x0_hat path",
            line=dict(color="#ff7f0e", width=2, dash="dot"),
            marker=dict(size=5, symbol="x"),
        )
    )
    fig.add_trace(
        go.Scatter(
            x=[xp[0, 0]],
            y=[xp[0, 1]],
            mode="markers",
            name="start x_T",
            marker=dict(size=12, symbol="diamond", color="#1f77b4"),
        )
    )
    fig.add_trace(
        go.Scatter(
            x=[xp[-1, 0]],
            y=[xp[-1, 1]],
            mode="markers",
            name=f"x_t (t={frame['t']})",
            marker=dict(size=14, symbol="star", color="#1f77b4", line=dict(color="white", width=1)),
        )
    )
    fig.add_trace(
        go.Scatter(
            x=[x0[-1, 0]],
            y=[x0[-1, 1]],
            mode="markers",
            name="x0_hat",
            marker=dict(size=13, symbol="x", color="#ff7f0e"),
        )
    )
    fig.update_layout(
        height=560,
        margin=MARGIN,
        clickmode="event+select",
        dragmode="pan",
        legend=dict(orientation="h", y=-0.08),
        title=f"t = {frame['t']}, SNR = {frame['snr']:.3g}: "
        "posterior weight of each training point",
    )
    fig.update_xaxes(range=[-lim, lim], zeroline=False)
    fig.update_yaxes(range=[-lim, lim], scaleanchor="x", zeroline=False)
    return fig


def _finish_twin_axes(
    fig: go.Figure, left: str, left_range: list, right: str, title: str
) -> go.Figure:
    """Shared finish of the SNR figures with a linear left axis and a log right axis."""
    snr_axis(fig)
    fig.update_yaxes(title_text=left, range=left_range, secondary_y=False)
    fig.update_yaxes(
        title_text=right, type="log", dtick=1, exponentformat="power", secondary_y=True
    )
    fig.update_layout(height=420, margin=MARGIN, legend=dict(orientation="h", y=-0.25), title=title)
    return fig


def concentration_vs_snr(
    snr: np.ndarray,
    H: np.ndarray,
    ppl: np.ndarray,
    N: int,
    k_t: np.ndarray | None = None,
    current: float | None = None,
) -> go.Figure:
    """Global posterior entropy (left axis) and perplexity with k_t and N (right axis, log) against
    SNR."""
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.add_trace(
        go.Scatter(
            x=snr, y=H, name="entropy H (nats)", mode="lines+markers", line=dict(color="#1f77b4")
        ),
        secondary_y=False,
    )
    fig.add_trace(
        go.Scatter(
            x=snr, y=ppl, name="perplexity exp(H)", mode="lines", line=dict(color="#ff7f0e")
        ),
        secondary_y=True,
    )
    if k_t is not None and np.isfinite(k_t).any():
        fig.add_trace(
            go.Scatter(
                x=snr,
                y=k_t,
                name="golden subset k_t",
                mode="lines",
                line=dict(color="#d62728", dash="dash"),
            ),
            secondary_y=True,
        )
    fig.add_trace(
        go.Scatter(
            x=[snr.min(), snr.max()],
            y=[N, N],
            name=f"N = {N}",
            mode="lines",
            line=dict(color="gray", dash="dot"),
        ),
        secondary_y=True,
    )
    if current is not None:
        _vline(fig, current, "now", color="black")
    return _finish_twin_axes(
        fig,
        "entropy (nats)",
        [0, math.log(N) * 1.05],
        "number of images",
        "Posterior concentration along the trajectory",
    )


# ----------------------------------------------------------------------------- Compare


def step_times(ms: dict[str, float], phases: dict[str, dict]) -> go.Figure:
    """Median ms per denoiser call of each method (log x); the screen / select / aggregate split on
    hover."""
    names = list(ms)
    hover = [
        " | ".join(f"{p} {phases[m].get(p, 0.0):.2f} ms" for p in ("screen", "select", "aggregate"))
        for m in names
    ]
    fig = go.Figure(
        go.Bar(
            y=names,
            x=[max(ms[m], 1e-3) for m in names],
            orientation="h",
            marker_color=[METHOD_COLORS.get(m, "#636efa") for m in names],
            text=[duration(ms[m] / 1000) for m in names],
            textposition="outside",
            customdata=hover,
            hovertemplate="%{y}: %{x:.2f} ms<br>%{customdata}<extra></extra>",
        )
    )
    hi = max(max(ms.values()), 1e-3)
    fig.update_xaxes(
        type="log",
        title_text="ms per step (log)",
        exponentformat="power",
        range=[math.log10(min(ms.values()) + 1e-3) - 0.5, math.log10(hi) + 1.0],
    )
    fig.update_layout(
        height=80 + 45 * len(names),
        margin=MARGIN,
        title="Wall time per step (median)",
        showlegend=False,
    )
    return fig


def curves_vs_snr(
    curves: dict[str, tuple[np.ndarray, np.ndarray]],
    ytitle: str,
    title: str,
    yrange: list | None = None,
    vlines: dict[str, float] | None = None,
    ylog: bool = False,
) -> go.Figure:
    """One line per name: (snr (S,), y (S,)) against log SNR; optional labelled vertical markers."""
    fig = go.Figure()
    for name, (x, y) in curves.items():
        fig.add_trace(
            go.Scatter(
                x=x, y=y, name=name, mode="lines+markers", line=dict(color=METHOD_COLORS.get(name))
            )
        )
    for text, x in (vlines or {}).items():
        _vline(fig, x, text)
    snr_axis(fig)
    fig.update_yaxes(
        title_text=ytitle, range=yrange, type="log" if ylog else None, exponentformat="power"
    )
    fig.update_layout(height=380, margin=MARGIN, title=title, legend=dict(orientation="h", y=-0.3))
    return fig


def nn_distances(dist: dict[str, np.ndarray], train_scale: float) -> go.Figure:
    """Each final sample's distance to its nearest training image, per method, with the typical
    distance between two training images as a reference line."""
    fig = go.Figure()
    for m, d in dist.items():
        fig.add_trace(
            go.Box(y=d, name=m, boxpoints="all", jitter=0.3, marker_color=METHOD_COLORS.get(m))
        )
    fig.add_hline(
        y=train_scale,
        line_dash="dot",
        annotation_text="typical training-image neighbour distance",
        annotation_position="top left",
    )
    fig.update_yaxes(title_text="RMS distance to nearest training image", rangemode="tozero")
    fig.update_layout(
        height=360,
        margin=MARGIN,
        showlegend=False,
        title="Distance to the nearest training image",
    )
    return fig


# ----------------------------------------------------------------------------- Gaussian regime


def wiener_gap_figure(
    gap: dict, snr_switch: float | None = None, snr_skip: float | None = None
) -> go.Figure:
    """r^2 of the Wiener x0_hat against the exact posterior mean (left) and the exact posterior's
    perplexity / N (right) vs SNR, with the hybrid switch and the teleport target marked."""
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.add_trace(
        go.Scatter(
            x=gap["snr"],
            y=gap["r2"],
            name="r^2 Wiener vs exact posterior mean",
            mode="lines+markers",
            line=dict(color=METHOD_COLORS["wiener"]),
        ),
        secondary_y=False,
    )
    fig.add_trace(
        go.Scatter(
            x=gap["snr"],
            y=gap["ppl_frac"],
            name="exact posterior perplexity / N",
            mode="lines",
            line=dict(color="#ef553b", dash="dash"),
        ),
        secondary_y=True,
    )
    if snr_switch:
        _vline(fig, snr_switch, "hybrid switch", color="#ffa15a")
    if snr_skip:
        _vline(fig, snr_skip, "teleport to", color="#1f77b4", position="bottom right")
    lo = float(np.nanmin(gap["r2"])) if len(gap["r2"]) else 0.0
    return _finish_twin_axes(
        fig,
        "r^2 (1 = identical)",
        [min(0.0, lo) - 0.05, 1.05],
        "perplexity / N",
        "Where is the linear (Gaussian) score enough?",
    )


def time_saved(seconds: dict[str, float], calls: dict[str, int]) -> go.Figure:
    """Wall time of the runs being compared, labelled with their denoiser calls."""
    names = list(seconds)
    fig = go.Figure(
        go.Bar(
            x=[seconds[n] for n in names],
            y=names,
            orientation="h",
            text=[f"{duration(seconds[n])}, {calls[n]} denoiser calls" for n in names],
            textposition="auto",
            marker_color=["#ab63fa", "#1f77b4"][: len(names)],
        )
    )
    fig.update_layout(height=60 + 50 * len(names), margin=MARGIN, title="Wall time")
    fig.update_xaxes(title_text="seconds", rangemode="tozero")
    return fig
