"""Core layer: pure tensor math. The noise schedule and DDIM step, Gaussian statistics and
PCA-locality masks, the logits, the one posterior kernel (`core.posterior.posterior`) and how its
sums merge across ranks (`core.comm`), the summaries (entropy, perplexity, ESS, k_p, captured
mass, r^2, MSE), and the cooperative stop and device turns that runs sharing a process use.

Imports nothing from golddiff except the memory guard of the data layer.
"""

from .interrupt import checkpoint, set_stop_check
from .logits import global_logits, sq_dists
from .posterior import StreamingSoftmax
from .schedule import NoiseSchedule, pool_size, subset_size
from .stats import MASK_RULES, DataStats
from .summaries import captured_mass, entropy, ess, k_mass, mse01, perplexity, r2, topk_recall
from .turns import device_turn, release_cached
from .turns import sharing as device_sharing

__all__ = [
    "DataStats",
    "MASK_RULES",
    "NoiseSchedule",
    "StreamingSoftmax",
    "captured_mass",
    "checkpoint",
    "device_sharing",
    "device_turn",
    "entropy",
    "ess",
    "global_logits",
    "k_mass",
    "mse01",
    "perplexity",
    "pool_size",
    "r2",
    "release_cached",
    "set_stop_check",
    "sq_dists",
    "subset_size",
    "topk_recall",
]
