"""GoldDiff Explorer library: analytical (training-free) diffusion with posterior diagnostics.

Layers (imports point down only): explore -> run -> denoise -> core, with data at the bottom.
Pure torch / numpy; never imports streamlit. The public names below are what the app and users need.
"""

from .core import NoiseSchedule
from .data import Dataset, device_label, load_dataset, pick_device
from .denoise import METHODS, DenoiserParams, get_corpus, make_denoiser
from .run import LABELS, REFERENCE, StepRecord, Trajectory, compare, frontier, sample

__all__ = [
    "Dataset",
    "DenoiserParams",
    "LABELS",
    "METHODS",
    "NoiseSchedule",
    "REFERENCE",
    "StepRecord",
    "Trajectory",
    "compare",
    "device_label",
    "frontier",
    "get_corpus",
    "load_dataset",
    "make_denoiser",
    "pick_device",
    "sample",
]
__version__ = "0.2.0"
