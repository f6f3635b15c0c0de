"""Runs that share one device take turns, one denoising step at a time.

The app serves every browser session from one process (a thread per session) and every run's step
allocates its own temporaries on the device: distance blocks, the subset's gathered rows, the
aggregation's products. Two sessions stepping at once could need twice the memory that the memory
guard saw free when each step checked it; taking turns keeps one step's temporaries on a device at a
time, so each check sees what the others gave back, and the sessions' runs interleave step by step
(a class sharing one GPU gets fair shares instead of a crash). One process's CLI or bench run never
waits: an uncontended turn is one lock acquisition per step.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager

import torch

from .interrupt import checkpoint

POLL_S = 0.2  # a waiting run checks its stop check (e.g. a closed tab) this often

_GUARD = threading.Lock()
_TURNS: dict[str, threading.RLock] = {}  # by device ("cuda:0", "cpu")
_WAITING: dict[str, int] = {}  # runs waiting for or holding each device's turn now


def _key(device) -> str:
    d = torch.device(device)
    return f"{d.type}:{d.index or 0}" if d.type == "cuda" else d.type


@contextmanager
def device_turn(device):
    """Hold `device`'s turn for the body. Re-entrant in one thread (a step that runs another
    denoiser inside it, as the exact check does). While waiting, the thread's stop check runs
    every POLL_S seconds, so a run whose tab has closed stops waiting."""
    key = _key(device)
    with _GUARD:
        turn = _TURNS.setdefault(key, threading.RLock())
        _WAITING[key] = _WAITING.get(key, 0) + 1
    try:
        while not turn.acquire(timeout=POLL_S):
            checkpoint()
        try:
            yield
        finally:
            turn.release()
    finally:
        with _GUARD:
            _WAITING[key] -= 1


def sharing(device) -> int:
    """How many steps are running on or waiting for `device` right now (for a notice that a run
    shares it)."""
    with _GUARD:
        return _WAITING.get(_key(device), 0)


def release_cached(device) -> None:
    """Give the CUDA caching allocator's unused blocks back to the driver (a run has ended or
    stopped), so other processes on the same GPU can use them; nothing elsewhere."""
    if torch.device(device).type == "cuda" and torch.cuda.is_available():
        torch.cuda.empty_cache()
