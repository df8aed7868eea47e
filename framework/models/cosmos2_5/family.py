"""The Cosmos-Predict2.5 family: what the generic core needs to know about Predict25DiT."""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor

from framework.config import L
from framework.models.cosmos2_5.convert import diffusers_to_official, official_to_diffusers
from framework.models.cosmos2_5.flops import flops_per_sample
from framework.models.cosmos2_5.loading import load_official
from framework.models.cosmos2_5.lora import apply_lora, load_base_into_lora, merge_lora_state_dict
from framework.models.cosmos2_5.net import IGNORED_CHECKPOINT_KEYS, Predict25DiT
from framework.models.cosmos2_5.parallelize import parallelize_net
from framework.models.family import ModelFamily, register_family


def diffusers_config(net: Predict25DiT) -> dict:
    """Kwargs of diffusers' CosmosTransformer3DModel for this net (docs/upstream/
    cosmos_predict2_5.md §7): the condition-mask channel counts in `in_channels`, the padding mask
    comes on top; rope_scale is (t, h, w)."""
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
        use_crossattn_projection=True,
        crossattn_proj_in_channels=c["crossattn_proj_in_channels"],
        encoder_hidden_states_channels=c["crossattn_emb_channels"],
    )


def _flops(net: Predict25DiT, t: int, h: int, w: int, text_len: int) -> float:
    return flops_per_sample(net, t, h, w, text_len)


def _merge(state_dict: Mapping[str, Tensor], rank: int, alpha: float) -> dict[str, Tensor]:
    return merge_lora_state_dict(state_dict, rank, alpha)


PREDICT2_5 = register_family(
    ModelFamily(
        name="cosmos2_5",
        net_classes=(Predict25DiT,),
        parallelize=parallelize_net,
        flops_per_sample=_flops,
        load_official=load_official,
        ignored_keys=IGNORED_CHECKPOINT_KEYS,
        apply_lora=apply_lora,
        load_base_into_lora=load_base_into_lora,
        merge_lora=_merge,
        to_diffusers=official_to_diffusers,
        from_diffusers=diffusers_to_official,
        diffusers_class="CosmosTransformer3DModel",
        diffusers_config=diffusers_config,
        objective=lambda: L("framework.diffusion.flow_matching.FlowMatchingObjective").full(),
        sampler=lambda: L("framework.diffusion.unipc.UniPCSampler").full(),
    )
)
