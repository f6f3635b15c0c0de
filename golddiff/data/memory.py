"""Memory guard: estimate the bytes a big structure needs and refuse with a clear ValueError instead
of being killed by the kernel's OOM killer (or a CUDA out-of-memory error half way through a
run).

The limit for one structure is the smaller of
  - what the device has free now: /proc/meminfo MemAvailable (else sysconf AVPHYS_PAGES * PAGE_SIZE)
  on the
    CPU, torch.cuda.mem_get_info plus the caching allocator's reserved-but-unused bytes on a GPU,
    and
  - the user's `max_memory` setting: `set_max_memory("2GB")` (the CLI's --max-memory, the app's
  sidebar), else
    the environment variable GOLDDIFF_MAX_MEMORY.
Estimates count only what the library allocates for that structure (including its large
temporaries), not
what already exists (the dataset itself on the CPU).
"""

from __future__ import annotations

import os
import re

import torch

ENV_VAR = "GOLDDIFF_MAX_MEMORY"
_UNITS = {
    "": 1,
    "b": 1,
    "k": 1e3,
    "kb": 1e3,
    "m": 1e6,
    "mb": 1e6,
    "g": 1e9,
    "gb": 1e9,
    "t": 1e12,
    "tb": 1e12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}


class _UserLimit:
    """The process-wide max_memory setting (set_max_memory); `USER_LIMIT.bytes = None` resets it
    (tests)."""

    def __init__(self):
        self.bytes: int | None = None  # takes precedence over the environment variable


USER_LIMIT = _UserLimit()


def proc_bytes(path: str, key: str) -> int | None:
    """A "Key:  N kB" line of a /proc file (e.g. /proc/meminfo MemAvailable, /proc/self/status
    VmRSS) in bytes;
    None where /proc or the key is missing."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def parse_bytes(spec: str | int | float, source: str = "max_memory") -> int:
    """'2GB', '512 MB', '1.5G', '3GiB' or a plain number of bytes -> int bytes (rounded down).
    Raises ValueError otherwise, and for a size that rounds down to 0 bytes (0.5, '0.4 B'), like 0
    itself."""
    if isinstance(spec, (int, float)) and not isinstance(spec, bool):
        value, unit = float(spec), ""
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([A-Za-z]*)\s*", str(spec))
        if m is None or m.group(2).lower() not in _UNITS:
            raise ValueError(
                f"{source}={spec!r} is not a memory size; write it like 2GB, 512MB or 1.5GiB."
            )
        value, unit = float(m.group(1)), m.group(2).lower()
    n = value * _UNITS[unit]
    if not n >= 1 or n == float("inf"):  # 0, NaN and sizes that round down to 0 bytes
        raise ValueError(
            f"{source}={spec!r} must be a positive memory size of at least 1 byte, such as 2GB."
        )
    return int(n)


def format_bytes(n: float) -> str:
    """Human-readable size with one decimal: 5.1 GB, 470.4 MB, 12.0 kB."""
    for unit, f in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= f:
            return f"{n / f:.1f} {unit}"
    return f"{int(n)} B"


def set_max_memory(spec: str | int | float | None) -> None:
    """Set (or with None clear) the process-wide limit; overrides GOLDDIFF_MAX_MEMORY."""
    USER_LIMIT.bytes = None if spec is None else parse_bytes(spec, "--max-memory")


def max_memory() -> int | None:
    """The user's limit in bytes: set_max_memory(), else $GOLDDIFF_MAX_MEMORY, else None."""
    if USER_LIMIT.bytes is not None:
        return USER_LIMIT.bytes
    env = os.environ.get(ENV_VAR, "").strip()
    return parse_bytes(env, ENV_VAR) if env else None


def available_bytes(device: torch.device | str | None = None) -> int | None:
    """Bytes free on `device` now (None when it cannot be told)."""
    device = torch.device(device or "cpu")
    if device.type == "cuda":
        try:
            free, _ = torch.cuda.mem_get_info(device)
            idx = device.index if device.index is not None else torch.cuda.current_device()
            cached = torch.cuda.memory_reserved(idx) - torch.cuda.memory_allocated(idx)
            return int(free + max(0, cached))
        except (RuntimeError, AssertionError):
            return None
    avail = proc_bytes("/proc/meminfo", "MemAvailable")
    if avail is not None:
        return avail
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(
    nbytes: float, what: str, lower: str, device: torch.device | str | None = None
) -> None:
    """Raise ValueError when `what` (e.g. "the (8, 60000) global posterior") would need more than
    the limit.

    lower: the advice, e.g. "lower --n or --k-max". The sentence names the estimate and what to
    change.
    """
    nbytes = int(nbytes)
    user = max_memory()
    if user is not None and nbytes > user:
        raise ValueError(
            f"{what} needs ~{format_bytes(nbytes)}, more than the max_memory limit of "
            f"{format_bytes(user)}; {lower}, or raise --max-memory ({ENV_VAR})."
        )
    free = available_bytes(device)
    if free is not None and nbytes > free:
        dev = torch.device(device or "cpu")
        raise ValueError(
            f"{what} needs ~{format_bytes(nbytes)}, more than the {format_bytes(free)} free on "
            f"{dev.type}; {lower}."
        )
