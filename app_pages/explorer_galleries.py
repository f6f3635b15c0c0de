"""The Explorer's galleries of one step: the exact posterior's top images beside the golden
subset (or pca's pixel sources), and where each pixel comes from. Figures come from
golddiff.explore; nothing here samples."""

from __future__ import annotations

import streamlit as st

from app_pages.explorer_views import sources_cached
from app_pages.resources import get_dataset
from app_pages.widgets import chart_config
from golddiff.explore import figures, lessons, source_figures
from golddiff.explore import galleries as image_views


@st.cache_resource(show_spinner=False, max_entries=64)
def subset_cached(cfg, step: int, sample: int, _traj):
    return lessons.subset_by_weight(get_dataset(cfg.dataset), _traj, step, sample, cfg.device)


def galleries(cfg, traj, step: int, sample: int, data) -> None:
    """The exact posterior's top images; beside them, for a step with a golden subset, S_t ranked
    by global weight, and for pca the images that hold the most pixels."""
    rec = traj.records[step]
    kind = "subset" if rec.subset_idx is not None else ("sources" if rec.method == "pca" else None)
    left, right = st.columns([1, 2]) if kind else (st.container(), None)
    left.subheader(f"Exact posterior: top {image_views.top_count(rec, sample)}")
    left.plotly_chart(
        image_views.global_top_gallery(traj, step, sample, data.images),
        key="ex_top", config=chart_config(f"posterior_top_t{rec.t}"),
    )
    left.caption(image_views.top_caption(traj, step, sample))
    if kind is None:
        return
    src = sources_cached(cfg, step, sample, traj)
    share = {} if src is None else dict(zip(src.images.tolist(), src.share.tolist()))
    if kind == "subset":
        idx, w = subset_cached(cfg, step, sample, traj)
        n = min(image_views.GALLERY_SIZE, len(idx))
        right.subheader(f"Golden subset $S_t$: top {n} of its {len(idx):,} images")
        right.plotly_chart(image_views.subset_gallery(idx, w, data.images, share),
                           key="ex_subset", config=chart_config(f"subset_t{rec.t}"))
        right.caption(image_views.subset_caption(rec, sample, w))
        return
    if src is None or len(src.images) == 0:
        right.caption("No image holds more than half of any pixel's weight at this step.")
        return
    ids = src.images[: image_views.GALLERY_SIZE]
    right.subheader(f"Pixel sources: the {len(ids)} images holding the most pixels")
    w = lessons.global_weights(data, traj, step, sample, ids, cfg.device)
    right.plotly_chart(
        image_views.subset_gallery(ids, w, data.images, share),
        key="ex_subset", config=chart_config(f"sources_t{rec.t}"),
    )
    right.caption(
        image_views.sources_caption(rec, sample, src.images, src.share, image_views.GALLERY_SIZE)
    )


def pixel_sources(cfg, traj, step: int, sample: int, data) -> None:
    """Where each pixel comes from: the mosaic of pixel sources beside x0_hat and the few images
    that hold the most pixels."""
    st.subheader("Where each pixel comes from", anchor="sources")
    src = sources_cached(cfg, step, sample, traj)
    rec = traj.records[step]
    if src is None:
        st.caption(f"The {rec.method} step weighs no training images, so its pixels have no "
                   "source image.")
        return
    if rec.method == "optimal":
        st.caption("optimal has one posterior for the whole image, so every pixel comes from the "
                   "same weighted images: the exact posterior's top above.")
        return
    left, right = st.columns([3, 2], vertical_alignment="center")
    left.plotly_chart(
        source_figures.sources_figure(src, rec.x0_hat[sample], rec.t), key="ex_sources",
        config=chart_config(f"pixel_sources_t{rec.t}"),
    )
    if (fig := source_figures.sources_gallery(src, data.images)) is not None:
        right.plotly_chart(fig, key="ex_sources_top", config=chart_config(f"sources_top_t{rec.t}"))
    st.caption(source_figures.sources_caption(src, rec))
