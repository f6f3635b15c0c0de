"""GoldDiff Explorer library: analytical (training-free) diffusion with posterior diagnostics.

Pure torch / numpy; never imports streamlit.
"""
from .data import Dataset, load_dataset
from .denoisers import METHODS, make_denoiser
from .sampler import Trajectory, sample
from .schedule import NoiseSchedule

__all__ = ["Dataset", "load_dataset", "NoiseSchedule", "make_denoiser", "sample", "Trajectory", "METHODS"]
__version__ = "0.1.0"
