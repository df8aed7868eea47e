"""Key renames of the MinimalDiT (Predict2, Predict2.5 and its action net): official names <->
diffusers' `CosmosTransformer3DModel` (upstream/peers.md §b.2; Predict2.5's `crossattn_proj.0.*`
keeps its name, docs/upstream/cosmos_predict2_5.md §7), and the diffusers config of such a net.

Renames are plain substring replacements applied in order; long patterns come first so that,
e.g., `transformer_blocks` is never half-matched by `blocks`.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor

# (official, diffusers) substring pairs, applied after the block prefix is swapped.
_PAIRS: tuple[tuple[str, str], ...] = (
    ("x_embedder.proj.1.", "patch_embed.proj."),
    ("t_embedder.1.", "time_embed.t_embedder."),
    ("t_embedding_norm.", "time_embed.norm."),
    ("final_layer.adaln_modulation.1.", "norm_out.linear_1."),
    ("final_layer.adaln_modulation.2.", "norm_out.linear_2."),
    ("final_layer.linear.", "proj_out."),
    (".adaln_modulation_self_attn.1.", ".norm1.linear_1."),
    (".adaln_modulation_self_attn.2.", ".norm1.linear_2."),
    (".adaln_modulation_cross_attn.1.", ".norm2.linear_1."),
    (".adaln_modulation_cross_attn.2.", ".norm2.linear_2."),
    (".adaln_modulation_mlp.1.", ".norm3.linear_1."),
    (".adaln_modulation_mlp.2.", ".norm3.linear_2."),
    (".mlp.layer1.", ".ff.net.0.proj."),
    (".mlp.layer2.", ".ff.net.2."),
    (".self_attn.", ".attn1."),
    (".cross_attn.", ".attn2."),
    (".output_proj.", ".to_out.0."),
    (".q_proj.", ".to_q."),
    (".k_proj.", ".to_k."),
    (".v_proj.", ".to_v."),
    (".q_norm.", ".norm_q."),
    (".k_norm.", ".norm_k."),
)
# The block prefix is swapped first, so `transformer_blocks.` is never half-matched by `blocks.`.
_BLOCKS = ("blocks.", "transformer_blocks.")


def _rename(
    state_dict: Mapping[str, Tensor], src: str, dst: str, pairs: tuple[tuple[str, str], ...]
) -> dict[str, Tensor]:
    out = {}
    for key, value in state_dict.items():
        head = ""
        if key.startswith(src):
            head, key = dst, key[len(src) :]
        for old, new in pairs:
            key = key.replace(old, new)
        out[head + key] = value
    return out


def official_to_diffusers(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Official key names (after `net.`) to diffusers' names."""
    return _rename(state_dict, _BLOCKS[0], _BLOCKS[1], _PAIRS)


def diffusers_to_official(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """diffusers' `CosmosTransformer3DModel` names to official names (loadable by MinimalDiT)."""
    return _rename(state_dict, _BLOCKS[1], _BLOCKS[0], tuple((n, o) for o, n in _PAIRS))


def diffusers_config(net) -> dict:
    """Kwargs of diffusers' CosmosTransformer3DModel for a MinimalDiT (upstream/peers.md §b.2).
    diffusers counts the condition-mask channel in `in_channels`; the padding-mask channel comes
    on top; rope_scale is (t, h, w)."""
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
