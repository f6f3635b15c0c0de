"""Where each pixel of x0_hat comes from: the pixel-source map of one step (lessons.PixelSources)
drawn as a mosaic, one colour per training image, beside x0_hat and the images themselves. Plain
functions: sources in, figures or sentences out; never imports streamlit."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .galleries import _image_axes, _image_trace, gallery

SOURCE_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#17becf")
OTHER = "#7f7f7f"  # held by an image outside the coloured few
SHARED = "#f2f2f2"  # no image holds a majority of the pixel


def _rgb(hex_color: str) -> np.ndarray:
    return np.array([int(hex_color[i : i + 2], 16) for i in (1, 3, 5)], np.uint8)


def source_pixels(src, n: int = len(SOURCE_COLORS)) -> tuple[np.ndarray, np.ndarray]:
    """(H, W) source image and (H, W) bool "held" of a PixelSources: in a colour image each
    pixel takes the channel whose source holds the largest weight."""
    top_w, source = np.asarray(src.top_w), np.asarray(src.source)  # (C, H, W)
    c = np.argmax(top_w, axis=0)[None]  # (1, H, W)
    w = np.take_along_axis(top_w, c, 0)[0]
    return np.take_along_axis(source, c, 0)[0], w > 0.5


def mosaic(src, n: int = len(SOURCE_COLORS)) -> np.ndarray:
    """(H, W, 3) uint8: each held pixel in the colour of its source (the n images holding the
    most pixels; OTHER for the rest), SHARED where no image holds a majority."""
    source, held = source_pixels(src, n)
    out = np.empty(source.shape + (3,), np.uint8)
    out[:] = _rgb(SHARED)
    out[held] = _rgb(OTHER)
    for i, color in zip(src.images[:n], SOURCE_COLORS):
        out[held & (source == i)] = _rgb(color)
    return out


def sources_figure(src, x0_hat: np.ndarray, t: int, height: int = 300) -> go.Figure:
    """The mosaic of pixel sources beside x0_hat (C, H, W) of the same step."""
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.04,
                        subplot_titles=[f"pixel sources  (t = {t})", "x0_hat"])
    source, held = source_pixels(src)
    fig.add_trace(
        go.Image(z=mosaic(src), customdata=np.where(held, source, -1),
                 hovertemplate="row %{y}, col %{x}<extra></extra>"),
        row=1, col=1,
    )
    fig.add_trace(_image_trace(x0_hat), row=1, col=2)
    _image_axes(fig)
    fig.update_layout(height=height, margin=dict(l=4, r=4, t=24, b=4))
    fig.update_annotations(font_size=12)
    return fig


def sources_gallery(src, images: np.ndarray, n: int = len(SOURCE_COLORS)) -> go.Figure | None:
    """The n images holding the most pixels, each under a square of its mosaic colour and its
    share of the pixels; None when no image holds any pixel."""
    ids = np.asarray(src.images[:n])
    if len(ids) == 0:
        return None
    caps = [f"<span style='color:{c}'>■</span> #{int(i)}  {s:.1%}"
            for i, c, s in zip(ids, SOURCE_COLORS, src.share)]
    hover = [f"training image #{int(i)}<br>holds {s:.1%} of the pixels"
             for i, s in zip(ids, src.share)]
    return gallery(np.asarray(images[ids]), caps, hover, ncol=3, width_px=330)


def _pct(x: float) -> str:
    """A share as a percentage that never rounds a non-zero share to 0% or a partial one to 100%."""
    if 0 < x < 0.005:
        return "under 1%"
    if 0.995 < x < 1:
        return "over 99%"
    return f"{x:.0%}"


def sources_caption(src, rec, n: int = len(SOURCE_COLORS)) -> str:
    """What the mosaic shows at this step, read off the sources."""
    held = 1.0 - src.shared
    shown = float(np.sum(src.share[:n]))
    why = ("because they agree there (ties, such as an empty background)" if rec.snr >= 1.0
           else "because the noise is high or because they agree there (ties, such as an empty "
           "background)")
    text = (
        f"Each pixel of $\\hat x_0$ coloured by the training image that holds more than half of "
        f"that pixel's own (local) posterior weight at t = {rec.t}. Light grey: no image does "
        f"({_pct(src.shared)} of the pixels): many images still share the pixel, {why}."
    )
    if len(src.images) == 0:
        return text + " At this step no pixel has a single source yet."
    k, c = len(src.images), min(n, len(src.images))
    text += (
        f" {k:,} image{'s' * (k != 1)} hold{'s' * (k == 1)} the other {_pct(held)}; the {c} "
        f"coloured one{'s' * (c != 1)} hold{'s' * (c == 1)} {_pct(shown)}"
        + (", dark grey the rest." if k > n else ".")
    )
    if rec.method == "optimal":
        return text + (" optimal has one posterior for the whole image, so every pixel has the "
                       "same source.")
    return text + (
        " GoldDiff's and pca's posteriors are per pixel (PCA locality), so $\\hat x_0$ is a "
        "mosaic of pieces of different training images"
        + ("." if rec.t == 0 else "; scrub towards t = 0 to watch it form.")
    )
