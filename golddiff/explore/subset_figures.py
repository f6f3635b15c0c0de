"""Plotly figures of GoldDiff's golden-subset size: the speed / fidelity frontier of `bench
--frontier` (Compare page) and the adaptive k_t per sample and step of one run (Explorer page)."""

from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go

from ..run.frontier import pareto
from .galleries import subset_mode
from .style import MARGIN, snr_axis

_MODES = {
    "schedule": "#1f77b4",
    "adaptive": "#d62728",
    "local": "#2ca02c",
    "closed form": "#7f7f7f",
}


_SPEED = {
    "speedup": "wall time of the whole run",
    "cpu_total_speedup": "CPU time of the whole run",
}


_SYMBOLS = {"schedule": "square", "adaptive": "diamond", "local": "circle", "closed form": "x"}


def _mode(p: dict) -> str:
    return p.get("subset") or "closed form"


def frontier_figure(js: dict, key: str = "cpu_total_speedup") -> go.Figure:
    """Whole-run speedup (log x) against the worst step's one-step r^2 at the full scan's own
    states (mean over samples; the bar runs down to that step's worst sample), one colour per
    subset mode, with the Pareto front as a line. js: the dict of `run.frontier.frontier`; key:
    "cpu_total_speedup" (process CPU time) or "speedup" (wall time)."""
    fig = go.Figure()
    for mode, color in _MODES.items():
        pts = [p for p in js["points"] if _mode(p) == mode]
        if not pts:
            continue
        worst_step = [int(np.argmin(p["onestep_r2"])) for p in pts]
        fig.add_trace(
            go.Scatter(
                x=[p[key] for p in pts],
                y=[p["onestep_r2_min"] for p in pts],
                mode="markers",  # the labels crowd each other: they are in the hover
                name=mode,
                text=[p["label"] for p in pts],
                marker=dict(color=color, size=10, symbol=_SYMBOLS.get(mode, "circle")),
                error_y=dict(
                    type="data",
                    symmetric=False,
                    array=[0.0] * len(pts),
                    arrayminus=[p["onestep_r2_min"] - p["onestep_r2_worst"][s]
                                for p, s in zip(pts, worst_step)],
                    thickness=1,
                ),
                customdata=[[js["t"][s], p["final_r2"]] for p, s in zip(pts, worst_step)],
                hovertemplate="%{text}<br>speedup %{x:.1f}x<br>worst step t = %{customdata[0]}: "
                "one-step r² %{y:.3f}<br>final r² %{customdata[1]:.3f}<extra></extra>",
            )
        )
    front = pareto(js["points"], key)
    fig.add_trace(
        go.Scatter(
            x=[p[key] for p in front],
            y=[p["onestep_r2_min"] for p in front],
            mode="lines",
            name="Pareto front",
            line=dict(color="gray", dash="dot"),
        )
    )
    fig.update_xaxes(
        type="log",
        title_text=f"speedup vs the full scan ({js['reference']}), {_SPEED[key]}",
        tickvals=[0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000],
        ticktext=["0.5x", "1x", "2x", "5x", "10x", "20x", "50x", "100x", "200x", "500x", "1000x",
                  "2000x", "5000x", "10000x"],
    )
    fig.update_yaxes(title_text="one-step r² at the full scan's states, worst step")
    fig.update_layout(
        height=440,
        margin=MARGIN,
        title=f"Speed vs fidelity over {js['samples']} samples: subset modes and closed forms",
        legend=dict(orientation="h", y=-0.25),
    )
    return fig


def k_per_sample_caption(traj) -> str:
    """What the k_t-per-sample chart shows, for the run's subset mode."""
    if subset_mode(traj) == "local":
        return ("Each line: one sample's golden-subset size k_t at the steps that have a subset "
                "(the Wiener steps at the highest noise have none): a uniform draw while the "
                "posterior is flat, then what the anchor refinement keeps of each sample's "
                "candidates (below SNR 1 plus a uniform tail), and from SNR 5 the patch screens' "
                "whole pool; from the second screened step on, with the images the sample's "
                "previous step weighed carried on; the last step keeps a smaller pool of the same "
                "screens and no carry.")
    return ("Each line: one sample's k_t, the distinct images its importance draws reached before "
            "the estimated one-step error fell below the tolerance (or the cap of 4 k_max draws).")


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
            go.Scatter(x=snr, y=K[:, b], mode="lines+markers", name=f"sample {b + 1}",
                       opacity=0.8)
        )
    if step is not None and 0 <= step < len(traj.records):
        rec = traj.records[step]
        fig.add_vline(x=rec.snr, line_dash="dot", line_color="#111111")
        # on a log axis an annotation's x is log10 of the value (add_vline's own label is not)
        fig.add_annotation(x=math.log10(max(rec.snr, 1e-12)), y=1, yref="paper", yanchor="bottom",
                           text=f"t = {rec.t}", showarrow=False)
    snr_axis(fig)
    fig.update_yaxes(type="log", title_text="k_t: images aggregated")
    fig.update_layout(
        height=360,
        margin=MARGIN,
        title=f"{(subset_mode(traj) or 'adaptive').capitalize()} golden subset: k_t per sample "
        "and step",
        legend=dict(orientation="h", y=-0.3),
    )
    return fig
