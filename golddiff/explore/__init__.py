"""Explore layer: what the app's pages compute (lessons), their Plotly figures, and the UMAP map.

The pages import these modules (`from golddiff.explore import figures, lessons, ...`) and lay out
what they return; nothing here imports streamlit.
"""

from . import (
    embed,
    figures,
    gaussian,
    how_figures,
    lesson_figures,
    lessons,
    style,
    subset_figures,
)

__all__ = [
    "embed",
    "figures",
    "gaussian",
    "how_figures",
    "lesson_figures",
    "lessons",
    "style",
    "subset_figures",
]
