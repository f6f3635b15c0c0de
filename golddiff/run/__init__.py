"""Run layer: the DDIM sampler with its per-step records, trajectories on disk, and the bench."""

from .bench import REFERENCE, MethodResult, compare, scaling
from .frontier import frontier
from .records import LABELS, StepRecord, make_record
from .sampler import Trajectory, ddim, sample

__all__ = [
    "LABELS",
    "MethodResult",
    "REFERENCE",
    "StepRecord",
    "Trajectory",
    "compare",
    "ddim",
    "frontier",
    "make_record",
    "sample",
    "scaling",
]
