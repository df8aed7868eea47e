"""The Cosmos-Predict2.5 family: what the generic core needs to know about Predict25DiT.
Parallelize (over the blocks), strict loading and LoRA are the shared dit/ implementations."""

from __future__ import annotations

from framework.config import L
from framework.models.cosmos2_5.convert import diffusers_to_official, official_to_diffusers
from framework.models.cosmos2_5.flops import flops_per_sample
from framework.models.cosmos2_5.net import IGNORED_CHECKPOINT_KEYS, Predict25DiT
from framework.models.dit.diffusers_keys import diffusers_config as minimal_diffusers_config
from framework.models.family import ModelFamily, register_family

# Upstream's `lora_target_modules` (docs/upstream/cosmos_predict2_5.md §6): self- and
# cross-attention projections and the MLP; not the text projection, adaLN or embeddings.
LORA_TARGETS = "q_proj,k_proj,v_proj,output_proj,mlp.layer1,mlp.layer2"

# Upstream's `DEFAULT_NEGATIVE_PROMPT` (cosmos_predict2/config.py, §1.6), verbatim: the released
# nets were tuned with this text as the guidance's negative; generation defaults to it through
# the sampler node.
NEGATIVE_PROMPT = (
    "The video captures a series of frames showing ugly scenes, static with no motion, motion "
    "blur, over-saturation, shaky footage, low resolution, grainy texture, pixelated images, "
    "poorly lit areas, underexposed and overexposed scenes, poor color balance, washed out "
    "colors, choppy sequences, jerky movements, low frame rate, artifacting, color banding, "
    "unnatural transitions, outdated special effects, fake elements, unconvincing visuals, "
    "poorly edited content, jump cuts, visual noise, and flickering. Overall, the video is of "
    "poor quality."
)


def diffusers_config(net: Predict25DiT) -> dict:
    """Kwargs of diffusers' CosmosTransformer3DModel for this net (§7): the MinimalDiT's, plus
    the text projection."""
    c = net.config
    return {
        **minimal_diffusers_config(net),
        "use_crossattn_projection": True,
        "crossattn_proj_in_channels": c["crossattn_proj_in_channels"],
        "encoder_hidden_states_channels": c["crossattn_emb_channels"],
    }


PREDICT2_5 = register_family(
    ModelFamily(
        name="cosmos2_5",
        net_classes=(Predict25DiT,),
        flops_per_sample=flops_per_sample,
        ignored_keys=IGNORED_CHECKPOINT_KEYS,
        lora_targets=LORA_TARGETS,
        to_diffusers=official_to_diffusers,
        from_diffusers=diffusers_to_official,
        diffusers_class="CosmosTransformer3DModel",
        diffusers_config=diffusers_config,
        objective=lambda: L("framework.diffusion.flow_matching.FlowMatchingObjective").full(),
        sampler=lambda: L("framework.diffusion.unipc.UniPCSampler").full(
            negative_prompt=NEGATIVE_PROMPT
        ),
    )
)
