"""On-disk array cache: atomic, versioned, checked on load, safe under concurrent builders.

Used for decoded datasets (data.registry, data.folder), data statistics (denoise.corpus), faiss
indexes (denoise.retrieval) and UMAP maps (explore.embed). Root: $GOLDDIFF_CACHE or
~/.cache/golddiff.

Crash leftovers are swept on the next run (`SWEEP`, once per process): a builder killed between an
array's rename and its manifest's leaves committed-name array files that no manifest lists; they
are removed as soon as their entry's build lock is free (no builder at work), and stale temps as
`files` describes. Nothing outside the cache folder is touched.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import stat
import threading
import time
import uuid
import warnings
from pathlib import Path
from typing import Callable

import numpy as np

from .files import (
    STALE_AGE,
    Swept,
    atomic_write,
    inside,
    remove_stale_temps,
    report,
    sweep_temps,
)
from .hashing import array_checksum, fingerprint

# re-exported: the file and hashing helpers
__all__ = ["array_checksum", "atomic_write", "fingerprint", "inside", "remove_stale_temps"]


class _Sweep:
    """Once per process, removes what killed writers left in the cache: stale temp files in every
    cache folder (`files.sweep_temps`) and the orphaned array files of entries no builder is
    writing (`sweep_orphans`). `note` (set by the CLI) receives the one-line report; without it
    the report is a TempsSweptWarning."""

    def __init__(self):
        self._lock = threading.Lock()
        self.done = False
        self.note: Callable[[str], None] | None = None

    def __call__(self) -> None:
        with self._lock:
            if self.done:
                return
            self.done = True
        try:
            folders = [p for p in cache_dir().iterdir() if p.is_dir()]
        except OSError:
            return
        swept = Swept()
        for folder in folders:  # the entry files of arrays/ are swept under their build locks
            swept.add(sweep_temps(folder, spare=_ENTRY_FILE.fullmatch))
        swept.add(sweep_orphans())
        report(swept, str(cache_dir()), self.note)


SWEEP = _Sweep()  # `SWEEP.done = False` runs it again (tests)


def cache_dir() -> Path:
    """Disk cache root: $GOLDDIFF_CACHE or ~/.cache/golddiff."""
    return Path(os.environ.get("GOLDDIFF_CACHE") or Path.home() / ".cache" / "golddiff")


# ----------------------------------------------------------------------------- on-disk array cache
# An entry is a JSON manifest <slug>.json naming one immutable .npy file per array (<slug>.<build
# id>.<array>.npy) with its shape, dtype, file size and a blake2b checksum. Writers save the .npy
# files under unique names, then os.replace the manifest: the manifest swap is the single atomic
# commit, so a reader sees either the old entry or the new one, never a mix. Builders of one key are
# serialised by an fcntl lock (where available) and re-check the entry after taking it, so
# concurrent processes build once.

CACHE_VERSION = 1


class CacheRebuiltWarning(UserWarning):
    """A cache entry on disk was invalid (truncated, other version or source) and was rebuilt."""


def _slug(key: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", key).strip("._")[:60]
    raw = key.encode("utf-8", "surrogateescape")  # a key may hold a non-UTF-8 file name
    return f"{safe}-{hashlib.sha1(raw).hexdigest()[:12]}"


class _Verified:
    """The (file, size, mtime) of every array whose checksum this process has checked, so each
    entry is verified in full the first time a process opens it and only stat-checked after."""

    def __init__(self):
        self._lock = threading.Lock()
        self._seen: set[tuple] = set()

    def check(self, p: Path, a: np.ndarray, checksum: str) -> bool:
        st = p.stat()
        tag = (str(p), st.st_size, st.st_mtime_ns, checksum)
        with self._lock:
            if tag in self._seen:
                return True
        ok = array_checksum(a) == checksum
        if ok:
            with self._lock:
                self._seen.add(tag)
        return ok

    def mark(self, p: Path, checksum: str) -> None:
        """Record a file this process has just written with `checksum` as verified."""
        st = p.stat()
        with self._lock:
            self._seen.add((str(p), st.st_size, st.st_mtime_ns, checksum))

    def clear(self) -> None:
        with self._lock:
            self._seen.clear()


VERIFIED = _Verified()


def _arrays_dir() -> Path:
    return cache_dir() / "arrays"


class Streamed:
    """An array that `cached_arrays`' build() hands over unfilled: shape, dtype and fill(out), which
    writes out (a writable (shape) array, memory-mapped onto the cache file) in chunks, so an array
    larger than memory goes to disk without ever being whole in RAM."""

    def __init__(self, shape: tuple[int, ...], dtype, fill: Callable[[np.ndarray], None]):
        self.shape, self.dtype, self.fill = tuple(int(s) for s in shape), np.dtype(dtype), fill

    def in_memory(self) -> np.ndarray:
        """Filled into RAM (only where the cache folder cannot be written)."""
        out = np.empty(self.shape, self.dtype)
        self.fill(out)
        return out


def _save(path: Path, a: "np.ndarray | Streamed") -> None:
    """np.save, or for a Streamed array: a .npy memory map filled chunk by chunk; fsynced."""
    if isinstance(a, Streamed):
        mm = np.lib.format.open_memmap(path, mode="w+", dtype=a.dtype, shape=a.shape)
        a.fill(mm)
        mm.flush()
        del mm
        with open(path, "rb+") as f:
            os.fsync(f.fileno())
        return
    with open(path, "wb") as f:
        np.save(f, a, allow_pickle=False)
        f.flush()
        os.fsync(f.fileno())


def _json_roundtrip(meta):
    return None if meta is None else json.loads(json.dumps(meta, sort_keys=True))


def _read_entry(key: str, meta, verify: bool) -> tuple[dict[str, np.ndarray] | None, str | None]:
    """(arrays, None) for a valid entry; (None, None) when absent; (None, reason) when present but
    invalid."""
    d, slug = _arrays_dir(), _slug(key)
    try:
        man = json.loads((d / f"{slug}.json").read_text())
    except FileNotFoundError:
        return None, None
    except (OSError, ValueError):
        return None, "unreadable (its manifest is not valid JSON)"
    if not isinstance(man, dict) or man.get("version") != CACHE_VERSION:
        return (
            None,
            f"from another cache version ({man.get('version') if isinstance(man, dict) else '?'})",
        )
    if man.get("key") != key:
        return None, "written for another key"
    if meta is not None and man.get("meta") != _json_roundtrip(meta):
        return None, "made from different source data"
    out = {}
    try:
        items = [
            (
                str(n),
                e["file"],
                list(e["shape"]),
                str(e["dtype"]),
                int(e["file_bytes"]),
                e["checksum"],
            )
            for n, e in man["arrays"].items()
        ]
    except (KeyError, TypeError, AttributeError, ValueError):
        return None, "malformed (its manifest lacks fields)"
    for name, fname, shape, dtype, nbytes, checksum in items:
        e = dict(file=fname, shape=shape, dtype=dtype, file_bytes=nbytes, checksum=checksum)
        p = inside(d, e["file"])
        if p is None:
            return None, f"invalid (its manifest names a file outside the cache: {e['file']!r})"
        try:
            size = p.stat().st_size
        except OSError:
            return None, f"missing its file {e['file']}"
        if size != e["file_bytes"]:
            return None, f"truncated ({size} of {e['file_bytes']} bytes in {e['file']})"
        try:
            empty = int(np.prod(e["shape"])) == 0
            a = np.load(p, mmap_mode=None if empty else "r", allow_pickle=False)
        except (OSError, ValueError) as err:
            return None, f"unreadable ({e['file']}: {err})"
        if list(a.shape) != e["shape"] or str(a.dtype) != e["dtype"]:
            return None, f"inconsistent ({e['file']} holds {a.dtype}{list(a.shape)})"
        ok = array_checksum(a) == checksum if verify else VERIFIED.check(p, a, checksum)
        if not ok:
            return None, f"corrupt (checksum mismatch in {e['file']})"
        out[name] = a
    return out, None


def _write_entry(key: str, arrays: dict[str, np.ndarray], meta, locked: bool = False) -> None:
    """Write the entry's arrays, then commit its manifest. locked: the caller holds the key's build
    lock, so no other builder's files can be in flight."""
    d, slug = _arrays_dir(), _slug(key)
    d.mkdir(parents=True, exist_ok=True)
    build = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    entries, done, tmp = {}, [], None
    try:
        for name, a in arrays.items():
            fname = f"{slug}.{build}.{name}.npy"
            tmp = d / f"{fname}.tmp"
            _save(tmp, a)
            os.replace(tmp, d / fname)
            done.append(d / fname)
            if isinstance(a, Streamed):  # checksum read back from the file, 16 MB at a time
                a = np.load(d / fname, mmap_mode="r", allow_pickle=False)
            entries[name] = dict(
                file=fname,
                shape=list(a.shape),
                dtype=str(a.dtype),
                file_bytes=(d / fname).stat().st_size,
                checksum=array_checksum(a),
            )
            VERIFIED.mark(d / fname, entries[name]["checksum"])
        man = dict(
            version=CACHE_VERSION,
            key=key,
            meta=_json_roundtrip(meta),
            created=time.time(),
            arrays=entries,
        )
        tmp = d / f"{slug}.json.{build}.tmp"
        tmp.write_text(json.dumps(man, sort_keys=True))
        try:  # files of the entry this commit supersedes (only names inside the cache)
            old = [
                e["file"]
                for e in json.loads((d / f"{slug}.json").read_text())["arrays"].values()
                if inside(d, e["file"]) is not None
            ]
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            old = []
        os.replace(tmp, d / f"{slug}.json")
    except BaseException:
        for p in done + ([tmp] if tmp is not None else []):
            with contextlib.suppress(OSError):
                p.unlink()
        raise
    # The superseded entry's files go now. Under the build lock no other builder of this key is at
    # work, so every other file of the entry that the new manifest does not list is what a killed
    # builder left; without the lock those go only once they are STALE_AGE old.
    keep = {e["file"] for e in entries.values()}
    _remove(d, [f for f in old if f not in keep], stale_only=False)
    _remove(d, [f for f in _entry_files(d).get(slug, []) if f not in keep], stale_only=not locked)


