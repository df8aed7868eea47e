"""Cosmos-Predict2.5 Video2World DiT with official names, its conversion, FLOPs and family
(docs/upstream/cosmos_predict2_5.md). Importing the package registers the family."""

from framework.models.cosmos2_5.family import LORA_TARGETS, PREDICT2_5
from framework.models.cosmos2_5.flops import flops_per_sample, forward_flops
from framework.models.cosmos2_5.net import (
    IGNORED_CHECKPOINT_KEYS,
    REASON1_CHANNELS,
    SIZES,
    Predict25DiT,
    net_config,
)

__all__ = [
    "IGNORED_CHECKPOINT_KEYS",
    "LORA_TARGETS",
    "PREDICT2_5",
    "REASON1_CHANNELS",
    "SIZES",
    "Predict25DiT",
    "flops_per_sample",
    "forward_flops",
    "net_config",
]
