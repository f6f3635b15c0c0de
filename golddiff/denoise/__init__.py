"""Denoise layer: `DenoiserParams`, the corpus and its scans, retrieval (torch / faiss), the five
methods."""

from .corpus import Corpus, get_corpus, global_posterior
from .methods import DenoiseOutput, Denoiser, make_denoiser
from .params import METHODS, POOL_MODES, DenoiserParams, ParamSpec

__all__ = [
    "Corpus",
    "DenoiseOutput",
    "Denoiser",
    "DenoiserParams",
    "METHODS",
    "POOL_MODES",
    "ParamSpec",
    "get_corpus",
    "global_posterior",
    "make_denoiser",
]
