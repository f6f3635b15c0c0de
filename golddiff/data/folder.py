"""Folder datasets: any folder of png/jpg/webp/bmp images, resized and centre-cropped, cached as
uint8."""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from .cache import Streamed, cache_dir, cached_arrays
from .datasets import OUT_OF_CORE_BYTES, Dataset, from_u8
from .files import temp_name
from .memory import check_memory

# ----------------------------------------------------------------------------- image folders

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
FOLDER_DEFAULT_RES = 32
DECODE_CHUNK = 256  # images one decoder process handles at a time
PARALLEL_FROM = 2 * DECODE_CHUNK  # folders with fewer images are decoded in this process
MAX_PIXELS = 89_478_485  # PIL's own decompression-bomb limit (Image.MAX_IMAGE_PIXELS)
MAX_ASPECT = 64  # longest / shortest side: beyond it the resize to res would be huge
LINKS_ENV = "GOLDDIFF_FOLLOW_LINKS"  # "1": also load file links that point outside the folder


def shown(p: Path | str) -> str:
    """A path as text that can always be printed: bytes of a non-UTF-8 name become \\xNN."""
    return os.fsencode(str(p)).decode("utf-8", "backslashreplace")


def parse_folder_name(name: str) -> tuple[Path, int]:
    """'folder:PATH' or 'folder:PATH?res=R' -> (PATH, R); R defaults to FOLDER_DEFAULT_RES."""
    spec = name[len("folder:") :]
    res = FOLDER_DEFAULT_RES
    m = re.fullmatch(r"(.*)\?res=([^?]*)", spec)
    if m:
        spec = m.group(1)
        if not m.group(2).isdigit() or not 4 <= int(m.group(2)) <= 1024:
            raise ValueError(
                f"The resolution in '{name}' must be a whole number from 4 to 1024, e.g. ?res=64."
            )
        res = int(m.group(2))
    if not spec:
        raise ValueError(
            "A folder dataset needs a path; write it as folder:/path/to/images or "
            "folder:/path/to/images?res=64."
        )
    return Path(spec).expanduser(), res


def _list_images(root: Path) -> tuple[list[Path], int]:
    """(image files under root in sorted order, number of file links skipped because they point
    outside root; $GOLDDIFF_FOLLOW_LINKS=1 loads those too)."""
    follow = os.environ.get(LINKS_ENV, "") not in ("", "0")
    files, skipped = [], 0
    for p in root.rglob("*"):
        if p.suffix.lower() not in IMAGE_EXTS or not p.is_file():
            continue
        if p.is_symlink() and not follow and not p.resolve().is_relative_to(root):
            skipped += 1
            continue
        files.append(p)
    return sorted(files, key=os.fsencode), skipped


def _size_problem(im, p: Path) -> str | None:
    """Why an image must be refused before decoding (a pixel count or aspect ratio that would make
    decoding or resizing huge), else None."""
    w, h = im.size
    if w * h > MAX_PIXELS or max(w, h) > MAX_ASPECT * max(1, min(w, h)) or min(w, h) < 1:
        return (
            f"Image {shown(p)} is {w}x{h} pixels, too large or too elongated to load (at most "
            f"{MAX_PIXELS:,} pixels and sides within {MAX_ASPECT}:1); delete or resize that file."
        )
    return None


def _to_8bit(im):
    """Modes with more than 8 bits per value (I;16*, I, F) scaled to 8-bit L: 16-bit values by
    255 / 65535, floats in [0, 1] by 255; other modes are returned as they are."""
    from PIL import Image

    if not (im.mode.startswith("I") or im.mode == "F"):
        return im
    a = np.asarray(im).astype(np.float64)  # (H, W)
    if im.mode == "F" and a.size and np.nanmax(a) <= 1.0:
        a = a * 255.0
    elif im.mode != "F" or (a.size and np.nanmax(a) > 255.0):
        a = a * (255.0 / 65535.0)
    return Image.fromarray(np.clip(np.rint(np.nan_to_num(a)), 0, 255).astype(np.uint8), "L")


def _to_rgb_square(im, res: int) -> np.ndarray:
    """A PIL image -> (res, res, 3) uint8: alpha composited on white, shorter side resized to res
    (bicubic; skipped when it already equals res), then centre-cropped."""
    from PIL import Image

    im = _to_8bit(im)
    if im.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (
        im.mode == "P" and "transparency" in im.info
    ):
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


def _decode_files(files: list[Path], res: int) -> np.ndarray:
    """(n, res, res, 3) uint8 of the files (`_to_rgb_square`); ValueError naming a bad file."""
    from PIL import Image

    out = np.empty((len(files), res, res, 3), np.uint8)
    for i, p in enumerate(files):
        try:
            with Image.open(p) as im:
                bad = _size_problem(im, p)
                if bad is None:
                    im.load()
                    out[i] = _to_rgb_square(im, res)
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
            raise ValueError(
                f"Image {shown(p)} could not be decoded ({e}); delete or replace that file."
            ) from None
        if bad is not None:
            raise ValueError(bad)
    return out


