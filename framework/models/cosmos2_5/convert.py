"""Key renames: official Predict2.5 names <-> diffusers' `CosmosTransformer3DModel`
(docs/upstream/cosmos_predict2_5.md §7; the Predict2 table of docs/upstream/peers.md §b.2 plus
`crossattn_proj.0.*`, which keeps its name).

Renames are substring replacements applied in order after the block prefix is swapped, so
`transformer_blocks.` is never half-matched by `blocks.`. The table is Predict2's as well; it is
repeated here because families do not import each other (shared DiT layer, issue #23).
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor

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
    """diffusers' names to official ones (loadable by Predict25DiT)."""
    return _rename(state_dict, _BLOCKS[1], _BLOCKS[0], tuple((n, o) for o, n in _PAIRS))
