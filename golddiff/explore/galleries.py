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
from ..denoise import local_subset

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


def step_images(
    traj, step: int, sample: int, std_map: np.ndarray | None = None, height: int = 340
) -> go.Figure:
    """x_t, x0_hat (top row), the per-pixel posterior entropy H(m) and (when given) the
    per-pixel posterior standard deviation (bottom row) of one sample at one step: a 2 x 2 grid
    compact enough to sit beside the curves on one screen.

    Both colour scales are fixed over the whole run: entropy 0 .. the sample's largest value over
    all steps, spread 0 .. 1 (the most pixels in [-1, 1] can spread); their colour bars lie under
    their panels. std_map: (C, H, W) from lessons.pixel_spread. Methods without per-pixel
    posteriors get the top row only.
    """
    rec = traj.records[step]
    has_map = rec.pixel_entropy is not None
    titles = [f"x_t  (t = {rec.t})", "x0_hat  (the guess)"]
    lower = (["per-pixel entropy H(m)"] if has_map else []) + (
        ["per-pixel spread (std)"] if std_map is not None else [])
    rows = 2 if lower else 1
    fig = make_subplots(rows=rows, cols=2, subplot_titles=titles + lower,
                        horizontal_spacing=0.06, vertical_spacing=0.16)
    fig.add_trace(_image_trace(rec.x_t[sample]), row=1, col=1)
    fig.add_trace(_image_trace(rec.x0_hat[sample]), row=1, col=2)
    bar = dict(thickness=8, len=0.4, orientation="h", y=-0.02, yanchor="top",
               tickfont=dict(size=9))
    col = 1
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
                colorbar=dict(title=dict(text="nats", side="right", font_size=10), x=0.23, **bar),
                hovertemplate="row %{y}, col %{x}: H = %{z:.2f} nats<extra></extra>",
            ),
            row=2,
            col=col,
        )
        col += 1
    if std_map is not None:
        fig.add_trace(
            go.Heatmap(
                z=np.asarray(std_map).mean(0),
                colorscale="Cividis",  # 0 (candidates agree) dark blue, 1 light yellow
                zmin=0,
                zmax=STD_MAX,
                colorbar=dict(title=dict(text="std", side="right", font_size=10),
                              x=0.23 if col == 1 else 0.77, **bar),
                hovertemplate="row %{y}, col %{x}: std = %{z:.3f}<extra></extra>",
            ),
            row=2,
            col=col,
        )
    _image_axes(fig)
    fig.update_layout(height=height if rows == 2 else height // 2 + 20,
                      margin=dict(l=4, r=4, t=24, b=36 if rows == 2 else 4))
    fig.update_annotations(font_size=12)
    return fig


def gallery(
    images: np.ndarray,
    captions: list[str],
    hover: list[str] | None = None,
    ncol: int = 8,
    pad: int = 2,
    width_px: int = 800,
    lines: int = 1,
    fill: bool = False,
) -> go.Figure:
    """A grid of images (n, C, H, W) in [-1, 1] drawn as ONE uint8 image trace (small to send), a
    caption under
    each tile, and a hover text per tile (e.g. its dataset index).

    width_px: the expected drawn width, used to pick a height that keeps the pixels square.
    lines: caption lines under each tile (captions break lines with "<br>").
    fill: keep ncol columns when there are fewer images (the tiles keep their size).
    """
    images = np.asarray(images, dtype=np.float32)
    n, C, H, W = images.shape
    ncol = max(1, ncol if fill else min(ncol, n))
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


def top_count(rec, sample: int, n: int = TOP_SIZE) -> int:
    """How many of the exact posterior's top images to show: the fewest that hold 99% of its
    weight (k_0.99), at most n, so an image of weight ~0 is never shown as "top"."""
    return max(1, min(n, int(rec.k99[sample]), rec.top_idx.shape[1]))


