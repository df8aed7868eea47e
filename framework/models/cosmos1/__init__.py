"""Cosmos-Predict1 Video2World DiT (GeneralDIT) with official names, its tokenizer, loading,
diffusers conversion, FLOPs, LoRA and parallelization. The family object lives in family.py."""

from framework.models.cosmos1.convert import (
    diffusers_config,
    diffusers_to_official,
    official_to_diffusers,
)
from framework.models.cosmos1.family import PREDICT1  # noqa: F401  (registers the family)
from framework.models.cosmos1.flops import flops_per_sample, forward_flops
from framework.models.cosmos1.loading import load_official, official_state_dict
from framework.models.cosmos1.lora import apply_lora, load_base_into_lora, merge_lora_state_dict
from framework.models.cosmos1.net import IGNORED_CHECKPOINT_KEYS, SIZES, GeneralDIT, net_config
from framework.models.cosmos1.parallelize import parallelize_net
from framework.models.cosmos1.tokenizer import CosmosCV8x8x8Tokenizer

__all__ = [
    "IGNORED_CHECKPOINT_KEYS",
    "SIZES",
    "CosmosCV8x8x8Tokenizer",
    "GeneralDIT",
    "apply_lora",
    "diffusers_config",
    "diffusers_to_official",
    "flops_per_sample",
    "forward_flops",
    "load_base_into_lora",
    "load_official",
    "merge_lora_state_dict",
    "net_config",
    "official_state_dict",
    "official_to_diffusers",
    "parallelize_net",
]
