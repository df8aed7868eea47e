"""The "minimal V1 LVG" DiT of Cosmos-Predict2 (upstream `MinimalV1LVGDiT`), which Predict2.5 and
the action-conditioned nets extend, with the official module names.

Every parameter name equals the official checkpoint key after stripping `net.`
(docs/upstream/cosmos_predict2.md §4.7). Shapes, formulas and defaults follow §4.4-§4.5. A family
subclasses `MinimalDiT` (Predict2: `cosmos2.net.MiniTrainDiT`) and may override `embed_context`
(e.g. a text projection) and `embed_time` (e.g. adding an action embedding to the modulation).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from framework.models.dit.context_parallel import Layout
from framework.models.dit.embeddings import PatchEmbed, TimestepEmbedding, Timesteps
from framework.models.dit.layers import MLP, Attention, CheckpointedUnit, RMSNorm, adaln
from framework.models.dit.rope import Rope3D
from framework.models.dit.video_dit import VideoDiT


class Block(CheckpointedUnit):
    """Self-attention, cross-attention and MLP, each with AdaLN-LoRA modulation per latent frame."""

    def __init__(
        self, dim: int, context_dim: int, num_heads: int, mlp_ratio: float, adaln_lora_dim: int
    ) -> None:
        super().__init__()
        head_dim = dim // num_heads
        self.self_attn = Attention(dim, dim, num_heads, head_dim)
        self.cross_attn = Attention(dim, context_dim, num_heads, head_dim)
        self.mlp = MLP(dim, int(dim * mlp_ratio))
        self.layer_norm_self_attn = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.layer_norm_cross_attn = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.layer_norm_mlp = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.adaln_modulation_self_attn = adaln(dim, adaln_lora_dim, 3)
        self.adaln_modulation_cross_attn = adaln(dim, adaln_lora_dim, 3)
        self.adaln_modulation_mlp = adaln(dim, adaln_lora_dim, 3)
        self.checkpoint_kwargs = None

    def _forward(
        self,
        x: Tensor,
        emb: Tensor,
        adaln_lora: Tensor,
        context: Tensor,
        rope_cos: Tensor,
        rope_sin: Tensor,
        cp: Layout | None = None,
    ) -> Tensor:
        """x [B, T, S, D] (S = tokens per frame); emb/adaln_lora [B, T or 1, D / 3D]. Under
        context parallel T counts this rank's frames and `cp` is the layout."""
        b, t, s, d = x.shape

        shift, scale, gate = self.modulation(self.adaln_modulation_self_attn, emb, adaln_lora, x)
        h = self.layer_norm_self_attn(x) * (1 + scale) + shift
        h = self.self_attn(h.reshape(b, t * s, d), rope=(rope_cos, rope_sin), cp=cp)
        x = x + gate * h.view(b, t, s, d)

        shift, scale, gate = self.modulation(self.adaln_modulation_cross_attn, emb, adaln_lora, x)
        h = self.layer_norm_cross_attn(x) * (1 + scale) + shift
        h = self.cross_attn(h.reshape(b, t * s, d), context=context)
        x = x + gate * h.view(b, t, s, d)

        shift, scale, gate = self.modulation(self.adaln_modulation_mlp, emb, adaln_lora, x)
        h = self.layer_norm_mlp(x) * (1 + scale) + shift
        return x + gate * self.mlp(h)

    def modulation(
        self, head: nn.Module, emb: Tensor, adaln_lora: Tensor, x: Tensor
    ) -> tuple[Tensor, ...]:
        """(shift, scale, gate) [B, T, 1, D] of one sub-layer (a family may compute it in
        another precision; Predict2.5 does it in fp32)."""
        return tuple((head(emb) + adaln_lora).unsqueeze(2).chunk(3, dim=-1))