def missed_floor(rec, sample: int) -> float | None:
    """The weight above which an image outside S_t counts as MISSED: 1 / k_t, the share of one
    image of a posterior spread evenly over k_t images, and only while the posterior's perplexity
    is below k_t (a subset of k_t could hold it). None: no subset, or a posterior wider than k_t,
    of which a random S_t holds about k_t / N and averages to the same guess."""
    k = subset_size(rec, sample) if rec.subset_idx is not None else None
    if k is None or float(rec.perplexity[sample]) >= k:
        return None
    return 1.0 / k


def top_marks(rec, sample: int, n: int = TOP_SIZE) -> list[str]:
    """Per shown top image: "in S_t", "MISSED" (outside S_t and heavier than missed_floor) or ""."""
    count = top_count(rec, sample, n)
    if rec.subset_idx is None:
        return [""] * count
    held = set(np.asarray(rec.subset_idx[sample]).tolist())
    floor = missed_floor(rec, sample)
    marks = []
    for i, w in zip(rec.top_idx[sample][:count], rec.top_w[sample][:count]):
        if int(i) in held:
            marks.append("in S_t")
        else:
            marks.append("MISSED" if floor is not None and float(w) > floor else "")
    return marks


def global_top_gallery(
    traj, step: int, sample: int, images: np.ndarray, n: int = TOP_SIZE
) -> go.Figure:
    """The exact global posterior's top images at this step (top_count of them), marked by
    top_marks when the step had a golden subset. images: the dataset (N, C, H, W)."""
    rec = traj.records[step]
    marks = top_marks(rec, sample, n)
    idx, w = rec.top_idx[sample][: len(marks)], rec.top_w[sample][: len(marks)]
    caps, hover = [], []
    for r, (i, v, mark) in enumerate(zip(idx, w, marks)):
        tail = f"<br>{mark}" if mark else ""
        caps.append(f"#{r + 1} w={v:.2g}{tail}")
        hover.append(f"training image #{i}<br>global weight {v:.3g}{tail}")
    lines = 2 if any(marks) else 1
    return gallery(np.asarray(images[np.asarray(idx)]), caps, hover, ncol=4, width_px=300,
                   lines=lines, fill=True)


def top_caption(traj, step: int, sample: int, n: int = TOP_SIZE) -> str:
    """What the exact-posterior gallery shows at this step, read off the record."""
    rec = traj.records[step]
    count, ppl, N = top_count(rec, sample, n), float(rec.perplexity[sample]), rec.N
    k99 = int(rec.k99[sample])
    text = f"The images with the largest exact posterior weight **w** over all N = {N:,} (one " \
        "softmax over whole images): " + (
            ("the one image that holds 99% of it." if k99 == 1 else
             f"the {k99} that hold 99% of it.") if k99 <= n else
            f"the first {n} of the {k99:,} it takes to hold 99% of it."
        )
    if ppl > N / 2:
        text += (
            f" The posterior is **flat** here (perplexity {ppl:,.0f} of {N:,}): every image "
            f"has about 1/N = {1 / N:.2g}, so these are no likelier than the rest."
        )
    if rec.method == "wiener":
        return text + (" The wiener step uses none of these weights (only the data's mean and "
                       "covariance); they are shown for reference.")
    if rec.method in ("optimal", "pca"):
        return text + (" optimal's $\\hat x_0$ is exactly their weighted average." if
                       rec.method == "optimal" else "")
    floor = missed_floor(rec, sample)
    if rec.subset_idx is None:
        return text
    if floor is None:
        return text + (
            f" No image is marked as missed: the posterior spreads over more images "
            f"(perplexity {ppl:,.0f}) than $S_t$ keeps (k_t = {subset_size(rec, sample):,}), so no "
            "single image "
            "decides the guess and a random $S_t$ averages to about the same."
        )
    if "MISSED" not in top_marks(rec, sample, n):
        return text + " **in S_t**: the golden subset holds the image."
    return text + (
        f" **MISSED**: outside $S_t$ although it holds more than 1/k_t = {floor:.2g} of the "
        f"weight, while the posterior spreads over fewer images (perplexity {ppl:.3g}) than "
        f"$S_t$ keeps (k_t = {subset_size(rec, sample):,})."
    )


