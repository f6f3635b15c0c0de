"""Finding the files of a file-backed dataset on disk, and downloading them (mirrors, md5) when
absent."""

from __future__ import annotations

import contextlib
import hashlib
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .cache import cache_dir

ProgressFn = Callable[[int, "int | None"], None]  # progress(done_bytes, total_bytes or None)

# ----------------------------------------------------------------------------- finding and
# downloading files

SYSTEM_DATA_DIR = Path("/usr/share/datasets")  # where Debian dataset packages install


def search_dirs(folder: str) -> list[Path]:
    """Where a file-backed dataset is looked for, in order: $GOLDDIFF_DATA, the Debian folder, the
    cache."""
    dirs = [Path(os.environ["GOLDDIFF_DATA"]) / folder] if os.environ.get("GOLDDIFF_DATA") else []
    return dirs + [SYSTEM_DATA_DIR / folder, cache_dir() / "downloads" / folder]


def data_roots() -> list[str]:
    """The search roots for `python -m golddiff info`, in order, with $GOLDDIFF_DATA shown even when
    unset."""
    env = os.environ.get("GOLDDIFF_DATA")
    return [
        f"$GOLDDIFF_DATA={env}" if env else "$GOLDDIFF_DATA (unset)",
        str(SYSTEM_DATA_DIR),
        str(cache_dir() / "downloads"),
    ]


def _open_url(url: str, timeout: float = 30.0):
    """Open `url` for reading (tests replace this function)."""
    import urllib.request

    return urllib.request.urlopen(
        urllib.request.Request(url, headers={"User-Agent": "golddiff"}), timeout=timeout
    )


class DownloadError(ValueError):
    """Every mirror failed; `reason` names each mirror tried and why it failed."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


def download(
    urls: tuple[str, ...], md5: str, dest: Path, progress: ProgressFn | None = None
) -> Path:
    """Download the first mirror in `urls` that works into `dest`, checking its md5; returns dest.

    Bytes go to a uniquely named temp file next to dest, renamed only after the checksum matches, so
    a failed or interrupted download leaves nothing behind. progress(done_bytes, total_bytes or
    None) is called as data arrives. Raises DownloadError (a ValueError) naming the last reason when
    every mirror fails.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    reasons = []  # one per failed mirror, so the message says which failed and why
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
                reasons.append(f"{url} gave a file whose md5 is {h.hexdigest()}, not {md5}")
                continue
            os.replace(tmp, dest)
            return dest
        except OSError as e:  # URLError, timeouts and disk errors are all OSError
            reasons.append(f"{url}: {e}")
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()
    reason = "; ".join(reasons) or "no mirror given"
    raise DownloadError(
        f"Downloading {dest.name} failed ({reason}); check the connection or place the file in "
        f"{dest.parent} yourself.",
        reason,
    )


def offline() -> bool:
    return os.environ.get("GOLDDIFF_OFFLINE", "") not in ("", "0")


@dataclass(frozen=True)
class Remote:
    file: str  # file name on the host and on disk
    md5: str  # md5 of that file as published
    urls: tuple[str, ...]  # mirrors, tried in order


CIFAR_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))


def find_files(folder: str, names: tuple[str, ...]) -> list[Path] | None:
    """The first search dir holding every name (each as name.gz or raw name), or None."""
    for d in search_dirs(folder):
        found = [next((d / c for c in (n + ".gz", n) if (d / c).is_file()), None) for n in names]
        if all(found):
            return found
    return None


def files_meta(paths: list[Path]) -> list:
    """[path, size, mtime_ns] per source file; a changed or moved source rebuilds the cache."""
    return [[str(p), (st := p.stat()).st_size, st.st_mtime_ns] for p in paths]


@dataclass(frozen=True)
class FileSet:
    """A file-backed dataset: its folder name, files, mirrors and how to turn the files into
    arrays."""

    folder: str  # sub-folder of each search dir
    title: str  # human name for messages
    names: tuple[str, ...]  # file names looked for (see find_files / find_cifar)
    remotes: tuple[Remote, ...]  # what to download
    hint: str  # extra advice when missing
    res: int  # image side

    def locate(self) -> list[Path] | None:
        if self.folder == "cifar10":
            return find_cifar()
        return find_files(self.folder, self.names)

    def fetch(self, progress: ProgressFn | None) -> list[Path]:
        """Local files, downloading them into the cache when absent. Raises ValueError when
        impossible."""
        found = self.locate()
        if found:
            return found
        dirs = search_dirs(self.folder)
        where = " or ".join(str(d) for d in dirs)
        target = dirs[0] if os.environ.get("GOLDDIFF_DATA") else dirs[-1]
        what = f"{self.hint}put {' and '.join(r.file for r in self.remotes)} in {target}"
        if offline():
            raise ValueError(
                f"{self.title} was not found in {where} and $GOLDDIFF_OFFLINE forbids downloading; "
                f"{what}."
            )
        try:
            for r in self.remotes:
                download(r.urls, r.md5, dirs[-1] / r.file, progress)
        except DownloadError as e:
            raise ValueError(
                f"{self.title} was not found in {where} and downloading it failed ({e.reason}); "
                f"{what}."
            ) from None
        found = self.locate()
        if not found:
            raise ValueError(
                f"{self.title} was downloaded to {dirs[-1]} but could not be found there; "
                f"delete that folder and retry."
            )
        return found


def find_cifar() -> list[Path] | None:
    """[folder holding data_batch_1..5] or [cifar-10-python.tar.gz], from the first search dir that
    has one."""
    for d in search_dirs("cifar10"):
        for sub in (d, d / "cifar-10-batches-py"):
            if all((sub / b).is_file() for b in CIFAR_BATCHES):
                return [sub]
        if (d / "cifar-10-python.tar.gz").is_file():
            return [d / "cifar-10-python.tar.gz"]
    return None
