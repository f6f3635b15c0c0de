"""File helpers of the on-disk caches and outputs: atomic writes, names confined to a folder, the
clean-up of temp files left by killed writers, and the checks that an output path can be written.

Temp files. Every temp this project writes beside a file is named
`.<name>.<pid>@<host>.<8 hex>.tmp` (`temp_name`), so a later run can tell whose it is. A temp is
stale, and swept, when its writer is gone (the pid named in it no longer runs on this host) or,
whatever its name, when nothing has written to it for `STALE_AGE` seconds. A temp of a writer that
still runs, or of another host sharing the folder, is kept until it is that old, so a concurrent
writer never loses its temp.

Outputs (--out, --json). An output is written only as a regular file: a path that is a device,
FIFO, socket or folder is refused before anything runs (`check_writable`) and again just before
the rename (`atomic_write`). A symlink to a regular file is written through: the new file
atomically replaces the link's target (the temp sits beside the target) and the link stays. A
symlink to anything else, or to nothing, is refused.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import stat
import time
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

# A temp that nothing has written to for this long is stale whoever wrote it (seconds).
STALE_AGE = 3600.0
_HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:32] or "host"
# <pid>@<host>.<8 hex>.tmp at the end of a temp name (the writer's tag); older versions wrote
# <pid>.<8 hex>.tmp, which names no host.
_TAG = re.compile(r"\.(\d+)(?:@([A-Za-z0-9-]+))?\.[0-9a-f]{8}\.tmp$")


class TempsSweptWarning(UserWarning):
    """Stale temp files or orphaned cache files left by killed writers were removed."""


@dataclass
class Swept:
    """What a sweep removed: the files and the bytes they held."""

    files: list[Path] = field(default_factory=list)
    nbytes: int = 0

    def add(self, other: "Swept") -> None:
        self.files += other.files
        self.nbytes += other.nbytes

    def sentence(self, where: str) -> str:
        """One line for the user, e.g. 'Removed 2 files left by killed writers in /x (47.0 MB).'"""
        from .memory import format_bytes

        n = len(self.files)
        return (
            f"Removed {n} file{'s' if n != 1 else ''} left by killed writers in {where} "
            f"({format_bytes(self.nbytes)} freed)."
        )


def report(swept: Swept, where: str, note: Callable[[str], None] | None) -> None:
    """Pass the sweep's sentence to `note` (the CLI prints it), else as a TempsSweptWarning; say
    nothing when nothing was removed."""
    if not swept.files:
        return
    if note is not None:
        note(swept.sentence(where))
    else:
        warnings.warn(swept.sentence(where), TempsSweptWarning, stacklevel=3)


def temp_name(path: Path) -> Path:
    """The unique temp beside `path` that this process writes before renaming it into place."""
    return path.with_name(f".{path.name}.{os.getpid()}@{_HOST}.{uuid.uuid4().hex[:8]}.tmp")


def _writer_gone(name: str) -> bool:
    """True when the temp `name` carries this host's tag and its pid no longer runs."""
    m = _TAG.search(name)
    if m is None or m.group(2) != _HOST:
        return False
    pid = int(m.group(1))
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # PermissionError: it runs under another user
        return False
    return False


def _sweep(folder: Path, match: Callable[[str], bool], age: float) -> Swept:
    """Remove the regular files in `folder` whose names `match` and that are stale (see the module
    docstring). Never follows links; a file that vanishes meanwhile is skipped."""
    out = Swept()
    try:
        names = [n for n in os.listdir(folder) if match(n)]
    except OSError:
        return out
    now = time.time()
    for name in names:
        p = folder / name
        with contextlib.suppress(OSError):
            st = p.lstat()
            if not stat.S_ISREG(st.st_mode):
                continue
            if _writer_gone(name) or now - st.st_mtime > age:
                p.unlink()
                out.files.append(p)
                out.nbytes += st.st_size
    return out


def remove_stale_temps(folder: Path, age: float = STALE_AGE) -> int:
    """Delete the stale temp files (*.tmp) that killed writers left in `folder`. Returns how many
    were removed."""
    return len(sweep_temps(folder, age).files)


def sweep_temps(
    folder: Path, age: float = STALE_AGE, spare: Callable[[str], object] | None = None
) -> Swept:
    """`remove_stale_temps`, returning what was removed; names for which `spare(name)` is true are
    left to their owner's own sweep (the array cache's entry files)."""
    return _sweep(
        Path(folder), lambda n: n.endswith(".tmp") and not (spare and spare(n)), age
    )


