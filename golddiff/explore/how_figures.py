"""Plotly figures of the How it works page: the sorted posterior weights, a pixel's mask
neighbourhood, the m_t / k_t schedules and the diagnostics of one noised image against t. Plain
functions: arrays in, figure out; never imports streamlit. Time axes put pure noise on the left,
like the SNR axes of every other page."""

from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .style import MARGIN, W_FLOOR, time_axis

NAMES = {"perplexity": "perplexity exp(H)", "ess": "ESS 1/sum w^2", "k99": "k_0.99"}

def schedules(s: dict, N: int, current_t: int | None = None) -> go.Figure:
    """m_t (coarse pool) and k_t (golden subset) against t for a dataset of N images."""
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=s["t"], y=s["m_t"], name="m_t pool", line=dict(color="#19d3f3")))
    fig.add_trace(
        go.Scatter(x=s["t"], y=s["k_t"], name="k_t golden subset", line=dict(color="#ab63fa"))
    )
    fig.add_hline(
        y=N, line_dash="dot", annotation_text=f"N = {N}", annotation_position="bottom right"
    )
    if current_t is not None:
        fig.add_vline(x=current_t, line_dash="dot", line_color="black")
    time_axis(fig)
    fig.update_yaxes(title_text="images", rangemode="tozero")
    fig.update_layout(
        height=320, margin=MARGIN, legend=dict(orientation="h", y=-0.3), title="m_t and k_t"
    )
    return fig


def mask_image(nb: dict, row: int, col: int) -> go.Figure:
    """The mask column of one pixel as an image (1 = in the neighbourhood), the pixel marked with a
    cross,
    with the normalized |M0| strength as hover text."""
    m, s = nb["mask"], nb["strength"]
    fig = go.Figure(
        go.Heatmap(
            z=m,
            customdata=s,
            colorscale=[[0, "#f0f0f0"], [1, "#ab63fa"]],
            zmin=0,
            zmax=1,
            showscale=False,
            xgap=1,
            ygap=1,
            hovertemplate="row %{y}, col %{x}: mask %{z:.0f}, |M0|/max %{customdata:.3f}"
            "<extra></extra>",
        )
    )
    fig.add_trace(
        go.Scatter(
            x=[col],
            y=[row],
            mode="markers",
            marker=dict(symbol="square-open", size=13, color="black", line=dict(width=2)),
            showlegend=False,
            hoverinfo="skip",
        )
    )
    fig.update_yaxes(autorange="reversed", scaleanchor="x", showticklabels=False)
    fig.update_xaxes(showticklabels=False)
    fig.update_layout(
        height=300, margin=MARGIN, title=f"{nb['size']} of {nb['D']} pixels in the neighbourhood"
    )
    return fig


def sorted_weights(w_sorted: np.ndarray, t: int) -> go.Figure:
    """The posterior weights of all N images at one t, largest first (log-log), with the uniform
    level 1/N."""
    N = len(w_sorted)
    fig = go.Figure(
        go.Scatter(
            x=np.arange(1, N + 1),
            y=np.maximum(w_sorted, W_FLOOR),  # weights that underflow are drawn at the floor
            mode="lines+markers" if w_sorted[min(1, N - 1)] < 1e-6 else "lines",
            marker=dict(size=4),
            line=dict(color="#636efa"),
            name="w_(rank)",
        )
    )
    fig.add_hline(y=1.0 / N, line_dash="dot", annotation_text="uniform 1/N")
    fig.update_xaxes(type="log", title_text="rank", exponentformat="power", range=[-0.1, None])
    fig.update_yaxes(
        type="log",
        title_text=f"weight (below 1e{math.log10(W_FLOOR):.0f} drawn at it)",
        exponentformat="power",
        range=[math.log10(max(w_sorted.min(), W_FLOOR)) - 0.5, 0.2],
    )
    fig.update_layout(
        height=300, margin=MARGIN, title=f"Posterior weights at t = {t}, sorted", showlegend=False
    )
    return fig


def profile(p: dict, current_t: int | None = None) -> go.Figure:
    """Entropy / perplexity / ESS / k_0.99 of one noised image's posterior against t (noise on the
    left, as on every page)."""
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.add_trace(
        go.Scatter(x=p["t"], y=p["entropy"], name="entropy H (nats)", line=dict(color="#1f77b4")),
        secondary_y=False,
    )
    for k, col in (("perplexity", "#ff7f0e"), ("ess", "#2ca02c"), ("k99", "#d62728")):
        fig.add_trace(
            go.Scatter(
                x=p["t"],
                y=p[k],
                name=NAMES[k],
                line=dict(color=col, dash="dash"),
            ),
            secondary_y=True,
        )
    if current_t is not None:
        fig.add_vline(x=current_t, line_dash="dot", line_color="black")
    time_axis(fig)
    fig.update_yaxes(title_text="nats", range=[0, math.log(p["N"]) * 1.05], secondary_y=False)
    fig.update_yaxes(
        title_text="images", type="log", dtick=1, exponentformat="power", secondary_y=True
    )
    fig.update_layout(
        height=320, margin=MARGIN, legend=dict(orientation="h", y=-0.35), title="Diagnostics vs t"
    )
    return fig
