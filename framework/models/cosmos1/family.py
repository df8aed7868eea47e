"""The Cosmos-Predict1 family: what the generic core needs to know about GeneralDIT.

Objective: EDM with the learned logvar head and upstream's video conditioning
(framework/diffusion/edm.py, docs/upstream/cosmos_predict1.md §3). Sampler: the official
inference pipeline's 35-step Euler down to sigma 0.0002, then 0 (EulerEDMSampler, §3.8);
upstream's training-side RES 2ab sampler is `MultistepSampler` with its defaults (sigma_min
0.002, 35 steps, a last denoise at sigma_min), which `experiments.blocks.predict1_model(...,
sampler="res")` picks.
"""

from __future__ import annotations

from framework.config import L
from framework.models.cosmos1.convert import (
    diffusers_config,
    diffusers_to_official,
    official_to_diffusers,
)
from framework.models.cosmos1.flops import flops_per_sample
from framework.models.cosmos1.loading import load_official
from framework.models.cosmos1.lora import DEFAULT_TARGETS, load_base_into_lora
from framework.models.cosmos1.net import IGNORED_CHECKPOINT_KEYS, GeneralDIT
from framework.models.family import ModelFamily, register_family

PREDICT1 = register_family(
    ModelFamily(
        name="cosmos1",
        net_classes=(GeneralDIT,),
        # parallelize: the shared one over every FA/CA/MLP sub-block (GeneralDIT.units).
        flops_per_sample=flops_per_sample,
        load_official=load_official,
        # TransformerEngine `_extra_state` entries (§4.4); nothing else is dropped.
        ignored_keys=IGNORED_CHECKPOINT_KEYS,
        # Official model.pt and upstream's reg/ema model files hold `net.*` and `logvar.*` only
        # (the conditioner has no tensors, §3.1, §4.4); `logvar.*` is the objective's extra
        # module, so nothing is foreign.
        extra_checkpoint_keys=(),
        # LoRA: the shared module on these targets; the base load checks the extra pos-emb.
        lora_targets=DEFAULT_TARGETS,
        load_base_into_lora=load_base_into_lora,
        to_diffusers=official_to_diffusers,
        from_diffusers=diffusers_to_official,
        diffusers_class="CosmosTransformer3DModel",
        diffusers_config=diffusers_config,
        objective=lambda: L("framework.diffusion.edm.EDMObjective").full(),
        sampler=lambda: L("framework.diffusion.samplers.EulerEDMSampler").full(),
        notes={
            "extra_pos_embedder": "learnable, loaded from the base checkpoint (net.py docstring)",
            "latent_scale": "sigma_data 0.5 in the tokenizer block (cosmos1/latent_scale.py)",
        },
    )
)
