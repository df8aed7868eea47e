"""The Cosmos-Predict2 family: what the generic core needs to know about MiniTrainDiT."""

from __future__ import annotations

from framework.config import L
from framework.models.cosmos2.convert import diffusers_to_official, official_to_diffusers
from framework.models.cosmos2.flops import flops_per_sample
from framework.models.cosmos2.lora import DEFAULT_TARGETS
from framework.models.cosmos2.net import IGNORED_CHECKPOINT_KEYS, MiniTrainDiT
from framework.models.family import ModelFamily, register_family


def diffusers_config(net: MiniTrainDiT) -> dict:
    """Kwargs of diffusers' CosmosTransformer3DModel for this net (upstream/peers.md §b.2).
    diffusers counts the condition-mask channel in `in_channels`; the padding-mask channel comes on
    top."""
    c = net.config
    return dict(
        in_channels=c["in_channels"] + 1,
        out_channels=c["out_channels"],
        num_attention_heads=c["num_heads"],
        attention_head_dim=c["model_channels"] // c["num_heads"],
        num_layers=c["num_blocks"],
        mlp_ratio=c["mlp_ratio"],
        text_embed_dim=c["crossattn_emb_channels"],
        adaln_lora_dim=c["adaln_lora_dim"],
        max_size=[c["max_frames"], c["max_img_h"], c["max_img_w"]],
        patch_size=[c["patch_temporal"], c["patch_spatial"], c["patch_spatial"]],
        rope_scale=[
            c["rope_t_extrapolation_ratio"],
            c["rope_h_extrapolation_ratio"],
            c["rope_w_extrapolation_ratio"],
        ],
        concat_padding_mask=c["concat_padding_mask"],
        extra_pos_embed_type=None,
    )


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
