"""Core layer: pure tensor math. The noise schedule and DDIM step, Gaussian statistics and
PCA-locality masks, the logits, the one posterior kernel (`core.posterior.posterior`) and how its
sums merge across ranks (`core.comm`), and the summaries (entropy, perplexity, ESS, k_p, captured
mass, r^2, MSE).

Imports nothing from golddiff except the memory guard of the data layer.
"""

from .interrupt import checkpoint, set_stop_check
from .logits import global_logits, sq_dists
from .posterior import StreamingSoftmax
from .schedule import NoiseSchedule, pool_size, subset_size
from .stats import MASK_RULES, DataStats
from .summaries import captured_mass, entropy, ess, k_mass, mse01, perplexity, r2, topk_recall

__all__ = [
    "DataStats",
    "MASK_RULES",
    "NoiseSchedule",
    "StreamingSoftmax",
    "captured_mass",
    "checkpoint",
    "entropy",
    "ess",
    "global_logits",
    "k_mass",
    "mse01",
    "perplexity",
    "pool_size",
    "r2",
    "set_stop_check",
    "sq_dists",
    "subset_size",
    "topk_recall",
]