try:
    import fcntl

    _FCNTL = True
except ImportError:  # no fcntl (Windows): builders are not serialised
    _FCNTL = False

# The files of an entry besides <slug>.json and <slug>.lock: <slug>.<build>.<array>.npy (an array),
# the same + .tmp (an array being written) and <slug>.json.<build>.tmp (a manifest being written).
_ENTRY_FILE = re.compile(
    r"(.+-[0-9a-f]{12})\."
    r"(?:\d+-[0-9a-f]{8}\.[A-Za-z0-9_]+\.npy(?:\.tmp)?|json\.\d+-[0-9a-f]{8}\.tmp)"
)


def _entry_files(d: Path) -> dict[str, list[str]]:
    """{slug: the names of its array and temp files} in the arrays folder `d`."""
    out: dict[str, list[str]] = {}
    with contextlib.suppress(OSError):
        for name in os.listdir(d):
            m = _ENTRY_FILE.fullmatch(name)
            if m is not None:
                out.setdefault(m.group(1), []).append(name)
    return out


def _remove(d: Path, names: list[str], stale_only: bool) -> Swept:
    """Delete these regular files of the arrays folder (only those STALE_AGE old if stale_only)."""
    out = Swept()
    for name in names:
        p = inside(d, name)
        if p is None:
            continue
        with contextlib.suppress(OSError):
            st = p.lstat()
            if not stat.S_ISREG(st.st_mode):
                continue
            if stale_only and time.time() - st.st_mtime <= STALE_AGE:
                continue
            p.unlink()
            out.files.append(p)
            out.nbytes += st.st_size
    return out


