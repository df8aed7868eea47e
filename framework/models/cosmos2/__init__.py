"""Cosmos-Predict2 Video2World DiT with official names, its loading, LoRA and parallelization."""

from framework.models.cosmos2.flops import flops_per_sample, forward_flops
from framework.models.cosmos2.loading import load_official, official_state_dict, read_checkpoint
from framework.models.cosmos2.net import IGNORED_CHECKPOINT_KEYS, SIZES, MiniTrainDiT, net_config

__all__ = [
    "IGNORED_CHECKPOINT_KEYS",
    "SIZES",
    "MiniTrainDiT",
    "flops_per_sample",
    "forward_flops",
    "load_official",
    "net_config",
    "official_state_dict",
    "read_checkpoint",
]
