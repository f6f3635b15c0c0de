"""Probes on the faiss and UMAP caches: damaged or foreign files are rebuilt, an unwritable
cache degrades to memory with a warning, and temp files of killed writers are removed."""

from __future__ import annotations

import os
import sys
import time
import types

import numpy as np
import pytest
import torch

from golddiff.data import Dataset
from golddiff.denoise.retrieval import ProxyIndex
from golddiff.explore import embed


@pytest.fixture(autouse=True)
def cache_root(tmp_path, monkeypatch):
    monkeypatch.setenv("GOLDDIFF_CACHE", str(tmp_path / "cache"))
    getattr(embed, "IN_MEMORY", {}).clear()
    yield tmp_path / "cache"
    getattr(embed, "IN_MEMORY", {}).clear()


def clustered(N=600, D=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(8, D, generator=g) * 3
    return centres[torch.arange(N) % 8] + 0.3 * torch.randn(N, D, generator=g)


def ivf(X):
    return ProxyIndex(X, (1, 4, 4), 4, "faiss-ivf", name="toy")


def test_ivf_with_cache_root_a_file_warns_and_works(cache_root):
    cache_root.parent.mkdir(parents=True, exist_ok=True)
    cache_root.write_text("not a folder")
    X = clustered()
    with pytest.warns(UserWarning, match="kept in memory"):
        ix = ivf(X)
    assert ix.search(X[:3], 1.0, 5, nprobe=ix.nlist)[:, 0].tolist() == [0, 1, 2]


def test_ivf_write_failure_warns_and_works(monkeypatch):
    import faiss

    def full(index, path):
        raise RuntimeError("Error: 'ret == (size_t) 1' failed: write error (No space left)")

    monkeypatch.setattr(faiss, "write_index", full)
    X = clustered()
    with pytest.warns(UserWarning, match="kept in memory"):
        ix = ivf(X)
    assert not list(ix.cache_path.parent.glob("*"))  # nothing half-written
    assert ix.search(X[:2], 1.0, 5, nprobe=ix.nlist)[:, 0].tolist() == [0, 1]


def test_ivf_index_of_another_type_at_the_path_is_rebuilt():
    import faiss

    X = clustered()
    path = ivf(X).cache_path
    flat = faiss.IndexFlatL2(16)  # valid, same rows and size, but a flat index
    flat.add(X.numpy())
    faiss.write_index(flat, str(path))
    ix = ivf(X)
    assert isinstance(faiss.read_index(str(path)), faiss.IndexIVFFlat)
    assert ix.search(X[:2], 1.0, 5, nprobe=ix.nlist)[:, 0].tolist() == [0, 1]


def test_stale_temp_file_in_the_faiss_folder_is_removed():
    X = clustered()
    folder = ivf(X).cache_path.parent
    stale, fresh = folder / ".old.index.123.abc.tmp", folder / ".new.index.456.def.tmp"
    stale.write_bytes(b"\0" * 1000)
    fresh.write_bytes(b"\0" * 10)
    os.utime(stale, (time.time() - 7200,) * 2)
    ivf(clustered(seed=1))  # another index: a write into the folder
    assert not stale.exists() and fresh.exists()


# ----------------------------------------------------------------------------- UMAP maps


@pytest.fixture
def fake_umap(monkeypatch):
    """umap-learn replaced by a fit that returns the first two coordinates (no numba, instant)."""

    class UMAP:
        def __init__(self, **kw):
            pass

        def fit_transform(self, x):
            return np.asarray(x)[:, :2] * 1.0

    monkeypatch.setitem(sys.modules, "umap", types.SimpleNamespace(UMAP=UMAP))


def small_ds():
    g = torch.Generator().manual_seed(0)
    return Dataset("tiny", torch.rand(40, 1, 2, 2, generator=g) * 2 - 1, np.zeros(40, np.int64))


def map_path(ds):
    params = embed._params(ds, 20000, 0, 15, 0.1)
    idx = embed.sample_index(ds.N, 20000, 0)
    return embed.cache_path(params, embed._content(ds.flat()[torch.from_numpy(idx)].float()))


@pytest.mark.parametrize("damage", ["truncated", "empty"])
def test_damaged_map_file_is_an_invalid_entry_and_is_rebuilt(fake_umap, damage):
    ds = small_ds()
    first = embed.build_map(ds)
    path = map_path(ds)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2] if damage == "truncated" else b"")
    assert embed.load_map(ds) is None  # the page then offers "Build the map"
    again = embed.build_map(ds)
    np.testing.assert_array_equal(again.coords, first.coords)
    assert embed.load_map(ds) is not None


def test_map_with_cache_root_a_file_is_kept_in_memory(fake_umap, cache_root):
    cache_root.parent.mkdir(parents=True, exist_ok=True)
    cache_root.write_text("not a folder")
    ds = small_ds()
    with pytest.warns(UserWarning, match="kept in memory"):
        m = embed.build_map(ds)
    np.testing.assert_allclose(m.coords, ds.flat()[torch.from_numpy(m.index)][:, :2].numpy())
    assert embed.load_map(ds) is not None  # the page finds it after building
