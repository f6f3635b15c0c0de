"""Plotly figures of one sampling run (a Trajectory), for the Explorer page. Plain functions:
records in,
figure out; never imports streamlit.

Every figure takes (traj, step, sample): the chosen step (0-based index into traj.records) and the
chosen sample of the batch, so the page re-draws them as a slider moves. SNR axes are logarithmic
and run from noisy (left) to clean (right).
"""

from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go

from ..run.records import LABELS
from .galleries import pool_size, subset_size, top_count
from .style import MARGIN, snr_axis

_NOW = "#111111"  # the chosen step's marker
_SHORT = {"perplexity": "perplexity", "ess": "ESS", "k99": "k_0.99"}  # legend names
_COLORS = {
    "entropy": "#1f77b4",
    "pixel": "#ff7f0e",
    "perplexity": "#1f77b4",
    "ess": "#2ca02c",
    "k99": "#9467bd",
    "k_t": "#d62728",
    "m_t": "#8c564b",
    "N": "gray",
}


# ----------------------------------------------------------------------------- curves against SNR


CURVE_HEIGHT = 340  # px: a curve, the other curve and the step's images share one screen row


def _layout(fig: go.Figure, title: str) -> None:
    fig.update_layout(
        height=CURVE_HEIGHT,
        margin=dict(l=4, r=4, t=30, b=4),
        title=dict(text=title, font_size=13, y=0.98),
        legend=dict(orientation="h", yanchor="top", y=-0.25, x=0, font_size=10),
        hovermode="closest",
        modebar=dict(orientation="v"),  # down the right edge, off the title
    )
    fig.update_xaxes(title_font_size=10, title_standoff=4, tickfont_size=10)
    fig.update_yaxes(title_font_size=10, tickfont_size=10)


def clicked_step(snr: np.ndarray, points: list[dict]) -> int | None:
    """The step a click on an SNR chart points at: the step whose SNR is nearest (in log) to the
    last clicked point's x. snr: (S,) per step; points: Streamlit's selection points."""
    xs = [p.get("x") for p in points or [] if isinstance(p.get("x"), (int, float))]
    if not xs or not len(snr):
        return None
    return int(np.argmin(np.abs(np.log(np.asarray(snr, float)) - math.log(max(xs[-1], 1e-300)))))


def entropy_vs_snr(traj, step: int, sample: int) -> go.Figure:
    """Global posterior entropy H and mean per-pixel entropy against SNR (log x), one line per
    sample (the chosen one bold), log N as the ceiling (uniform posterior), and a marker on the
    chosen step."""
    snr = traj.scalars("snr")  # (S,)
    H = traj.series("entropy")  # (S, B)
    Hp = traj.series("pixel_entropy_mean")  # (S, B), NaN without per-pixel maps
    N = traj.records[0].N
    B = H.shape[1]
    fig = go.Figure()
    for b in range(B):
        bold = b == sample
        fig.add_trace(
            go.Scatter(
                x=snr,
                y=H[:, b],
                mode="lines+markers" if bold else "lines",
                name="global H",
                legendgroup="H",
                showlegend=bold,
                opacity=1 if bold else 0.3,
                line=dict(color=_COLORS["entropy"], width=3 if bold else 1),
                hovertemplate=f"sample {b}<br>SNR %{{x:.3g}}<br>H = %{{y:.2f}} nats<extra></extra>",
            )
        )
    if np.isfinite(Hp).any():
        for b in range(B):
            bold = b == sample
            fig.add_trace(
                go.Scatter(
                    x=snr,
                    y=Hp[:, b],
                    mode="lines+markers" if bold else "lines",
                    name="mean per-pixel H(m)",
                    legendgroup="Hp",
                    showlegend=bold,
                    opacity=1 if bold else 0.3,
                    line=dict(color=_COLORS["pixel"], width=3 if bold else 1, dash="dash"),
                    hovertemplate=f"sample {b}<br>SNR %{{x:.3g}}<br>"
                    "mean H(m) = %{y:.2f} nats<extra></extra>",
                )
            )
    fig.add_trace(
        go.Scatter(
            x=[snr.min(), snr.max()],
            y=[math.log(N)] * 2,
            mode="lines",
            name=f"log N = {math.log(N):.2f} (uniform)",
            line=dict(color=_COLORS["N"], dash="dot"),
            hoverinfo="skip",
        )
    )
    ys = [H[step, sample]] + ([Hp[step, sample]] if np.isfinite(Hp[step, sample]) else [])
    fig.add_trace(
        go.Scatter(
            x=[snr[step]] * len(ys),
            y=ys,
            mode="markers",
            name="chosen step",
            showlegend=False,
            marker=dict(size=13, color=_NOW, symbol="circle-open", line=dict(width=3)),
            hovertemplate="t = %d<br>%%{y:.2f} nats<extra>chosen step</extra>"
            % traj.records[step].t,
        )
    )
    snr_axis(fig)
    fig.update_yaxes(title_text="entropy (nats)", rangemode="tozero")
    _layout(fig, "Posterior-weight entropy vs SNR")
    return fig