def sweep_output_temps(path: str | os.PathLike, age: float = STALE_AGE) -> Swept:
    """Remove the stale temps of the output `path` only (`.<name>.<tag>.tmp`, also the temps of a
    temp, `..<name>.<tag>.tmp.<tag>.tmp`), nothing else in its folder."""
    p = Path(path)
    pattern = re.compile(r"\.+" + re.escape(p.name) + r"\..*\.tmp")
    return _sweep(p.parent, lambda n: pattern.fullmatch(n) is not None, age)


def _refuse_special(path: Path, flag: str) -> None:
    """Raise ValueError when `path` exists and is not a regular file (lstat: a link is refused
    too; callers resolve links first)."""
    try:
        mode = path.lstat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        return  # a new file (a missing folder is reported by the caller)
    except OSError as e:
        raise ValueError(f"{flag} {path} cannot be read ({e.strerror or e}).") from None
    if stat.S_ISDIR(mode):
        raise ValueError(f"{flag} {path} is a folder; give a file name such as {path / 'out'}.")
    if not stat.S_ISREG(mode):
        raise ValueError(
            f"{flag} {path} is {_kind(mode)}, not a regular file; it is left untouched, give the "
            "path of a new or regular file."
        )


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISLNK, "a symlink"),
    ):
        if test(mode):
            return name
    return "a special file"


def output_target(path: str | os.PathLike, flag: str) -> Path:
    """The file an output `path` writes: `path` itself, or for a symlink to a regular file the
    link's final target (written through). Raises ValueError for a link to a device, FIFO, socket,
    folder or to nothing, and for a path that is itself one of those."""
    p = Path(path).expanduser()
    if p.is_symlink():
        target = p.resolve()
        if not target.exists():
            raise ValueError(
                f"{flag} {p} is a symlink to {target}, which does not exist; give a regular file."
            )
        try:
            _refuse_special(target, flag)
        except ValueError as e:
            raise ValueError(f"{flag} {p} is a symlink to {target}: {e}") from None
        return target
    _refuse_special(p, flag)
    return p


def check_writable(
    path: str | os.PathLike, flag: str, note: Callable[[str], None] | None = None
) -> Path:
    """Raise ValueError (naming `flag`, e.g. "--out") unless a regular file can be written at
    `path` (`output_target`): its folder exists and takes a new file. Sweeps the stale temps that a
    killed earlier write of this output left (`sweep_output_temps`) and reports them through
    `note`. Returns the file that will be written."""
    p = output_target(path, flag)
    folder = p.parent
    if not folder.is_dir():
        raise ValueError(f"The folder of {flag} {p} does not exist; create it or choose another.")
    report(sweep_output_temps(p), str(folder), note)
    probe = temp_name(p)
    try:
        probe.write_bytes(b"")
    except OSError as e:
        raise ValueError(
            f"{flag} {p} cannot be written ({e.strerror or e}); choose a writable folder."
        ) from None
    with contextlib.suppress(OSError):
        probe.unlink()
    return p


def check_free_space(path: str | os.PathLike, nbytes: int, flag: str) -> None:
    """Raise ValueError when the file system of the output `path` has less than `nbytes` free for
    this user (the old file, if any, is only freed after the new one is complete)."""
    folder = output_target(path, flag).parent
    try:
        st = os.statvfs(folder)
    except (OSError, AttributeError):
        return  # cannot be told (no statvfs): the write itself reports a full disk
    free = st.f_bavail * st.f_frsize
    if free < nbytes:
        from .memory import format_bytes

        raise ValueError(
            f"{flag} {path} needs at least {format_bytes(nbytes)} but its file system has only "
            f"{format_bytes(free)} free; free space or choose another folder."
        )


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> None:
    """Create `path` through write(tmp) on a unique temp name in the same folder (`temp_name`),
    then os.replace it into place: readers see the old file or the whole new one, never a
    half-written one; on failure no temp file is left. A `path` that exists and is not a regular
    file (a device, FIFO, socket, link or folder) is never replaced: ValueError."""
    path = Path(path)
    _refuse_special(path, "The file")
    tmp = temp_name(path)
    try:
        write(tmp)
        _refuse_special(path, "The file")  # it may have changed while write() ran
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


def write_output(path: str | os.PathLike, write: Callable[[Path], None], flag: str) -> None:
    """atomic_write for a user's output file (through a symlink to a regular file, onto its
    target); an OSError (disk full, folder gone, read-only) becomes a ValueError naming `flag`,
    and no temp file is left."""
    target = output_target(path, flag)
    try:
        atomic_write(target, write)
    except OSError as e:
        raise ValueError(
            f"{flag} {path} could not be written ({e.strerror or e}); free space or choose "
            "another path."
        ) from None
