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
from plotly.subplots import make_subplots

from ..data.datasets import to_uint8
from ..run.records import LABELS
from .style import MARGIN, snr_axis

GALLERY_SIZE = 16  # subset images shown per step
_NOW = "#111111"  # the chosen step's marker
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


# ----------------------------------------------------------------------------- images


def _pixels(img: np.ndarray) -> tuple[np.ndarray, bool]:
    """(C, H, W) in [-1, 1] -> (H, W) grey values in [-1, 1], or (H, W, 3) uint8 RGB; and whether
    RGB."""
    img = np.asarray(img, dtype=np.float32)
    if img.shape[0] == 1:
        return img[0], False
    return to_uint8(img.transpose(1, 2, 0)), True


def _image_axes(fig: go.Figure) -> None:
    """Square pixels, row 0 at the top, no ticks."""
    fig.update_xaxes(visible=False, constrain="domain")
    fig.update_yaxes(visible=False, autorange="reversed", constrain="domain")
    for ax in fig.layout:
        if ax.startswith("yaxis"):
            fig.layout[ax].scaleanchor = "x" + ax[5:]


def _image_trace(img: np.ndarray, hover: str | None = None) -> go.BaseTraceType:
    z, rgb = _pixels(img)
    if rgb:
        return go.Image(z=z, hoverinfo="skip")
    return go.Heatmap(
        z=z,
        colorscale="gray",
        zmin=-1,
        zmax=1,
        showscale=False,
        hovertemplate=hover or "row %{y}, col %{x}: %{z:.2f}<extra></extra>",
    )


def step_images(traj, step: int, sample: int) -> go.Figure:
    """x_t, x0_hat and the per-pixel posterior entropy map H(m) of one sample at one step, side by
    side.

    The entropy colour scale is fixed over the whole trajectory of the sample (0 .. its largest
    value), so the map visibly cools as the posterior concentrates. Methods without per-pixel
    posteriors get two panels.
    """
    rec = traj.records[step]
    has_map = rec.pixel_entropy is not None
    titles = [f"x_t  (t = {rec.t})", "x0_hat  (denoiser's guess)"]
    if has_map:
        titles.append("per-pixel posterior entropy H(m)")
    fig = make_subplots(rows=1, cols=len(titles), subplot_titles=titles, horizontal_spacing=0.04)
    fig.add_trace(_image_trace(rec.x_t[sample]), row=1, col=1)
    fig.add_trace(_image_trace(rec.x0_hat[sample]), row=1, col=2)
    if has_map:
        maps = [
            r.pixel_entropy[sample].mean(0) for r in traj.records if r.pixel_entropy is not None
        ]  # (H, W)
        hmax = max(float(np.nanmax(m)) for m in maps) or 1.0
        fig.add_trace(
            go.Heatmap(
                z=rec.pixel_entropy[sample].mean(0),
                colorscale="Viridis",
                zmin=0,
                zmax=hmax,
                colorbar=dict(title=dict(text="nats", side="right"), thickness=12, len=0.9),
                hovertemplate="row %{y}, col %{x}: H = %{z:.2f} nats<extra></extra>",
            ),
            row=1,
            col=3,
        )
    _image_axes(fig)
    fig.update_layout(height=300, margin=dict(l=10, r=10, t=30, b=10))
    fig.update_annotations(font_size=13)
    return fig


def gallery(
    images: np.ndarray,
    captions: list[str],
    hover: list[str] | None = None,
    ncol: int = 8,
    pad: int = 2,
    width_px: int = 800,
) -> go.Figure:
    """A grid of images (n, C, H, W) in [-1, 1] drawn as ONE uint8 image trace (small to send), a
    caption under each tile, and a hover text per tile (e.g. its dataset index).

    width_px: the expected drawn width, used to pick a height that keeps the pixels square.
    """
    images = np.asarray(images, dtype=np.float32)
    n, C, H, W = images.shape
    ncol = max(1, min(ncol, n))
    nrow = math.ceil(n / ncol)
    cap = max(4, round(0.45 * H))  # rows under each tile for its caption
    hh, ww = H + pad + cap, W + pad
    u8 = to_uint8(images)  # (n, C, H, W)
    z = np.full((nrow * hh, ncol * ww, C), 255, np.uint8)  # white gaps
    for i in range(n):
        r, c = divmod(i, ncol)
        z[r * hh : r * hh + H, c * ww : c * ww + W] = u8[i].transpose(1, 2, 0)
    if C == 3:
        fig = go.Figure(go.Image(z=z, hoverinfo="skip"))
    else:
        fig = go.Figure(
            go.Heatmap(
                z=z[..., 0], colorscale="gray", zmin=0, zmax=255, showscale=False, hoverinfo="skip"
            )
        )
    rc = [divmod(i, ncol) for i in range(n)]
    cx = np.array([c * ww + (W - 1) / 2 for r, c in rc])
    cy = np.array([r * hh + (H - 1) / 2 for r, c in rc])
    if hover is not None:  # invisible markers carry the hover
        fig.add_trace(
            go.Scatter(
                x=cx,
                y=cy,
                mode="markers",
                marker=dict(size=20, opacity=0),
                text=hover,
                showlegend=False,
                hovertemplate="%{text}<extra></extra>",
            )
        )
    for i, text in enumerate(captions):
        fig.add_annotation(
            x=cx[i],
            y=rc[i][0] * hh + H - 0.5 + cap / 2,
            text=text,
            showarrow=False,
            font=dict(size=11),
            xanchor="center",
            yanchor="middle",
        )
    _image_axes(fig)
    fig.update_xaxes(range=[-0.5, ncol * ww - pad - 0.5])
    fig.update_yaxes(range=[nrow * hh - pad - 0.5, -0.5], autorange=False)
    fig.update_layout(
        height=int(nrow * hh * width_px / (ncol * ww)),
        margin=dict(l=0, r=0, t=0, b=0),
        plot_bgcolor="white",
    )
    return fig