def subset_gallery(
    idx: np.ndarray, w: np.ndarray, images: np.ndarray, share: dict | None = None,
    n: int = GALLERY_SIZE,
) -> go.Figure:
    """Training images idx (k,) with their exact global weights w (k,), the first n; share: the
    share of pixels each holds a majority of (lessons.PixelSources), by dataset index."""
    idx, w = np.asarray(idx)[:n], np.asarray(w)[:n]
    caps, hover = [], []
    for r, (i, v) in enumerate(zip(idx, w)):
        px = None if share is None else share.get(int(i), 0.0)
        caps.append(f"#{r + 1} w={v:.2g}" + ("" if px is None else f"<br>pixels {px:.1%}"))
        hover.append(f"training image #{i}<br>global weight {v:.3g}"
                     + ("" if px is None else f"<br>holds {px:.1%} of the pixels"))
    return gallery(np.asarray(images[idx]), caps, hover, lines=1 if share is None else 2)


def subset_size(rec, sample: int) -> int | None:
    """How many images this sample's golden subset holds: k_b[sample] where the size is per
    sample (adaptive, local), else k_t (None: no subset)."""
    return int(rec.k_b[sample]) if rec.k_b is not None else rec.k_t


def pool_size(rec, sample: int) -> int | None:
    """How many candidates this sample's screen kept: m_b[sample] where the pool is per sample
    (local), else m_t (None: no pool)."""
    return int(rec.m_b[sample]) if getattr(rec, "m_b", None) is not None else rec.m_t


def subset_caption(rec, sample: int, w: np.ndarray, n: int = GALLERY_SIZE) -> str:
    """What the golden-subset gallery shows (S_t ranked by exact global weight w, (k,))."""
    shown = float(np.sum(np.asarray(w)[:n]))
    ws = float(rec.captured_mass[sample]) if rec.captured_mass is not None else float(np.sum(w))
    text = (
        f"The {subset_size(rec, sample):,} images GoldDiff averaged at this step, **ranked by "
        f"their exact global weight w** (the posterior over all N whole images); the "
        f"{min(n, len(w))} shown hold {shown:.1%} of it and all of $S_t$ holds W_S = {ws:.3f}. "
        "**pixels**: the share of pixels whose own (local) posterior gives the image more than "
        "half its weight. GoldDiff builds $\\hat x_0$ pixel by pixel, so an image can lead by w "
        "and hold few pixels: see *Where each pixel comes from*."
    )
    if ws < MISS_MASS and missed_floor(rec, sample) is not None:
        text += " Here $S_t$ missed the posterior, so even its first images have little weight."
    if len(w) and float(np.max(np.asarray(w)[:n])) < 5e-4:
        text += (" Every image shown has an exact global weight of about 0, so this order says "
                 "little; *Where each pixel comes from* shows which of them the pixels use.")
    return text


def sources_caption(rec, sample: int, ranked: np.ndarray, share: np.ndarray, n: int) -> str:
    """What the gallery of pca's pixel sources shows (no subset: all N weighed per pixel)."""
    return (
        f"pca weighs all N = {rec.N:,} images per pixel. These are the {min(n, len(ranked))} "
        "images that hold the most pixels, **ranked by that share** (a pixel is held when its own "
        f"posterior gives the image more than half its weight); together they hold "
        f"{float(np.sum(share[:n])):.0%} of the pixels."
    )


def missed(traj, step: int, sample: int, n: int = TOP_SIZE) -> list[int]:
    """The shown top images that are marked MISSED (top_marks)."""
    rec = traj.records[step]
    marks = top_marks(rec, sample, n)
    return [int(i) for i, m in zip(rec.top_idx[sample], marks) if m == "MISSED"]


def subset_mode(traj) -> str | None:
    """The run's subset mode (schedule, adaptive, local), None for a method without one."""
    return traj.meta.get("params", {}).get("subset")


