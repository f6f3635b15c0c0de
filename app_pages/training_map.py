"""The 2-D map of a training set (UMAP, built once and cached on disk) with a run drawn on it."""

import streamlit as st

from app_pages.errors import show_error
from app_pages.resources import get_dataset, get_map_cached
from app_pages.widgets import chart_config
from golddiff.explore import figures


def build_map(dataset: str) -> None:
    from golddiff.explore import embed

    with st.status(f"Building the map of {dataset}...", expanded=True) as status:
        bar = st.progress(0.0, text="starting")
        try:
            embed.build_map(
                get_dataset(dataset), progress=lambda f, s: bar.progress(min(1.0, f), text=s)
            )
        except ValueError as e:
            status.update(label="The map could not be built.", state="error")
            show_error(e)
            return
        status.update(label="Map ready.", state="complete")
    get_map_cached.clear()
    st.rerun()


def map_view(traj, step: int, sample: int, dataset: str) -> None:
    """The 2-D map of the training set with the subset and the guess's path, or its build button."""
    st.subheader("Map of the training set")
    try:
        emap = get_map_cached(dataset)
    except (ImportError, AttributeError):
        st.caption("The map needs golddiff.explore.embed, which is not available here.")
        return
    if emap is None:
        subset = any(r.subset_idx is not None for r in traj.records)
        what = "the golden subset and the exact posterior" if subset else "the exact posterior"
        st.caption(
            f"A 2-D UMAP map of {dataset} places similar images close together, so you can see "
            f"where {what} sit and how the guess $\\hat x_0$ travels. It is fitted once on at most 20,000 images (a seeded sample of the larger "
            "sets) and cached; the first fit takes a minute or more on a small CPU."
        )
        if st.button("Build the map", key="ex_build_map", icon=":material/map:"):
            build_map(dataset)
        return
    st.plotly_chart(
        figures.umap_figure(emap, traj, step, sample), key="ex_map", config=chart_config("map")
    )
    st.caption(figures.map_caption(emap, traj, step, sample))
