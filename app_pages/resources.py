"""Resources shared by every session, cached once per process and never mutated by a page.

Keyed by names (never by big arrays): the dataset, its corpus on a device, its 2-D map.
"""

from __future__ import annotations

import streamlit as st
import torch

import golddiff
from golddiff import get_corpus, pick_device


@st.cache_resource(show_spinner="Loading dataset...")
def get_dataset(name: str) -> golddiff.Dataset:
    return golddiff.load_dataset(name)


@st.cache_resource(show_spinner="Preparing data statistics...")
def get_corpus_cached(name: str, device: str):
    """The dataset on the device with its statistics computed."""
    c = get_corpus(get_dataset(name), torch.device(device))
    _ = c.stats
    return c


@st.cache_resource(show_spinner=False)
def get_map_cached(name: str):
    """The cached 2-D UMAP map of a dataset, or None while it has not been built (clear() after
    building). Raises ImportError / AttributeError when golddiff.explore.embed is missing."""
    from golddiff.explore import embed

    return embed.load_map(get_dataset(name))


@st.cache_data(show_spinner=False)
def train_scale_cached(name: str) -> float:
    """Typical distance between a training image and its nearest other training image."""
    from golddiff.explore import lessons

    return lessons.train_nn_distance(get_dataset(name))


def device_name() -> str:
    return str(pick_device(None))
