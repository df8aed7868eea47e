"""The Cosmos-Predict2 family: what the generic core needs to know about MiniTrainDiT."""

from __future__ import annotations

from framework.config import L
from framework.models.cosmos2.convert import (
    diffusers_config,
    diffusers_to_official,
    official_to_diffusers,
)
from framework.models.cosmos2.flops import flops_per_sample
from framework.models.cosmos2.lora import DEFAULT_TARGETS
from framework.models.cosmos2.net import IGNORED_CHECKPOINT_KEYS, MiniTrainDiT
from framework.models.family import ModelFamily, register_family

PREDICT2 = register_family(
    ModelFamily(
        name="cosmos2",
        net_classes=(MiniTrainDiT,),
        # parallelize, strict loading, LoRA: the shared dit/ implementations.
        flops_per_sample=flops_per_sample,
        ignored_keys=IGNORED_CHECKPOINT_KEYS,
        # Predict1 files carry the EDM uncertainty head; a Predict2 objective has none.
        extra_checkpoint_keys=("logvar.*",),
        lora_targets=DEFAULT_TARGETS,
        to_diffusers=official_to_diffusers,
        from_diffusers=diffusers_to_official,
        diffusers_class="CosmosTransformer3DModel",
        diffusers_config=diffusers_config,
        objective=lambda: L("framework.diffusion.rectified_flow.RectifiedFlowObjective").full(),
        sampler=lambda: L("framework.diffusion.samplers.MultistepSampler").full(),
    )
)