def entropy_caption(traj, rec) -> str:
    """The entropy chart's caption; rec: the step the slider shows."""
    text = (
        "Entropy: how spread out the posterior weights are, in nats: log N if every training "
        "image were equally likely, 0 if one image held all the weight. The exact global entropy "
        "(blue, over all N images) collapses as the SNR rises."
    )
    if any(r.pixel_entropy is not None for r in traj.records):
        text += (" The mean per-pixel entropy (orange) of the local posteriors, over the images "
                 "the step averages (so it also follows k_t), does not fall as far")
        text += (": see *ties* under the images." if rec.pixel_entropy is not None else
                 " (why: *ties*, under the images at a step with per-pixel posteriors; this "
                 f"{rec.method} step has none).")
    return text + " Faint lines: the other samples; ring: the chosen step."


def support_caption(traj, rec) -> str:
    """The support chart's caption; rec: the step the slider shows."""
    text = ("How many training images really matter, three ways (perplexity, ESS, k_0.99: the "
            "fewest images holding 99% of the weight).")
    if any(r.subset_idx is not None for r in traj.records):
        text += (" Against them GoldDiff's budgets: it screens $m_t$ and keeps $k_t$. Once the "
                 "true support drops far below $k_t$, a small subset is enough, if it holds the "
                 "right images")
        text += (" (W_S below)." if rec.subset_idx is not None else
                 f" (W_S, shown below at the steps that have a subset; this {rec.method} step "
                 "has none).")
    return text


def support_vs_snr(traj, step: int, sample: int) -> go.Figure:
    """Effective support of the global posterior (perplexity, ESS, k_0.99) for the chosen sample
    against SNR, log-log, with GoldDiff's budgets k_t and m_t and N overlaid, and markers on the
    chosen step."""
    snr = traj.scalars("snr")
    N = traj.records[0].N
    fig = go.Figure()
    for name, dash in (("perplexity", None), ("ess", None), ("k99", None)):
        y = traj.series(name)[:, sample]
        fig.add_trace(
            go.Scatter(
                x=snr,
                y=y,
                mode="lines+markers",
                name=_SHORT[name],
                line=dict(color=_COLORS[name], width=2.5, dash=dash),
                marker=dict(size=5),
                hovertemplate="SNR %{x:.3g}<br>%{y:.4g}<extra>" + LABELS[name] + "</extra>",
            )
        )
    budgets = [("k_t", "k_t (subset)", subset_size), ("m_t", "m_t (pool)", pool_size)]
    for name, label, size in budgets:  # this sample's sizes where they are per sample
        y = np.array([np.nan if (v := size(r, sample)) is None else float(v)
                      for r in traj.records])
        if np.isfinite(y).any():
            fig.add_trace(
                go.Scatter(
                    x=snr,
                    y=y,
                    mode="lines",
                    name=label,
                    connectgaps=False,
                    line=dict(color=_COLORS[name], width=2, dash="dash", shape="linear"),
                    hovertemplate="SNR %{x:.3g}<br>%{y:.0f}<extra>" + label + "</extra>",
                )
            )
    fig.add_trace(
        go.Scatter(
            x=[snr.min(), snr.max()],
            y=[N, N],
            mode="lines",
            name=f"N = {N:,}",
            line=dict(color=_COLORS["N"], dash="dot"),
            hoverinfo="skip",
        )
    )
    ys = [float(traj.series(k)[step, sample]) for k in ("perplexity", "ess", "k99")]
    k_t = subset_size(traj.records[step], sample)
    if k_t is not None:
        ys.append(float(k_t))
    fig.add_trace(
        go.Scatter(
            x=[snr[step]] * len(ys),
            y=ys,
            mode="markers",
            name="chosen step",
            showlegend=False,
            marker=dict(size=12, color=_NOW, symbol="circle-open", line=dict(width=3)),
            hovertemplate="t = %d<br>%%{y:.4g}<extra>chosen step</extra>" % traj.records[step].t,
        )
    )
    snr_axis(fig)
    fig.update_yaxes(
        type="log",
        title_text="number of training images",
        exponentformat="power",
        dtick=1,
        range=[-0.1, math.log10(N) + 0.15],
    )
    _layout(fig, "Effective support size vs SNR")
    return fig


# ----------------------------------------------------------------------------- UMAP map


def weight_range(traj, sample: int, n: int) -> float:
    """The largest exact posterior weight among the top-n images of a sample over all steps: the
    map's colour scale stays fixed while the step changes, so a darker marker always means more
    weight."""
    top = [float(np.max(r.top_w[sample][:n])) for r in traj.records]
    return max(max(top), 1e-12)