def subset_missed(rec, sample: int) -> bool:
    """Whether the golden subset missed where the posterior went: W_S < MISS_MASS while the
    posterior's perplexity is already below k_t (a subset of k_t could have held it all)."""
    return (rec.captured_mass is not None and missed_floor(rec, sample) is not None
            and float(rec.captured_mass[sample]) < MISS_MASS)


def miss_warning(traj, step: int, sample: int) -> str | None:
    """A sentence when the golden subset missed the posterior (`subset_missed`)."""
    rec = traj.records[step]
    if not subset_missed(rec, sample):
        return None
    ws, ppl = float(rec.captured_mass[sample]), float(rec.perplexity[sample])
    lost = missed(traj, step, sample)
    return (
        f"**The golden subset missed the posterior.** At t = {rec.t} the exact posterior spreads "
        f"over about {ppl:.3g} image{'' if f'{ppl:.3g}' == '1' else 's'}, fewer than the subset's "
        f"k_t = {subset_size(rec, sample):,}, yet $S_t$ holds "
        f"only W_S = {ws:.3f} of its weight"
        + (
            f" ({len(lost)} of the exact posterior's top images "
            f"{'is' if len(lost) == 1 else 'are'} not in $S_t$, marked MISSED)"
            if lost
            else ""
        )
        + (_local_miss(rec) if subset_mode(traj) == "local" else _POOL_MISS)
    )


_POOL_MISS = (
    ". The random pool of m_t images did not contain the images the posterior chose, so "
    "GoldDiff averaged the wrong ones. Try **pool = auto** in the method parameters (or the "
    "*Pool auto fixes it* scenario): it screens all N images once the posterior is this "
    "concentrated."
)


def local_step_makeup(rec, sample: int = 0) -> str:
    """What S_t is made of at this step of a local-subset run (its regime, by SNR), with the
    chosen sample's own count of images carried in from the previous step."""
    kind = local_subset.regime(rec.snr)
    if kind == "flat":
        return ("Under the local subset this step's $S_t$ is a uniform draw of k_t images "
                "(nothing screened: the posterior is still flat).")
    c = int(rec.c_b[sample]) if getattr(rec, "c_b", None) is not None else 0
    carried = (f" plus {c:,} images the previous step's posterior weighed (carried on: no screen "
               "of this step found them)" if c else "")
    if kind in ("sharp", "point"):
        return ("Under the local subset $S_t$ is the screened pool itself at this step "
                + ("(m_t = k_t)" if not c else "(the m_t screened)") + carried + ", with no "
                "refinement and no tail: from SNR 5 each pixel's posterior is sharp enough "
                "that the patches' nearest images are where it looks.")
    text = ("Under the local subset $S_t$ is what the anchor-pixel refinement kept of the m_t "
            "screened" + carried)
    if kind == "tail":
        return text + (", plus a uniform tail drawn from the rest of the N images (weighted by "
                       "their odds), so not every image of $S_t$ was screened.")
    return text + "."


def _local_miss(rec) -> str:
    """The miss warning's explanation under subset="local", for the regime of this step."""
    kind = local_subset.regime(rec.snr)
    if kind == "flat":
        return (". At this noise the local subset screens nothing: $S_t$ is a uniform draw of the "
                "N images; a larger **k_max** draws more.")
    if kind in ("sharp", "point"):
        how = ("the nearest on each of 3 x 3 patches of the proxy grid, taken as they are, since "
               "from SNR 5 each pixel's posterior sits on a few images of its own neighbourhood")
        more = "per patch"
    else:
        how = ("the nearest on each quadrant of the proxy grid, refined at anchor pixels by each "
               "anchor's own masked distance" + (", plus a uniform tail" if kind == "tail" else ""))
        more = "per quadrant and per anchor"
    if local_subset.takes_carry(rec.snr):
        how += ", plus the images the previous step's posterior weighed"
    return (
        ". The local screen keeps, per neighbourhood, the images that each pixel's own posterior "
        f"weighs ({how}); the images that best match the **whole** image need not be among them. "
        "Whether the guess suffers shows in its one-step r^2 against the full scan (Compare "
        f"page); where it does, a larger **k_max** keeps more {more}."
    )
