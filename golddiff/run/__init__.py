"""Run layer: the DDIM sampler with its per-step records, trajectories on disk, and the bench."""

from .bench import REFERENCE, MethodResult, compare, scaling
from .cost import check_cost, estimate_seconds, max_seconds
from .frontier import frontier
from .records import LABELS, StepRecord, make_record
from .sampler import Trajectory, ddim, sample

__all__ = [
    "LABELS",
    "MethodResult",
    "REFERENCE",
    "StepRecord",
    "Trajectory",
    "check_cost",
    "compare",
    "ddim",
    "estimate_seconds",
    "frontier",
    "make_record",
    "max_seconds",
    "sample",
    "scaling",
]
