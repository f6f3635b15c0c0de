"""File helpers of the on-disk caches and outputs: atomic writes, names confined to a folder, the
clean-up of temp files left by killed writers, and the check that an output path can be written."""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from pathlib import Path
from typing import Callable


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> None:
    """Create `path` through write(tmp) on a unique temp name in the same folder, then os.replace it
    into place:
    readers see the old file or the whole new one, never a half-written one; on failure no temp file
    is left.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def inside(root: Path, name: str) -> Path | None:
    """root / name when it is a plain file name that stays inside root, else None (a manifest or an
    index name must never reach outside the cache: no absolute path, no '..', no sub-folder)."""
    if not isinstance(name, str) or not name or name != Path(name).name or name in (".", ".."):
        return None
    p = root / name
    return p if p.resolve().parent == root.resolve() else None


def remove_stale_temps(folder: Path, age: float = 3600.0) -> int:
    """Delete the temp files (*.tmp) a killed writer left in `folder` once they are `age` seconds
    old (younger ones may belong to a writer still running). Returns how many were removed."""
    removed = 0
    try:
        temps = list(folder.glob("*.tmp")) + list(folder.glob(".*.tmp"))
    except OSError:
        return 0
    for p in set(temps):
        with contextlib.suppress(OSError):
            if time.time() - p.stat().st_mtime > age:
                p.unlink()
                removed += 1
    return removed


def check_writable(path: str | os.PathLike, flag: str) -> Path:
    """Raise ValueError (naming `flag`, e.g. "--out") unless a file can be written at `path`: its
    folder exists and takes a new file, and `path` is not a folder. Returns the path."""
    p = Path(path).expanduser()
    if p.is_dir():
        raise ValueError(f"{flag} {p} is a folder; give a file name such as {p / 'out'}.")
    folder = p.parent
    if not folder.is_dir():
        raise ValueError(f"The folder of {flag} {p} does not exist; create it or choose another.")
    probe = folder / f".{p.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        probe.write_bytes(b"")
    except OSError as e:
        raise ValueError(
            f"{flag} {p} cannot be written ({e.strerror or e}); choose a writable folder."
        ) from None
    with contextlib.suppress(OSError):
        probe.unlink()
    return p


def write_output(path: str | os.PathLike, write: Callable[[Path], None], flag: str) -> None:
    """atomic_write for a user's output file; an OSError (disk full, folder gone, read-only) becomes
    a ValueError naming `flag`, and no temp file is left."""
    try:
        atomic_write(path, write)
    except OSError as e:
        raise ValueError(
            f"{flag} {path} could not be written ({e.strerror or e}); free space or choose "
            "another path."
        ) from None