def umap_figure(emap, traj, step: int, sample: int) -> go.Figure:
    """The training set on a 2-D map (grey), the golden subset S_t of the chosen sample (gold,
    when the step has one), the exact posterior's top images (those holding 99% of its weight, at
    most the record's top-n) coloured by weight with its single top image starred, and the x0_hat
    trajectory of that sample placed on the map (line; the chosen step ringed). emap:
    golddiff.embed.EmbeddingMap (coords (n, 2), locate(idx), transform(x))."""
    rec = traj.records[step]
    fig = go.Figure()
    fig.add_trace(
        go.Scattergl(
            x=emap.coords[:, 0],
            y=emap.coords[:, 1],
            mode="markers",
            name="training set",
            marker=dict(size=3, color="#c8c8c8"),
            hoverinfo="skip",
        )
    )
    if rec.subset_idx is not None:
        xy = emap.locate(rec.subset_idx[sample])
        fig.add_trace(
            go.Scattergl(
                x=xy[:, 0],
                y=xy[:, 1],
                mode="markers",
                name=f"golden subset S_t ({rec.k_t})",
                marker=dict(size=4, color="#f2b01e", opacity=0.7),
                hoverinfo="skip",
            )
        )
    n = rec.top_idx.shape[1]
    shown = top_count(rec, sample, n)
    idx, w = rec.top_idx[sample][:shown], rec.top_w[sample][:shown]
    xy = emap.locate(idx)
    fig.add_trace(
        go.Scatter(
            x=xy[:, 0],
            y=xy[:, 1],
            mode="markers",
            customdata=np.stack([idx, w], 1),
            name="exact posterior's top images, by weight",
            marker=dict(
                size=10,
                color=w,
                colorscale=[[0, "#f9a98b"], [1, "#67000d"]],
                cmin=0.0,
                cmax=weight_range(traj, sample, n),
                line=dict(width=1, color="black"),
                colorbar=dict(title=dict(text="weight w", side="right"), thickness=12, len=0.8),
            ),
            hovertemplate="training image #%{customdata[0]:.0f}<br>"
            "w = %{customdata[1]:.3g}<extra></extra>",
        )
    )
    fig.add_trace(
        go.Scatter(
            x=xy[:1, 0],
            y=xy[:1, 1],
            mode="markers",
            name=f"exact posterior's top image (w = {float(w[0]):.2g})",
            marker=dict(
                size=20, color="#d62728", symbol="star", line=dict(width=1.5, color="black")
            ),
            hovertemplate=f"top image #{int(idx[0])}<br>w = {float(w[0]):.3g}<extra></extra>",
        )
    )
    path = emap.transform(np.stack([r.x0_hat[sample].reshape(-1) for r in traj.records]))  # (S, 2)
    fig.add_trace(
        go.Scatter(
            x=path[:, 0],
            y=path[:, 1],
            mode="lines+markers",
            name="x0_hat along the run",
            line=dict(color="#1f77b4", width=2),
            marker=dict(size=6),
            text=[f"t = {r.t}" for r in traj.records],
            hovertemplate="x0_hat at %{text}<extra></extra>",
        )
    )
    fig.add_trace(
        go.Scatter(
            x=path[step : step + 1, 0],
            y=path[step : step + 1, 1],
            mode="markers",
            name="x0_hat at the chosen step",
            marker=dict(size=16, color=_NOW, symbol="circle-open", line=dict(width=3)),
            hoverinfo="skip",
        )
    )
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False, scaleanchor="x")
    title = ("Where the golden subset and the exact posterior live" if rec.subset_idx is not None
             else "Where the exact posterior lives")
    fig.update_layout(
        height=480,
        margin=MARGIN,
        plot_bgcolor="white",
        legend=dict(orientation="h", yanchor="top", y=-0.02, x=0),
        title=dict(text=f"{title} (UMAP map of the training set)", font_size=15),
    )
    return fig


def map_caption(emap, traj, step: int, sample: int) -> str:
    """What the map's dots show at this step, read off the record (no claim the data does not
    make: how many places S_t and the posterior occupy is left to the picture)."""
    rec = traj.records[step]
    shown = top_count(rec, sample, rec.top_idx.shape[1])
    ppl, N = float(rec.perplexity[sample]), rec.N
    sub = "" if emap.n >= N else f" (a seeded sample of {emap.n:,} of the N = {N:,} images)"
    text = f"Grey: training images{sub}; similar images lie close. "
    if rec.subset_idx is not None:
        text += f"Gold: the golden subset $S_t$ of sample {sample + 1} (k_t = {rec.k_t:,}). "
    text += (
        f"Red: the exact posterior's {shown} heaviest image{'s' if shown > 1 else ''} (the fewest "
        f"holding 99% of its weight, at most {rec.top_idx.shape[1]}), darker = more weight; star: "
        f"its top image, w = {float(rec.top_w[sample][0]):.2g}. "
    )
    if ppl > N / 2:
        text += (f"At t = {rec.t} the posterior is flat (perplexity {ppl:,.0f} of {N:,}): the red "
                 "dots are no likelier than the grey ones. ")
    if rec.captured_mass is not None:
        text += (f"$S_t$ holds W_S = {float(rec.captured_mass[sample]):.3f} of the exact "
                 "posterior's weight. ")
    return text + (
        "Blue line: where the guess $\\hat x_0$ sits at each step (placed among its nearest "
        "training images), ringed at the chosen step."
    )
