"""A 2-D UMAP map of a training set, cached on disk, and the placement of new points on it.

The app draws three things on one map: the training set, the golden subset S_t at step t and the
trajectory of x0_hat. `build_map` fits UMAP (umap-learn) on at most `max_points` images drawn with a
fixed seed and caches the coordinates under cache.cache_dir()/umap (npz written to a temp file, then
renamed); `load_map` returns the cached map, or None when it has not been built yet (so the app can
offer to build it with its own progress).

Placement of new points (`EmbeddingMap.transform`) is NOT umap's own transform: it is a
k-nearest-neighbour interpolation in the embedded space. For each new x the k nearest embedded
training images (exact Euclidean distance in pixel space) are found and x is placed at their
coordinates averaged with inverse-square-distance weights (Shepard interpolation). A training image
therefore lands on its own coordinates, transform needs neither the fitted UMAP object nor numba,
and the cache is just coordinates. A blurry x0_hat at high noise sits between its neighbours'
positions, which is what it is: an average of training images.

2-D toy datasets (D = 2) need no embedding: their map is the points themselves ("identity").
"""

from __future__ import annotations

import hashlib
import json
import threading
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..data.cache import atomic_write, cache_dir, inside, remove_stale_temps
from ..data.datasets import Dataset

UMAP_DEFAULTS = dict(n_neighbors=15, min_dist=0.1)  # umap-learn's own defaults, Euclidean metric
KNN = 10  # neighbours used to place a new point
Progress = Callable[[float, str], None]  # progress(fraction in [0, 1], text)


@dataclass
class EmbeddingMap:
    coords: np.ndarray  # (n, 2) float32 map coordinates of the embedded training images
    index: np.ndarray  # (n,) int64 dataset indices of those images (sorted)
    points: torch.Tensor  # (n, D) float32 the embedded images, flattened, on the CPU
    params: dict  # method ("umap" / "identity"), dataset, N, max_points, seed, UMAP parameters
    data: Dataset | None = (
        None  # the dataset it was built from (for `locate` of images outside the sample)
    )

    @property
    def n(self) -> int:
        return int(self.coords.shape[0])

    def transform(self, x: torch.Tensor | np.ndarray, k: int = KNN) -> np.ndarray:
        """Place new points (B, D) (e.g. x0_hat along a trajectory) on the map: (B, 2).

        kNN interpolation: the k nearest embedded images in pixel space, weights 1 / d^2 (exact
        match -> its own coordinates). Identity maps return the points themselves.
        """
        x = torch.as_tensor(np.asarray(x) if not torch.is_tensor(x) else x).detach().float().cpu()
        if x.dim() != 2 or x.shape[1] != self.points.shape[1]:
            raise ValueError(
                f"Points of shape {tuple(x.shape)} cannot be placed on this map; "
                f"pass (B, {self.points.shape[1]}) flattened images of the same dataset."
            )
        if self.params.get("method") == "identity":
            return x.numpy().astype(np.float32)
        k = max(1, min(int(k), self.n))
        P, pn = self.points, self.points.square().sum(1)  # (n, D), (n,)
        C = torch.from_numpy(self.coords)  # (n, 2)
        out = []
        rows = max(1, (16 * 1024 * 1024) // self.n)
        for i in range(0, x.shape[0], rows):
            xb = x[i : i + rows]  # (b, D)
            d2 = (xb.square().sum(1, keepdim=True) - 2 * xb @ P.T + pn[None]).clamp_min_(
                0
            )  # (b, n)
            d2k, j = d2.topk(k, dim=1, largest=False)  # (b, k)
            w = 1.0 / d2k.double().clamp_min(1e-12)  # exact match: weight ~1e12
            w = w / w.sum(1, keepdim=True)
            out.append((w[..., None] * C[j].double()).sum(1).float())  # (b, 2)
        return torch.cat(out).numpy()

    def locate(self, idx: np.ndarray | torch.Tensor) -> np.ndarray:
        """Map coordinates (m, 2) of dataset images by index (e.g. the golden subset S_t).

        Embedded images get their own coordinates; images outside the embedded sample are placed by
        `transform` from the dataset (needs `data`).
        """
        idx = np.asarray(idx.cpu() if torch.is_tensor(idx) else idx).astype(np.int64).reshape(-1)
        pos = np.searchsorted(self.index, idx).clip(0, max(0, self.n - 1))
        found = self.index[pos] == idx
        out = np.empty((idx.shape[0], 2), np.float32)
        out[found] = self.coords[pos[found]]
        if (~found).any():
            if self.data is None:
                raise ValueError(
                    "Some images are outside the embedded sample and the map has no dataset "
                    "attached; build or load the map with its dataset."
                )
            out[~found] = self.transform(self.data.rows(idx[~found]))
        return out


def sample_index(N: int, max_points: int, seed: int) -> np.ndarray:
    """(n,) sorted dataset indices of the embedded sample: all N when N <= max_points, else a seeded
    draw."""
    if N <= max_points:
        return np.arange(N, dtype=np.int64)
    return np.sort(np.random.default_rng(seed).choice(N, max_points, replace=False)).astype(
        np.int64
    )


def _params(data: Dataset, max_points: int, seed: int, n_neighbors: int, min_dist: float) -> dict:
    if int(max_points) < 4:
        raise ValueError(
            f"max_points={max_points} is too small for a map; use at least 4 (default 20000)."
        )
    method = "identity" if data.D == 2 else "umap"
    p = dict(
        method=method,
        dataset=data.name,
        N=data.N,
        shape=list(data.shape),
        max_points=int(max_points),
        seed=int(seed),
    )
    if method == "umap":
        p.update(n_neighbors=int(n_neighbors), min_dist=float(min_dist), metric="euclidean")
    return p


def cache_path(params: dict, content: str) -> Path:
    """The npz path of a map: dataset name + hash of the parameters and of the embedded images."""
    key = hashlib.sha1((json.dumps(params, sort_keys=True) + content).encode()).hexdigest()[:16]
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in params["dataset"])
    return cache_dir() / "umap" / f"{safe}-{key}.npz"


