"""2-D map of a dataset: subsampling, kNN placement of new points, the disk cache, and one real UMAP fit."""

import numpy as np
import pytest
import torch

from golddiff.data import Dataset, load_dataset
from golddiff.explore.embed import EmbeddingMap, build_map, load_map, sample_index


def _toy_map():
    """Three embedded 'images' in D = 3 with hand-placed coordinates."""
    points = torch.tensor([[0.0, 0, 0], [2, 0, 0], [0, 4, 0]])
    coords = np.array([[0.0, 0], [10, 0], [0, 10]], np.float32)
    return EmbeddingMap(coords, np.array([0, 2, 5]), points, {"method": "umap"})


def test_sample_index_is_seeded_sorted_and_complete_when_small():
    a, b = sample_index(1000, 100, seed=3), sample_index(1000, 100, seed=3)
    assert np.array_equal(a, b) and len(np.unique(a)) == 100 and np.all(np.diff(a) > 0)
    assert not np.array_equal(a, sample_index(1000, 100, seed=4))
    assert np.array_equal(sample_index(50, 100, seed=0), np.arange(50))


def test_transform_places_training_points_on_their_own_coordinates():
    m = _toy_map()
    np.testing.assert_allclose(m.transform(m.points), m.coords, atol=1e-4)


def test_transform_is_inverse_square_distance_interpolation():
    m = _toy_map()
    x = torch.tensor([[1.0, 0, 0]])  # distances^2 to the three points: 1, 1, 17
    w = np.array([1, 1, 1 / 17])
    expect = (w[:, None] * m.coords).sum(0) / w.sum()
    np.testing.assert_allclose(m.transform(x)[0], expect, rtol=1e-5)
    np.testing.assert_allclose(
        m.transform(x, k=2)[0], [5.0, 0.0], atol=1e-5
    )  # the midpoint of the 2 nearest


def test_transform_rejects_wrong_dimension():
    with pytest.raises(ValueError, match="flattened images"):
        _toy_map().transform(torch.zeros(2, 5))


def test_locate_uses_coordinates_or_transform_for_images_outside_the_sample():
    imgs = torch.tensor(
        [[0.0, 0, 0], [9, 9, 9], [2, 0, 0], [7, 7, 7], [1, 0, 0], [0, 4, 0]]
    ).reshape(6, 3, 1, 1)
    m = _toy_map()
    m.data = Dataset("toy3", imgs, np.zeros(6, np.int64))
    got = m.locate(np.array([5, 0, 4]))
    np.testing.assert_allclose(got[:2], [[0, 10], [0, 0]])
    np.testing.assert_allclose(got[2], m.transform(torch.tensor([[1.0, 0, 0]]))[0])


def test_toy_datasets_are_their_own_map():
    ds = load_dataset("moons")
    m = build_map(ds, max_points=300, seed=1)
    assert m.params["method"] == "identity" and m.coords.shape == (300, 2)
    np.testing.assert_allclose(m.coords, ds.flat()[torch.from_numpy(m.index)].numpy())
    np.testing.assert_allclose(m.transform(ds.flat()[:5]), ds.flat()[:5].numpy())


def test_load_map_is_none_before_it_is_built():
    assert load_map(load_dataset("digits"), max_points=123, seed=7) is None


@pytest.mark.slow
def test_umap_map_of_digits_is_cached_and_keeps_classes_apart():
    ds = load_dataset("digits")
    calls = []
    m = build_map(ds, max_points=20000, seed=0, progress=lambda f, s: calls.append(f))
    assert m.coords.shape == (ds.N, 2) and np.isfinite(m.coords).all() and calls[-1] == 1.0
    # independent expectation: digits classes form separate clusters, so the 2-D 5-NN label vote is accurate
    from sklearn.neighbors import KNeighborsClassifier

    y = ds.labels[m.index]
    acc = KNeighborsClassifier(5).fit(m.coords[::2], y[::2]).score(m.coords[1::2], y[1::2])
    assert acc > 0.85
    # cached: load_map returns the same coordinates without a fit; other parameters are a different entry
    again = load_map(ds, max_points=20000, seed=0)
    assert (
        again is not None
        and np.array_equal(again.coords, m.coords)
        and np.array_equal(again.index, m.index)
    )
    assert load_map(ds, max_points=20000, seed=1) is None
    # a training image placed by transform lands on its own coordinates
    np.testing.assert_allclose(m.transform(ds.flat()[m.index[:10]]), m.coords[:10], atol=1e-3)