def _decode_into(rgb: np.ndarray, files: list[Path], res: int) -> bool:
    """Decode files into rgb (N, res, res, 3) in chunks of DECODE_CHUNK, on several processes for a
    large folder, with a progress bar (stderr); returns whether any pixel has unequal R, G, B."""
    from tqdm import tqdm

    parts = [files[i : i + DECODE_CHUNK] for i in range(0, len(files), DECODE_CHUNK)]
    workers = min(os.cpu_count() or 1, len(parts)) if len(files) >= PARALLEL_FROM else 1
    colour, start = False, 0
    with tqdm(total=len(files), unit="img", desc="decoding folder", disable=None) as bar:
        with ProcessPoolExecutor(workers) if workers > 1 else _Serial() as pool:
            for out in pool.map(_decode_files, parts, [res] * len(parts)):
                rgb[start : start + len(out)] = out
                colour = colour or bool(np.any(out[..., 0] != out[..., 1]))
                colour = colour or bool(np.any(out[..., 1] != out[..., 2]))
                start += len(out)
                bar.update(len(out))
    return colour


class _Serial:
    """The in-process stand-in for a process pool (small folders)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def map(self, fn, *its):
        return map(fn, *its)


def _decode_folder(root: Path, files: list[Path], res: int) -> dict:
    """The folder's arrays for the cache, streamed: decoded chunk by chunk into a temporary
    (N, res, res, 3) memory map, then copied channel-first (C = 3, or 1 when no pixel has colour)
    into the cache file, so no step holds the whole folder in RAM."""
    tmp_dir = cache_dir() / "tmp"
    try:
        tmp_dir.mkdir(parents=True, exist_ok=True)
        tmp = temp_name(tmp_dir / "decoded.npy")  # named so that a killed run's is swept
    except OSError:  # the system's temp folder
        fd, tmp = tempfile.mkstemp(suffix=".npy")
        os.close(fd)
    try:
        rgb = np.lib.format.open_memmap(tmp, "w+", np.uint8, (len(files), res, res, 3))
        C = 3 if _decode_into(rgb, files, res) else 1
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise

    def fill(out: np.ndarray) -> None:  # out: (N, C, res, res)
        try:
            for i in range(0, len(files), 4096):
                out[i : i + 4096] = rgb[i : i + 4096, :, :, :C].transpose(0, 3, 1, 2)
        finally:
            os.unlink(tmp)

    tops = [p.relative_to(root).parts for p in files]
    if all(len(t) > 1 for t in tops):
        classes = sorted({t[0] for t in tops})
        labels = np.array([classes.index(t[0]) for t in tops], np.int64)
    else:
        classes, labels = [], np.full(len(files), -1, np.int64)
    return {
        "images": Streamed((len(files), C, res, res), np.uint8, fill),
        "labels": labels,
        "classes": np.array(classes, dtype=np.str_) if classes else np.zeros(0, "<U1"),
    }


def load_folder(name: str) -> Dataset:
    """A folder of images as a Dataset; `name` is 'folder:PATH' or 'folder:PATH?res=R' (R default
    32).

    Rules:
    - every .png/.jpg/.jpeg/.webp/.bmp file under PATH (recursively, any letter case) in sorted path
    order;
    - each image is made RGB (transparent pixels composited on white), its shorter side resized to R
      (bicubic) and centre-cropped to R x R; an image whose shorter side is already R is only
      cropped;
    - colour rule: the dataset is RGB (C=3) if any pixel of any image has unequal R, G, B after that
      conversion, else grayscale (C=1); a grayscale picture saved as RGB therefore loads as
      grayscale;
    - labels: when every image sits in a sub-folder, the sorted top-level sub-folder names are the
    classes;
      otherwise labels are -1;
    - a file that cannot be decoded (corrupt or truncated) raises ValueError naming it: nothing is
    skipped;
    - a missing folder or one with no such images raises ValueError.
    Decoded arrays are cached under the folder's absolute path and R; adding, removing or changing
    files
    (name, size or modification time) rebuilds the cache with a CacheRebuiltWarning.
    """
    path, res = parse_folder_name(name)
    if not path.is_dir():
        raise ValueError(
            f"The folder {shown(path)} does not exist; check the path after 'folder:'."
        )
    root = path.resolve()
    files, skipped = _list_images(root)
    if skipped:
        warnings.warn(
            f"Skipped {skipped} file link(s) in {shown(root)} that point outside the folder; set "
            f"{LINKS_ENV}=1 to load them.",
            stacklevel=2,
        )
    if not files:
        raise ValueError(
            f"The folder {shown(root)} holds no {'/'.join(e[1:] for e in IMAGE_EXTS)} images; "
            f"point 'folder:' at a folder that does."
        )
    listing = hashlib.blake2b(digest_size=12)
    for p in files:
        st = p.stat()
        listing.update(os.fsencode(p.relative_to(root)))
        listing.update(f"\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    # before any file is opened: the float32 images when they stay in RAM (in-core), and the
    # chunks the decoders hold at once (the decoded pixels stream through a memory map to disk)
    images_f32 = len(files) * res * res * 3 * 4
    check_memory(
        (images_f32 if images_f32 <= OUT_OF_CORE_BYTES else 0)
        + 4 * min(DECODE_CHUNK, len(files)) * res * res * 3,
        f"decoding {len(files):,} images of {shown(root)} at {res}x{res}",
        "lower ?res= or use fewer images",
    )
    arrays = cached_arrays(
        f"dataset/folder/{root}/res{res}",
        lambda: _decode_folder(root, files, res),
        meta={"files": len(files), "listing": listing.hexdigest()},
    )
    return from_u8(name, arrays["images"], arrays["labels"], [str(c) for c in arrays["classes"]])