def _content(points: torch.Tensor) -> str:
    return hashlib.sha1(points.numpy().tobytes()).hexdigest()


def load_map(
    data: Dataset,
    max_points: int = 20000,
    seed: int = 0,
    n_neighbors: int = UMAP_DEFAULTS["n_neighbors"],
    min_dist: float = UMAP_DEFAULTS["min_dist"],
) -> EmbeddingMap | None:
    """The cached map of `data` with these parameters, or None when it has not been built yet."""
    params = _params(data, max_points, seed, n_neighbors, min_dist)
    idx = sample_index(data.N, params["max_points"], seed)
    points = data.rows(idx).float().contiguous()  # (n, D)
    if params["method"] == "identity":
        return EmbeddingMap(points.numpy().copy(), idx, points, params, data)
    path = cache_path(params, _content(points))
    coords = IN_MEMORY.get(path)
    if coords is None:
        coords = _read_coords(path, idx)
    if coords is None:
        return None
    return EmbeddingMap(coords, idx, points, params, data)


def _read_coords(path: Path, idx: np.ndarray) -> np.ndarray | None:
    """(n, 2) coordinates of a valid cached map for the sample `idx`, else None: missing, outside
    the cache, truncated, empty or not an npz, or made for other images (the caller rebuilds it)."""
    p = inside(path.parent, path.name)
    try:
        if p is None or not p.is_file():
            return None
        with np.load(p, allow_pickle=False) as z:
            coords, index = z["coords"].astype(np.float32), z["index"].astype(np.int64)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None
    if coords.shape != (idx.shape[0], 2) or not np.array_equal(index, idx):
        return None
    return coords


class _MapsInMemory:
    """Maps whose cache file could not be written, by path, for the rest of the process."""

    def __init__(self):
        self._lock = threading.Lock()
        self._by_path: dict[Path, np.ndarray] = {}

    def get(self, path: Path) -> np.ndarray | None:
        with self._lock:
            return self._by_path.get(path)

    def put(self, path: Path, coords: np.ndarray) -> None:
        with self._lock:
            self._by_path[path] = coords

    def clear(self) -> None:
        with self._lock:
            self._by_path.clear()


IN_MEMORY = _MapsInMemory()


def _save_coords(path: Path, coords: np.ndarray, idx: np.ndarray, params: dict) -> None:
    """Write the map atomically; when the cache cannot take it keep it in memory, with a warning."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, coords=coords, index=idx, params=np.array(json.dumps(params)))

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(path.parent)  # left by a killed writer
        atomic_write(path, write)
    except OSError as e:
        IN_MEMORY.put(path, coords)
        warnings.warn(
            f"The map cache {path.parent} is not writable ({e}); the map is kept in memory only.",
            stacklevel=3,
        )


def build_map(
    data: Dataset,
    max_points: int = 20000,
    seed: int = 0,
    progress: Progress | None = None,
    n_neighbors: int = UMAP_DEFAULTS["n_neighbors"],
    min_dist: float = UMAP_DEFAULTS["min_dist"],
) -> EmbeddingMap:
    """Fit (or load from the cache) the 2-D map of `data`: UMAP of at most max_points images (seeded
    draw).

    progress(fraction, text) is called before and after the fit (UMAP reports no finer progress).
    Fitting 20,000 images of 784 pixels takes about a minute on 2 CPU cores (plus ~30 s of numba
    compilation on first use in a process); the cached map loads in well under a second.
    """
    report = progress or (lambda f, s: None)
    cached = load_map(data, max_points, seed, n_neighbors, min_dist)
    if cached is not None:
        report(1.0, "map loaded from the cache")
        return cached
    params = _params(data, max_points, seed, n_neighbors, min_dist)
    idx = sample_index(data.N, params["max_points"], seed)
    points = data.rows(idx).float().contiguous()  # (n, D)
    try:
        import umap
    except ImportError:
        raise ValueError("The map needs the umap-learn package; install umap-learn.") from None
    n = points.shape[0]
    if n < 4:
        raise ValueError(f"'{data.name}' has only {n} images; a UMAP map needs at least 4.")
    report(0.05, f"fitting UMAP on {n:,} images (this takes a while the first time)")
    reducer = umap.UMAP(
        n_components=2,
        n_neighbors=min(params["n_neighbors"], n - 1),
        min_dist=params["min_dist"],
        metric="euclidean",
        random_state=params["seed"],
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "n_jobs overridden by random_state", numba notices
        coords = reducer.fit_transform(points.numpy()).astype(np.float32)  # (n, 2)
    report(0.95, "saving the map")
    _save_coords(cache_path(params, _content(points)), coords, idx, params)
    report(1.0, "map ready")
    return EmbeddingMap(coords, idx, points, params, data)
