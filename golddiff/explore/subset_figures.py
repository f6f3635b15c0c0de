"""Plotly figures of GoldDiff's golden-subset size: the speed / fidelity frontier of `bench
--frontier` (Compare page) and the adaptive k_t per sample and step of one run (Explorer page)."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from ..run.frontier import pareto
from .style import MARGIN, snr_axis

_MODES = {"adaptive": "#d62728", "schedule": "#1f77b4"}


_SPEED = {
    "speedup": "median wall time per step",
    "cpu_speedup": "median CPU time per step",
    "cpu_total_speedup": "CPU time of the whole run",
}


def frontier_figure(js: dict, key: str = "speedup") -> go.Figure:
    """Speedup (log x) against final r^2 of each frontier point, one colour per subset mode, with
    the Pareto front as a line. js: the dict of `run.frontier.frontier`; key: which speedup
    (_SPEED)."""
    fig = go.Figure()
    for mode, color in _MODES.items():
        pts = [p for p in js["points"] if p.get("subset") == mode]
        if not pts:
            continue
        fig.add_trace(
            go.Scatter(
                x=[p[key] for p in pts],
                y=[p["final_r2"] for p in pts],
                mode="markers+text",
                name=mode,
                text=[p["label"].split(" ", 1)[1] for p in pts],
                textposition="top center",
                marker=dict(color=color, size=10),
                error_y=dict(
                    type="data",
                    symmetric=False,
                    array=[0.0] * len(pts),
                    arrayminus=[p["final_r2"] - p["final_r2_min"] for p in pts],
                    thickness=1,
                ),
                hovertemplate="%{text}<br>speedup %{x:.1f}x<br>final r² %{y:.4f}<extra></extra>",
            )
        )
    front = pareto(js["points"], key)
    fig.add_trace(
        go.Scatter(
            x=[p[key] for p in front],
            y=[p["final_r2"] for p in front],
            mode="lines",
            name="Pareto front",
            line=dict(color="gray", dash="dot"),
        )
    )
    ref = js["reference"]
    fig.update_xaxes(
        type="log",
        title_text=f"speedup vs full-scan {ref}, same run: {_SPEED[key]}",
        tickvals=[1, 2, 5, 10, 20, 50, 100, 200, 500],  # whole speedups, not log minor digits
        ticktext=["1x", "2x", "5x", "10x", "20x", "50x", "100x", "200x", "500x"],
    )
    fig.update_yaxes(title_text="final r² vs full scan (bar: down to the worst sample)")
    fig.update_layout(
        height=420,
        margin=MARGIN,
        title="GoldDiff speed vs fidelity: adaptive tolerance and published k_max",
        legend=dict(orientation="h", y=-0.25),
    )
    return fig


def k_per_sample(traj, step: int | None = None) -> go.Figure | None:
    """k_t of each sample (one line each) against SNR, from an adaptive run's records (`k_b`);
    None when the run used the fixed schedule. step: optional index of the chosen step (marker)."""
    recs = [r for r in traj.records if r.k_b is not None]
    if not recs:
        return None
    snr = np.array([r.snr for r in recs])
    K = np.stack([np.asarray(r.k_b, float) for r in recs])  # (steps, B)
    fig = go.Figure()
    for b in range(K.shape[1]):
        fig.add_trace(
            go.Scatter(x=snr, y=K[:, b], mode="lines+markers", name=f"sample {b}", opacity=0.8)
        )
    if step is not None and 0 <= step < len(traj.records):
        fig.add_vline(x=traj.records[step].snr, line_dash="dot", line_color="#111111")
    snr_axis(fig)
    fig.update_yaxes(type="log", title_text="k_t: images aggregated")
    fig.update_layout(
        height=360,
        margin=MARGIN,
        title="Adaptive golden subset: k_t per sample and step",
        legend=dict(orientation="h", y=-0.3),
    )
    return fig
