"""Image views of one sampling run for the Explorer: x_t / x0_hat / entropy / spread maps, image
galleries, the golden subset next to the exact posterior's top images, and what the captions say
about them. Plain functions: records in, figures or sentences out; never imports streamlit.
"""

from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..data.datasets import to_uint8

GALLERY_SIZE = 16  # subset images shown per step
TOP_SIZE = 8  # exact-posterior images shown beside the subset
MISS_MASS = 0.5  # W_S below this, with perplexity below k_t, means the subset missed the support
STD_MAX = 1.0  # pixels lie in [-1, 1], so a weighted standard deviation never exceeds 1


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


def step_images(traj, step: int, sample: int, std_map: np.ndarray | None = None) -> go.Figure:
    """x_t, x0_hat, the per-pixel posterior entropy H(m) and (when given) the per-pixel posterior
    standard deviation of one sample at one step, side by side.

    Both colour scales are fixed over the whole run: entropy 0 .. the sample's largest value over
    all steps, spread 0 .. 1 (the most pixels in [-1, 1] can spread). std_map: (C, H, W) from
    lessons.pixel_spread. Methods without per-pixel posteriors get two panels.
    """
    rec = traj.records[step]
    has_map = rec.pixel_entropy is not None
    titles = [f"x_t  (t = {rec.t})", "x0_hat  (denoiser's guess)"]
    if has_map:
        titles.append("per-pixel entropy H(m)")
    if std_map is not None:
        titles.append("per-pixel spread (std)")
    fig = make_subplots(rows=1, cols=len(titles), subplot_titles=titles, horizontal_spacing=0.05)
    fig.add_trace(_image_trace(rec.x_t[sample]), row=1, col=1)
    fig.add_trace(_image_trace(rec.x0_hat[sample]), row=1, col=2)
    bar = dict(thickness=10, len=0.9, y=0.45)
    if has_map:
        maps = [
            r.pixel_entropy[sample].mean(0) for r in traj.records if r.pixel_entropy is not None
        ]
        hmax = max(float(np.nanmax(m)) for m in maps) or 1.0
        fig.add_trace(
            go.Heatmap(
                z=rec.pixel_entropy[sample].mean(0),
                colorscale="Viridis",
                zmin=0,
                zmax=hmax,
                colorbar=dict(title=dict(text="nats", side="right"), x=0.74, **bar),
                hovertemplate="row %{y}, col %{x}: H = %{z:.2f} nats<extra></extra>",
            ),
            row=1,
            col=3,
        )
    if std_map is not None:
        fig.add_trace(
            go.Heatmap(
                z=np.asarray(std_map).mean(0),
                colorscale="Cividis",  # 0 (candidates agree) dark blue, 1 light yellow
                zmin=0,
                zmax=STD_MAX,
                colorbar=dict(title=dict(text="std", side="right"), x=1.0, **bar),
                hovertemplate="row %{y}, col %{x}: std = %{z:.3f}<extra></extra>",
            ),
            row=1,
            col=len(titles),
        )
    _image_axes(fig)
    fig.update_layout(height=300, margin=dict(l=10, r=40, t=30, b=10))
    fig.update_annotations(font_size=13)
    return fig


