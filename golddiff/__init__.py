"""GoldDiff Explorer library: analytical (training-free) diffusion with posterior diagnostics.

Layers (imports point down only): explore -> run -> denoise -> core, with data at the bottom.
Pure torch / numpy; never imports streamlit. The public names below are what the app and users need.
They load on first use (PEP 562), so `python -m golddiff` can answer Ctrl-C during the torch import
with a quiet exit instead of a traceback.
"""

from __future__ import annotations

import importlib

_WHERE = {
    "NoiseSchedule": ".core",
    "checkpoint": ".core",
    "device_sharing": ".core",
    "set_stop_check": ".core",
    "Dataset": ".data",
    "device_label": ".data",
    "load_dataset": ".data",
    "pick_device": ".data",
    "METHODS": ".denoise",
    "DenoiserParams": ".denoise",
    "get_corpus": ".denoise",
    "make_denoiser": ".denoise",
    "LABELS": ".run",
    "REFERENCE": ".run",
    "StepRecord": ".run",
    "Trajectory": ".run",
    "check_cost": ".run",
    "compare": ".run",
    "estimate_seconds": ".run",
    "frontier": ".run",
    "max_seconds": ".run",
    "sample": ".run",
}
_SUBPACKAGES = ("core", "data", "denoise", "run", "explore", "cli")

__all__ = sorted(_WHERE)
__version__ = "0.2.0"


def __getattr__(name: str):
    if name in _WHERE:
        value = getattr(importlib.import_module(_WHERE[name], __name__), name)
        globals()[name] = value
        return value
    if name in _SUBPACKAGES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'golddiff' has no attribute '{name}'")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))
