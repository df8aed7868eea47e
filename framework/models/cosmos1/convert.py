"""Key renames: official Predict1 names <-> diffusers' `CosmosTransformer3DModel` (Cosmos 1.0).

The table is docs/upstream/peers.md §b.3 (diffusers' `..._COSMOS_1_0` converter table). Renames
match whole module-path prefixes, so each direction is the exact inverse of the other and
suffixes such as `.weight` or peft's `.lora_A.default.weight` carry over unchanged.
`pos_embedder.seq` (a buffer diffusers recomputes) and TransformerEngine `_extra_state` entries
have no diffusers counterpart and are dropped going to diffusers; loading fills `seq` back in.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping

from torch import Tensor, nn

from framework.models.cosmos1.net import IGNORED_CHECKPOINT_KEYS, GeneralDIT

DROPPED_FOR_DIFFUSERS: tuple[str, ...] = ("pos_embedder.seq", *IGNORED_CHECKPOINT_KEYS)

# Outside the blocks: (official prefix, diffusers prefix).
_TOP: tuple[tuple[str, str], ...] = (
    ("x_embedder.proj.1.", "patch_embed.proj."),
    ("t_embedder.1.", "time_embed.t_embedder."),
    ("affline_norm.", "time_embed.norm."),
    ("extra_pos_embedder.", "learnable_pos_embed."),
    ("final_layer.adaLN_modulation.1.", "norm_out.linear_1."),
    ("final_layer.adaLN_modulation.2.", "norm_out.linear_2."),
    ("final_layer.linear.", "proj_out."),
)
# Inside sub-block j of block i (after `blocks.block{i}.blocks.{j}.` / `transformer_blocks.{i}.`);
# "{n}" is j + 1 (norm1/attn1 = self-attention, norm2/attn2 = cross-attention, norm3 = MLP).
_ATTN: tuple[tuple[str, str], ...] = (
    ("block.attn.to_q.0.", "attn{n}.to_q."),
    ("block.attn.to_q.1.", "attn{n}.norm_q."),
    ("block.attn.to_k.0.", "attn{n}.to_k."),
    ("block.attn.to_k.1.", "attn{n}.norm_k."),
    ("block.attn.to_v.0.", "attn{n}.to_v."),
    ("block.attn.to_out.0.", "attn{n}.to_out.0."),
)
_MLP: tuple[tuple[str, str], ...] = (
    ("block.layer1.", "ff.net.0.proj."),
    ("block.layer2.", "ff.net.2."),
)
_ADALN: tuple[tuple[str, str], ...] = (
    ("adaLN_modulation.1.", "norm{n}.linear_1."),
    ("adaLN_modulation.2.", "norm{n}.linear_2."),
)
_OFFICIAL_BLOCK = re.compile(r"^blocks\.block(\d+)\.blocks\.([012])\.(.*)$")
_DIFFUSERS_BLOCK = re.compile(r"^transformer_blocks\.(\d+)\.(norm|attn)([123])\.(.*)$")
_DIFFUSERS_FF = re.compile(r"^transformer_blocks\.(\d+)\.(ff\..*)$")


def _swap(
    key: str, pairs: tuple[tuple[str, str], ...], n: int = 0, reverse: bool = False
) -> str | None:
    for official, diffusers in pairs:
        src, dst = (diffusers, official) if reverse else (official, diffusers)
        src, dst = src.format(n=n), dst.format(n=n)
        if key.startswith(src):
            return dst + key[len(src) :]
    return None


def official_to_diffusers(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Official key names (after `net.`) to diffusers' names. Unknown keys pass through, so a
    strict load names them."""
    out = {}
    for key, value in state_dict.items():
        if any(fnmatch.fnmatchcase(key, p) for p in DROPPED_FOR_DIFFUSERS):
            continue
        new = _swap(key, _TOP)
        if new is None and (m := _OFFICIAL_BLOCK.match(key)):
            i, j, rest = int(m[1]), int(m[2]), m[3]
            sub = _swap(rest, _ADALN, n=j + 1) or _swap(rest, _MLP if j == 2 else _ATTN, n=j + 1)
            new = f"transformer_blocks.{i}.{sub}" if sub is not None else None
        out[new if new is not None else key] = value
    return out


def diffusers_to_official(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """diffusers' `CosmosTransformer3DModel` names to official names (loadable by GeneralDIT;
    `pos_embedder.seq` is filled in by `load_official`)."""
    out = {}
    for key, value in state_dict.items():
        new = _swap(key, _TOP, reverse=True)
        if new is None and (m := _DIFFUSERS_BLOCK.match(key)):
            i, n = int(m[1]), int(m[3])
            rest = f"{m[2]}{n}.{m[4]}"
            sub = _swap(rest, _ADALN, n=n, reverse=True)
            if sub is None and n in (1, 2):
                sub = _swap(rest, _ATTN, n=n, reverse=True)
            new = f"blocks.block{i}.blocks.{n - 1}.{sub}" if sub is not None else None
        elif new is None and (m := _DIFFUSERS_FF.match(key)):
            sub = _swap(m[2], _MLP, reverse=True)
            new = f"blocks.block{m[1]}.blocks.2.{sub}" if sub is not None else None
        out[new if new is not None else key] = value
    return out


def diffusers_config(net: nn.Module) -> dict:
    """Constructor kwargs of diffusers' `CosmosTransformer3DModel` equal to `net` (Cosmos 1.0
    Video2World: the condition mask is counted in in_channels, rope_scale is (t, h, w))."""
    if not isinstance(net, GeneralDIT):
        raise TypeError(f"diffusers_config needs a GeneralDIT; got {type(net).__name__}.")
    rope = net.pos_embedder
    p, pt = net.patch_spatial, net.patch_temporal
    return dict(
        in_channels=net.in_channels + 1,
        out_channels=net.out_channels,
        num_attention_heads=net.num_heads,
        attention_head_dim=net.model_channels // net.num_heads,
        num_layers=len(net.blocks),
        mlp_ratio=net.mlp_ratio,
        text_embed_dim=net.crossattn_emb_channels,
        adaln_lora_dim=net.adaln_lora_dim,
        max_size=(rope.max_t * pt, rope.max_h * p, rope.max_w * p),
        patch_size=(pt, p, p),
        rope_scale=(rope.t_ratio, rope.h_ratio, rope.w_ratio),
        concat_padding_mask=net.concat_padding_mask,
        extra_pos_embed_type="learnable" if net.extra_per_block_abs_pos_emb else None,
    )