def subset_view(
    traj, step: int, sample: int, n: int = GALLERY_SIZE
) -> tuple[np.ndarray, np.ndarray, str]:
    """Which training images to show for this step: (indices (n,), weights (n,), what they are).

    Subset methods: S_t's images ranked by their mean per-pixel posterior weight (ranked_idx /
    ranked_w). Methods without a subset: the global posterior's top images (top_idx / top_w),
    labelled as such.
    """
    rec = traj.records[step]
    if rec.ranked_idx is not None:
        return rec.ranked_idx[sample][:n], rec.ranked_w[sample][:n], "subset"
    return rec.top_idx[sample][:n], rec.top_w[sample][:n], "global"


def subset_gallery(
    traj, step: int, sample: int, images: np.ndarray, n: int = GALLERY_SIZE
) -> go.Figure:
    """The top-n training images at this step with rank and weight. images: the dataset (N, C, H,
    W)."""
    idx, w, _ = subset_view(traj, step, sample, n)
    caps = [f"#{r + 1}  w={v:.2g}" for r, v in enumerate(w)]
    return gallery(np.asarray(images[np.asarray(idx)]), caps, [f"training image #{i}" for i in idx])


# ----------------------------------------------------------------------------- curves against SNR


def _layout(fig: go.Figure, title: str) -> None:
    fig.update_layout(
        height=400,
        margin=MARGIN,
        title=dict(text=title, font_size=15),
        legend=dict(orientation="h", yanchor="top", y=-0.22, x=0),
        hovermode="closest",
    )


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
                name=f"{LABELS['entropy']}",
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
                    name=LABELS["pixel_entropy_mean"],
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
            name=f"log N = {math.log(N):.2f} (uniform over all N)",
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
            marker=dict(size=13, color=_NOW, symbol="circle-open", line=dict(width=3)),
            hovertemplate="t = %d<br>%%{y:.2f} nats<extra>chosen step</extra>"
            % traj.records[step].t,
        )
    )
    snr_axis(fig)
    fig.update_yaxes(title_text="entropy (nats)", rangemode="tozero")
    _layout(fig, "Posterior-weight entropy vs SNR")
    return fig


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
                name=LABELS[name],
                line=dict(color=_COLORS[name], width=2.5, dash=dash),
                marker=dict(size=5),
                hovertemplate="SNR %{x:.3g}<br>%{y:.4g}<extra>" + LABELS[name] + "</extra>",
            )
        )
    budgets = [("k_t", "golden subset size k_t"), ("m_t", "coarse pool size m_t")]
    for name, label in budgets:
        y = traj.scalars(name)
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
    k_t = traj.records[step].k_t
    if k_t is not None:
        ys.append(float(k_t))
    fig.add_trace(
        go.Scatter(
            x=[snr[step]] * len(ys),
            y=ys,
            mode="markers",
            name="chosen step",
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


def umap_figure(emap, traj, step: int, sample: int) -> go.Figure:
    """The training set on a 2-D map (grey), the golden subset S_t of the chosen sample (gold), its
    top images coloured by weight, and the x0_hat trajectory of that sample placed on the map
    (line; the chosen step ringed). emap: golddiff.embed.EmbeddingMap (coords (n, 2),
    locate(idx), transform(x))."""
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
    idx, w, kind = subset_view(traj, step, sample, n=rec.top_idx.shape[1])
    xy = emap.locate(idx)
    fig.add_trace(
        go.Scatter(
            x=xy[:, 0],
            y=xy[:, 1],
            mode="markers",
            customdata=np.stack([idx, w], 1),
            name="top of S_t, by weight" if kind == "subset" else "global posterior top, by weight",
            marker=dict(
                size=11,
                color=w,
                colorscale=[[0, "#f9a98b"], [1, "#67000d"]],
                cmin=float(w.min()),
                cmax=max(float(w.max()), float(w.min()) + 1e-12),
                line=dict(width=1, color="black"),
                colorbar=dict(title=dict(text="weight", side="right"), thickness=12, len=0.8),
            ),
            hovertemplate="training image #%{customdata[0]:.0f}<br>"
            "w = %{customdata[1]:.3g}<extra></extra>",
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
    fig.update_layout(
        height=480,
        margin=MARGIN,
        plot_bgcolor="white",
        legend=dict(orientation="h", yanchor="top", y=-0.02, x=0),
        title=dict(
            text="Where the golden subset lives (UMAP map of the training set)", font_size=15
        ),
    )
    return fig
