"""Cosmos-Predict2.5 Video2World DiT with official names, its loading, LoRA and parallelization
(docs/upstream/cosmos_predict2_5.md). Importing the package registers the family."""

from framework.models.cosmos2_5.family import PREDICT2_5
from framework.models.cosmos2_5.flops import flops_per_sample, forward_flops
from framework.models.cosmos2_5.loading import load_official, official_state_dict
from framework.models.cosmos2_5.net import (
    IGNORED_CHECKPOINT_KEYS,
    REASON1_CHANNELS,
    SIZES,
    Predict25DiT,
    net_config,
)

__all__ = [
    "IGNORED_CHECKPOINT_KEYS",
    "PREDICT2_5",
    "REASON1_CHANNELS",
    "SIZES",
    "Predict25DiT",
    "flops_per_sample",
    "forward_flops",
    "load_official",
    "net_config",
    "official_state_dict",
]