def _listed(d: Path, slug: str) -> set[str] | None:
    """The file names the manifest of `slug` lists (none when there is no manifest); None when the
    manifest cannot be read, so that nothing of the entry is touched."""
    try:
        man = json.loads((d / f"{slug}.json").read_text())
    except FileNotFoundError:
        return set()
    except (OSError, ValueError):
        return None
    try:
        return {str(e["file"]) for e in man["arrays"].values()}
    except (KeyError, TypeError, AttributeError):
        return None


def sweep_orphans() -> Swept:
    """Remove the array and temp files that no manifest lists, of every entry whose build lock is
    free (no builder is writing it, in this process or another): what a builder killed between an
    array's rename and its manifest's leaves. An entry being built, or one whose manifest cannot be
    read, is left alone. Returns what was removed."""
    d, out = _arrays_dir(), Swept()
    for slug, names in _entry_files(d).items():
        try:
            with _slug_lock(slug, wait=False) as held:
                listed = _listed(d, slug) if held is not False else None
                if listed is not None:
                    gone = [n for n in names if n not in listed]
                    out.add(_remove(d, gone, stale_only=held is None))
        except OSError:  # the lock cannot be opened (read-only cache): leave the entry
            continue
    return out


@contextlib.contextmanager
def _slug_lock(slug: str, wait: bool = True):
    """Exclusive fcntl lock on <slug>.lock, serialising the builders of one entry. Yields True when
    held, False when `wait` is off and another holder has it, None where fcntl is missing."""
    if not _FCNTL:
        yield None
        return
    with open(_arrays_dir() / f"{slug}.lock", "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _build_lock(key: str):
    """The lock serialising builders of `key` (a no-op where fcntl is missing)."""
    return _slug_lock(_slug(key))


def cached_arrays(
    key: str, build: Callable[[], dict[str, np.ndarray]], meta=None, verify: bool | None = None
) -> dict[str, np.ndarray]:
    """Arrays stored on disk under `key`, built once by `build()` and memory-mapped (read-only)
    afterwards.

    key: any string naming the content (include every parameter it depends on, e.g.
    "stats/mnist/N60000"); build: returns {name: ndarray} with names of letters, digits and '_' and
    non-object dtypes (or `Streamed` arrays, written to disk chunk by chunk); meta: optional
    JSON-able description of the inputs (e.g. source file sizes);
    an entry whose stored meta differs is rebuilt. Every load checks version, key, file sizes,
    shapes and dtypes; the first load of an entry in a process also checks its full checksum, and
    verify=True (or $GOLDDIFF_VERIFY_CACHE=1) checks it on every load. An invalid entry is rebuilt
    with a `CacheRebuiltWarning` saying why. When the cache folder cannot be written, the built
    arrays are returned uncached with a warning. Returns {name: array}; arrays are np.memmap
    (read-only) except empty ones.
    """
    SWEEP()
    if verify is None:
        verify = os.environ.get("GOLDDIFF_VERIFY_CACHE", "") not in ("", "0")
    arrays, reason = _read_entry(key, meta, verify)
    if arrays is not None:
        return arrays
    try:
        _arrays_dir().mkdir(parents=True, exist_ok=True)
        lock = _build_lock(key)
        held = lock.__enter__()
    except OSError as e:
        warnings.warn(
            f"The cache folder {_arrays_dir()} is not writable ({e}); '{key}' is kept in memory "
            "only."
        )
        return _in_memory(_check_built(key, build()))
    try:
        arrays, again = _read_entry(
            key, meta, verify
        )  # another process may have built it meanwhile
        if arrays is not None:
            return arrays
        reason = again or reason
        if reason:
            warnings.warn(
                f"The cache entry '{key}' in {_arrays_dir()} was {reason}; rebuilding it.",
                CacheRebuiltWarning,
                stacklevel=2,
            )
        built = _check_built(key, build())
        try:
            _write_entry(key, built, meta, locked=held is True)
        except OSError as e:
            warnings.warn(
                f"Could not write the cache entry '{key}' ({e}); it is kept in memory only."
            )
            return _in_memory(built)
    finally:
        lock.__exit__(None, None, None)
    arrays, _ = _read_entry(key, meta, False)
    return arrays if arrays is not None else _in_memory(built)


def _in_memory(arrays: dict) -> dict[str, np.ndarray]:
    return {k: a.in_memory() if isinstance(a, Streamed) else a for k, a in arrays.items()}


def _check_built(key: str, built) -> dict[str, np.ndarray]:
    if not isinstance(built, dict) or not built:
        raise TypeError(
            f"build() for cache key '{key}' must return a non-empty dict of numpy arrays."
        )
    out = {}
    for name, a in built.items():
        if not re.fullmatch(r"[A-Za-z0-9_]+", str(name)):
            raise TypeError(
                f"Array name '{name}' for cache key '{key}' must use only letters, digits and '_'."
            )
        a = a if isinstance(a, Streamed) else np.ascontiguousarray(a)
        if a.dtype.hasobject:
            raise TypeError(
                f"Array '{name}' for cache key '{key}' has an object dtype, which cannot be cached."
            )
        out[str(name)] = a
    return out


def cached_entry(key: str) -> dict[str, np.ndarray] | None:
    """The arrays of a valid entry under `key` whatever source data it was made from, else None."""
    return _read_entry(key, None, False)[0]


def cache_state(key: str) -> int | None:
    """Bytes on disk of a present entry whose files have their recorded sizes, else None (stat only,
    fast)."""
    d = _arrays_dir()
    try:
        man = json.loads((d / f"{_slug(key)}.json").read_text())
        if man.get("version") != CACHE_VERSION or man.get("key") != key:
            return None
        total = 0
        for e in man["arrays"].values():
            p = inside(d, e["file"])
            if p is None:
                return None
            size = p.stat().st_size
            if size != e["file_bytes"]:
                return None
            total += size
        return total
    except (OSError, ValueError, KeyError, AttributeError, TypeError):
        return None