class FinalLayer(nn.Module):
    def __init__(self, dim: int, out_features: int, adaln_lora_dim: int) -> None:
        super().__init__()
        self.layer_norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(dim, out_features, bias=False)
        self.adaln_modulation = adaln(dim, adaln_lora_dim, 2)

    def forward(self, x: Tensor, emb: Tensor, adaln_lora: Tensor) -> Tensor:
        d = x.shape[-1]
        mod = self.adaln_modulation(emb) + adaln_lora[..., : 2 * d]
        shift, scale = mod.unsqueeze(2).chunk(2, dim=-1)
        return self.linear(self.layer_norm(x) * (1 + scale) + shift)


class MinimalDiT(VideoDiT):
    """Video2World DiT. Input channels: latent, condition mask, padding mask (§4.5.1-2).
    A subclass swaps the block and final-layer classes through `block_class` and
    `final_layer_class` (same module names, so the same official keys)."""

    block_class: type[Block] = Block
    final_layer_class: type[FinalLayer] = FinalLayer

    def __init__(
        self,
        model_channels: int,
        num_blocks: int,
        num_heads: int,
        in_channels: int = 16,
        out_channels: int = 16,
        patch_spatial: int = 2,
        patch_temporal: int = 1,
        crossattn_emb_channels: int = 1024,
        adaln_lora_dim: int = 256,
        mlp_ratio: float = 4.0,
        rope_h_extrapolation_ratio: float = 1.0,
        rope_w_extrapolation_ratio: float = 1.0,
        rope_t_extrapolation_ratio: float = 1.0,
        max_img_h: int = 240,
        max_img_w: int = 240,
        max_frames: int = 128,
        concat_padding_mask: bool = True,
    ) -> None:
        super().__init__()
        # The constructor arguments, for export (diffusers config) and for rebuilding the net.
        self.config = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        if model_channels % num_heads:
            raise ValueError(
                f"model_channels={model_channels} is not divisible by "
                f"num_heads={num_heads}; pick sizes from net_config()."
            )
        self.model_channels, self.num_heads = model_channels, num_heads
        self.in_channels, self.out_channels = in_channels, out_channels
        self.patch_spatial, self.patch_temporal = patch_spatial, patch_temporal
        self.crossattn_emb_channels = crossattn_emb_channels
        self.concat_padding_mask = concat_padding_mask
        self.mlp_ratio = mlp_ratio
        d = model_channels
        # +1 condition-mask channel (MinimalV1LVGDiT), +1 padding-mask channel (§4.4).
        embed_in = in_channels + 1 + int(concat_padding_mask)
        self.x_embedder = PatchEmbed(embed_in, d, patch_spatial, patch_temporal)
        self.pos_embedder = Rope3D(
            d // num_heads,
            rope_h_extrapolation_ratio,
            rope_w_extrapolation_ratio,
            rope_t_extrapolation_ratio,
            max_img_h // patch_spatial,
            max_img_w // patch_spatial,
            max_frames // patch_temporal,
        )
        self.t_embedder = nn.Sequential(Timesteps(d), TimestepEmbedding(d))
        self.t_embedding_norm = RMSNorm(d, eps=1e-6)
        self.blocks = nn.ModuleList(
            self.block_class(d, crossattn_emb_channels, num_heads, mlp_ratio, adaln_lora_dim)
            for _ in range(num_blocks)
        )
        out_features = patch_spatial * patch_spatial * patch_temporal * out_channels
        self.final_layer = self.final_layer_class(d, out_features, adaln_lora_dim)
        self.cp = None
        self.init_weights()

    def units(self) -> list[nn.Module]:
        return list(self.blocks)

    @torch.no_grad()
    def init_weights(self) -> None:
        """Upstream init (§4.5): trunc-normal std 1/sqrt(fan_in) at +-3 std; the second adaLN
        linears start at zero; norm scales at one. Only matters when training from scratch."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                std = 1.0 / math.sqrt(module.in_features)
                nn.init.trunc_normal_(module.weight, std=std, a=-3 * std, b=3 * std)
            elif isinstance(module, RMSNorm):
                module.weight.fill_(1.0)
        for block in self.blocks:
            for head in (
                block.adaln_modulation_self_attn,
                block.adaln_modulation_cross_attn,
                block.adaln_modulation_mlp,
            ):
                head[2].weight.zero_()
        self.final_layer.adaln_modulation[2].weight.zero_()

    def _check_shapes(self, x: Tensor, timesteps: Tensor) -> Tensor:
        self._check_latent(x)
        t = x.shape[2] // self.patch_temporal
        if timesteps.ndim == 1:
            timesteps = timesteps[:, None]
        if timesteps.ndim != 2 or timesteps.shape[1] not in (1, t):
            raise ValueError(f"timesteps must be [B] or [B, {t}]; got {tuple(timesteps.shape)}.")
        return timesteps

    def embed_context(self, crossattn_emb: Tensor, dtype: torch.dtype) -> Tensor:
        """The cross-attention context the blocks see (Predict2: the T5 embeddings as given)."""
        return crossattn_emb.to(dtype)

    def embed_time(self, timesteps: Tensor, dtype: torch.dtype, **conditions: Any):
        """(emb [B, T or 1, D], adaln_lora [B, T or 1, 3D]) from timesteps [B, T or 1].
        `conditions`: extra per-frame inputs a subclass folds into the modulation."""
        if conditions:
            raise ValueError(
                f"{type(self).__name__} takes no conditioning input {sorted(conditions)}; "
                "remove it from the model's conditions or use a net that declares it."
            )
        # Sinusoid in fp32, then the compute dtype (bf16 params need bf16 inputs without autocast).
        sinusoid = self.t_embedder[0](timesteps).to(dtype)
        emb, adaln_lora = self.t_embedder[1](sinusoid)
        return self.t_embedding_norm(emb), adaln_lora

    def forward(
        self,
        x_B_C_T_H_W: Tensor,
        timesteps_B_T: Tensor,
        crossattn_emb: Tensor,
        condition_video_input_mask_B_C_T_H_W: Tensor | None = None,
        padding_mask: Tensor | None = None,
        **conditions: Any,
    ) -> Tensor:
        """Velocity [B, out_channels, T, H, W] in the dtype of x."""
        timesteps = self._check_shapes(x_B_C_T_H_W, timesteps_B_T)
        x = self._input_channels(x_B_C_T_H_W, condition_video_input_mask_B_C_T_H_W, padding_mask)
        p, pt = self.patch_spatial, self.patch_temporal
        t, h, w = x.shape[2] // pt, x.shape[3] // p, x.shape[4] // p  # the whole video's grid
        # Context parallel: this rank keeps its latent frames, and slices the per-frame tables
        # (timesteps, RoPE) of the whole video so its tokens keep their global positions.
        cp = self.cp.layout(t, h * w) if self.cp is not None else None
        if cp is not None:
            x = cp.local(x, dim=2, per=pt)
        x = self.x_embedder(x)
        b, t_here, _, _, d = x.shape
        x = x.view(b, t_here, h * w, d)

        # Per-frame modulation of the whole video (timesteps and conditions such as actions see
        # every frame), then this rank's frames.
        emb, adaln_lora = self.embed_time(timesteps, x.dtype, **conditions)
        if cp is not None and emb.shape[1] > 1:
            emb, adaln_lora = cp.local(emb, dim=1), cp.local(adaln_lora, dim=1)
        angles = self.pos_embedder.angles(t, h, w, x.device)[0].unsqueeze(1)
        if cp is not None:
            angles = cp.local(angles, dim=0, per=h * w)
        cos, sin = torch.cos(angles), torch.sin(angles)
        context = self.embed_context(crossattn_emb, x.dtype)

        for block in self.blocks:
            x = block(x, emb, adaln_lora, context, cos, sin, cp)
        x = self.final_layer(x, emb, adaln_lora)
        out = self._unpatchify(x.view(b, t_here, h, w, -1))
        return out if cp is None else cp.gather(out, dim=2, per=pt)
