"""Cosmos-Predict2 Video2World DiT with official names, its loading, LoRA and parallelization.

Importing the package registers the family (framework/models/cosmos2/family.py).
"""

from framework.models.cosmos2.family import PREDICT2
from framework.models.cosmos2.flops import flops_per_sample, forward_flops
from framework.models.cosmos2.loading import load_official, official_state_dict
from framework.models.cosmos2.net import IGNORED_CHECKPOINT_KEYS, SIZES, MiniTrainDiT, net_config

__all__ = [
    "IGNORED_CHECKPOINT_KEYS",
    "PREDICT2",
    "SIZES",
    "MiniTrainDiT",
    "flops_per_sample",
    "forward_flops",
    "load_official",
    "net_config",
    "official_state_dict",
]