def gallery(
    images: np.ndarray,
    captions: list[str],
    hover: list[str] | None = None,
    ncol: int = 8,
    pad: int = 2,
    width_px: int = 800,
    lines: int = 1,
) -> go.Figure:
    """A grid of images (n, C, H, W) in [-1, 1] drawn as ONE uint8 image trace (small to send), a
    caption under
    each tile, and a hover text per tile (e.g. its dataset index).

    width_px: the expected drawn width, used to pick a height that keeps the pixels square.
    lines: caption lines under each tile (captions break lines with "<br>").
    """
    images = np.asarray(images, dtype=np.float32)
    n, C, H, W = images.shape
    ncol = max(1, min(ncol, n))
    nrow = math.ceil(n / ncol)
    cap = max(4, round(0.45 * H)) * lines  # rows under each tile for its caption
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

    Subset methods: S_t's images ranked by their mean per-pixel (local) posterior weight
    (ranked_idx / ranked_w). Methods without a subset: the exact global posterior's top images
    (top_idx / top_w), labelled as such.
    """
    rec = traj.records[step]
    if rec.ranked_idx is not None:
        return rec.ranked_idx[sample][:n], rec.ranked_w[sample][:n], "subset"
    return rec.top_idx[sample][:n], rec.top_w[sample][:n], "global"


def _global_weights(rec, sample: int, idx: np.ndarray) -> np.ndarray | None:
    """The exact global posterior weight of each shown subset image (None for old records)."""
    g = getattr(rec, "ranked_global_w", None)
    return None if g is None else np.asarray(g[sample][: len(idx)])


def subset_gallery(
    traj, step: int, sample: int, images: np.ndarray, n: int = GALLERY_SIZE
) -> go.Figure:
    """The top-n training images at this step. Subset methods: each tile shows its mean local
    (per-pixel) weight and its exact global posterior weight; images: the dataset (N, C, H, W)."""
    idx, w, kind = subset_view(traj, step, sample, n)
    g = _global_weights(traj.records[step], sample, idx) if kind == "subset" else None
    if g is None:
        caps = [f"#{r + 1}  w={v:.2g}" for r, v in enumerate(w)]
        return gallery(
            np.asarray(images[np.asarray(idx)]), caps, [f"training image #{i}" for i in idx]
        )
    caps = [f"#{r + 1} local {v:.2g}<br>global {gv:.2g}" for r, (v, gv) in enumerate(zip(w, g))]
    hover = [
        f"training image #{i}<br>local {v:.3g}, global {gv:.3g}" for i, v, gv in zip(idx, w, g)
    ]
    return gallery(np.asarray(images[np.asarray(idx)]), caps, hover, lines=2)


def subset_caption(traj, step: int, sample: int, n: int = GALLERY_SIZE) -> str:
    """What the subset gallery shows, with the shares it really holds at this step."""
    rec = traj.records[step]
    idx, w, kind = subset_view(traj, step, sample, n)
    if kind != "subset":
        return (
            f"The {rec.method} step uses no golden subset: these are the training images with the "
            f"largest exact posterior weight over all N = {rec.N:,} images. Together they hold "
            f"{float(np.sum(w)):.1%} of it."
        )
    text = (
        "The training images GoldDiff averaged at this step, **ranked by their mean local "
        "(per-pixel) weight**: the average over pixels of the weight each pixel's own posterior "
        f"gives the image (summed over all of $S_t$ = 1). The {len(idx)} shown hold "
        f"{float(np.sum(w)):.1%} of that local weight"
    )
    g = _global_weights(rec, sample, idx)
    if g is None:
        return text + "."
    return text + (
        f" and {float(np.sum(g)):.1%} of the exact global posterior over all N images "
        "(**global**: one softmax over whole images). Local weights stay spread because pixels "
        "where many images agree split their weight among them, even when the global posterior "
        "has settled on one image."
    )


def global_top_gallery(
    traj, step: int, sample: int, images: np.ndarray, n: int = TOP_SIZE
) -> go.Figure:
    """The exact global posterior's top-n images at this step, each marked "in S_t" or "MISSED"
    when the step had a golden subset. images: the dataset (N, C, H, W)."""
    rec = traj.records[step]
    idx, w = rec.top_idx[sample][:n], rec.top_w[sample][:n]
    held = None if rec.subset_idx is None else set(np.asarray(rec.subset_idx[sample]).tolist())
    caps, hover = [], []
    for r, (i, v) in enumerate(zip(idx, w)):
        mark = "" if held is None else ("<br>in S_t" if int(i) in held else "<br>MISSED")
        caps.append(f"#{r + 1} w={v:.2g}{mark}")
        hover.append(f"training image #{i}<br>global weight {v:.3g}{mark}")
    return gallery(np.asarray(images[np.asarray(idx)]), caps, hover, ncol=4, width_px=400, lines=2)


def missed(traj, step: int, sample: int, n: int = TOP_SIZE) -> list[int]:
    """Indices among the exact posterior's top-n images that S_t does not hold (empty without
    S_t)."""
    rec = traj.records[step]
    if rec.subset_idx is None:
        return []
    held = set(np.asarray(rec.subset_idx[sample]).tolist())
    return [int(i) for i in rec.top_idx[sample][:n] if int(i) not in held]


def miss_warning(traj, step: int, sample: int) -> str | None:
    """A sentence when the golden subset missed where the posterior went: W_S < MISS_MASS while
    the posterior's perplexity is already below k_t (a subset of k_t could have held it all)."""
    rec = traj.records[step]
    if rec.captured_mass is None or rec.k_t is None:
        return None
    ws, ppl = float(rec.captured_mass[sample]), float(rec.perplexity[sample])
    if ws >= MISS_MASS or ppl >= rec.k_t:
        return None
    lost = missed(traj, step, sample)
    return (
        f"**The golden subset missed the posterior.** At t = {rec.t} the exact posterior spreads "
        f"over about {ppl:.3g} image{'' if f'{ppl:.3g}' == '1' else 's'}, fewer than the subset's "
        f"k_t = {rec.k_t:,}, yet $S_t$ holds "
        f"only W_S = {ws:.3f} of its weight"
        + (
            f" ({len(lost)} of its top {TOP_SIZE} images are not in $S_t$, marked MISSED)"
            if lost
            else ""
        )
        + ". The random pool of m_t images did not contain the images the posterior chose, so "
        "GoldDiff averaged the wrong ones. Try **pool = auto** in the method parameters (or the "
        "*Pool auto fixes it* scenario): it screens all N images once the posterior is this "
        "concentrated."
    )
