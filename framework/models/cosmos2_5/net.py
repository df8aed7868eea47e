"""Cosmos-Predict2.5 Video2World DiT (upstream `MinimalV1LVGDiT` with the 2.5 settings) with the
official module names.

Every parameter name equals the official checkpoint key after `net.`
(docs/upstream/cosmos_predict2_5.md §1.5), so released files load strictly. What differs from
Predict2 (§1.2): the text projection `crossattn_proj` (Linear with bias + GELU) before the blocks,
timesteps on a 0..1000 scale multiplied by `timestep_scale`, and fp32 islands (timestep embedding,
adaLN modulations, q/k through RoPE, final layer).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from framework.models.context_parallel import ContextParallel, Layout, context_parallel_of
from framework.models.cosmos2_5.layers import (
    MLP,
    Attention,
    PatchEmbed,
    RMSNorm,
    RopePosition3D,
    TimestepEmbedding,
    Timesteps,
    adaln,
    fp32_linear,
    modulation,
)

# Carried by official files, recomputed or unused here (§1.5).
IGNORED_CHECKPOINT_KEYS: tuple[str, ...] = (
    "pos_embedder.seq",
    "pos_embedder.dim_spatial_range",
    "pos_embedder.dim_temporal_range",
    "accum_video_sample_counter",
    "accum_image_sample_counter",
    "accum_iteration",
    "accum_train_in_hours",
    "*._extra_state",
)

# §1.1. Both sizes use RoPE ratios h/w 3, t 1 and the 100352 -> 1024 text projection.
SIZES: dict[str, dict] = {
    "2B": dict(model_channels=2048, num_blocks=28, num_heads=16),
    "14B": dict(model_channels=5120, num_blocks=36, num_heads=40),
}
REASON1_CHANNELS = 100352  # 28 Reason1 layers x 3584 (§2)


def net_config(size: str) -> dict:
    """Constructor kwargs of `Predict25DiT` for an official size ("2B", "14B")."""
    if size not in SIZES:
        raise ValueError(f"Unknown Cosmos-Predict2.5 size {size!r}; use one of {sorted(SIZES)}.")
    return dict(SIZES[size])


class Block(nn.Module):
    """Self-attention, cross-attention and MLP, each with fp32 AdaLN-LoRA modulation per frame."""

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
        # Set by parallelize.py (None = no checkpointing); checkpointing inside forward keeps the
        # parameter names official.
        self.checkpoint_kwargs: dict | None = None

    def forward(self, x: Tensor, *args) -> Tensor:
        if self.checkpoint_kwargs is not None and torch.is_grad_enabled():
            return checkpoint(
                self._forward,
                x,
                *args,
                use_reentrant=False,
                preserve_rng_state=False,
                **self.checkpoint_kwargs,
            )
        return self._forward(x, *args)

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
        """x [B, T, S, D] (S tokens per frame); emb [B, T or 1, D] and adaln_lora [.., 3D] fp32."""
        b, t, s, d = x.shape

        def mod(layer: nn.Sequential) -> list[Tensor]:
            # Computed in fp32, then cast to x's dtype (§1.2 item 5).
            return [m.to(x.dtype).unsqueeze(2) for m in modulation(layer, emb, adaln_lora, 3)]

        shift, scale, gate = mod(self.adaln_modulation_self_attn)
        h = self.layer_norm_self_attn(x) * (1 + scale) + shift
        h = self.self_attn(h.reshape(b, t * s, d), rope=(rope_cos, rope_sin), cp=cp)
        x = x + gate * h.view(b, t, s, d)

        shift, scale, gate = mod(self.adaln_modulation_cross_attn)
        h = self.layer_norm_cross_attn(x) * (1 + scale) + shift
        h = self.cross_attn(h.reshape(b, t * s, d), context=context)
        x = x + gate * h.view(b, t, s, d)

        shift, scale, gate = mod(self.adaln_modulation_mlp)
        h = self.layer_norm_mlp(x) * (1 + scale) + shift
        return x + gate * self.mlp(h)


class FinalLayer(nn.Module):
    """LayerNorm, two-chunk modulation and Linear, all in fp32 (§1.2 item 5)."""

    def __init__(self, dim: int, out_features: int, adaln_lora_dim: int) -> None:
        super().__init__()
        self.layer_norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(dim, out_features, bias=False)
        self.adaln_modulation = adaln(dim, adaln_lora_dim, 2)

    def forward(self, x: Tensor, emb: Tensor, adaln_lora: Tensor) -> Tensor:
        shift, scale = (
            m.unsqueeze(2) for m in modulation(self.adaln_modulation, emb, adaln_lora, 2)
        )
        with torch.autocast(x.device.type, enabled=False):
            h = self.layer_norm(x.float()) * (1 + scale) + shift
        return fp32_linear(self.linear, h)


class Predict25DiT(nn.Module):
    """Predict2.5 Video2World DiT. Input channels: latent, condition mask, padding mask (§1.2 item
    2); timesteps on 0..1000 (item 3); text of `crossattn_proj_in_channels` (item 4)."""

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
        crossattn_proj_in_channels: int = REASON1_CHANNELS,
        adaln_lora_dim: int = 256,
        mlp_ratio: float = 4.0,
        rope_h_extrapolation_ratio: float = 3.0,
        rope_w_extrapolation_ratio: float = 3.0,
        rope_t_extrapolation_ratio: float = 1.0,
        max_img_h: int = 240,
        max_img_w: int = 240,
        max_frames: int = 128,
        concat_padding_mask: bool = True,
        timestep_scale: float = 0.001,
    ) -> None:
        super().__init__()
        # The constructor arguments, for export (diffusers config) and for rebuilding the net.
        self.config = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        if model_channels % num_heads:
            raise ValueError(
                f"model_channels={model_channels} is not divisible by num_heads={num_heads}; "
                "pick sizes from net_config()."
            )
        self.model_channels, self.num_heads = model_channels, num_heads
        self.in_channels, self.out_channels = in_channels, out_channels
        self.patch_spatial, self.patch_temporal = patch_spatial, patch_temporal
        self.crossattn_emb_channels = crossattn_emb_channels
        self.concat_padding_mask = concat_padding_mask
        self.mlp_ratio, self.timestep_scale = mlp_ratio, timestep_scale
        d = model_channels
        embed_in = in_channels + 1 + int(concat_padding_mask)
        self.x_embedder = PatchEmbed(embed_in, d, patch_spatial, patch_temporal)
        self.pos_embedder = RopePosition3D(
            d // num_heads,
            (rope_h_extrapolation_ratio, rope_w_extrapolation_ratio, rope_t_extrapolation_ratio),
            (max_frames // patch_temporal, max_img_h // patch_spatial, max_img_w // patch_spatial),
        )
        self.t_embedder = nn.Sequential(Timesteps(d), TimestepEmbedding(d))
        self.t_embedding_norm = RMSNorm(d, eps=1e-6)
        self.crossattn_proj = nn.Sequential(
            nn.Linear(crossattn_proj_in_channels, crossattn_emb_channels, bias=True), nn.GELU()
        )
        self.blocks = nn.ModuleList(
            Block(d, crossattn_emb_channels, num_heads, mlp_ratio, adaln_lora_dim)
            for _ in range(num_blocks)
        )
        out_features = patch_spatial * patch_spatial * patch_temporal * out_channels
        self.final_layer = FinalLayer(d, out_features, adaln_lora_dim)
        self.cp: ContextParallel | None = None
        self.init_weights()

    def enable_context_parallel(self, group=None) -> None:
        """Split each sample's latent frames across `group` (None: off; context_parallel.py)."""
        self.cp = context_parallel_of(group)

    @torch.no_grad()
    def init_weights(self) -> None:
        """Upstream init: trunc-normal std 1/sqrt(fan_in) at +-3 std, second adaLN linears zero,
        norm scales one. `crossattn_proj` keeps torch's default init, as upstream's `init_weights`
        leaves it (§1.2 item 4). Only matters when training from scratch."""
        for name, module in self.named_modules():
            if isinstance(module, nn.Linear) and not name.startswith("crossattn_proj"):
                std = 1.0 / math.sqrt(module.in_features)
                nn.init.trunc_normal_(module.weight, std=std, a=-3 * std, b=3 * std)
            elif isinstance(module, RMSNorm):
                module.weight.fill_(1.0)
        for block in self.blocks:
            for layer in (
                block.adaln_modulation_self_attn,
                block.adaln_modulation_cross_attn,
                block.adaln_modulation_mlp,
            ):
                layer[2].weight.zero_()
        self.final_layer.adaln_modulation[2].weight.zero_()

    def _input_channels(self, x: Tensor, cond_mask: Tensor | None, padding_mask: Tensor | None):
        b, _, t, h, w = x.shape
        if cond_mask is None:  # image batches: the condition channel is zeros
            cond_mask = x.new_zeros(b, 1, t, h, w)
        parts = [x, cond_mask.to(x.dtype).expand(b, 1, t, h, w)]
        if self.concat_padding_mask:
            if padding_mask is None:
                padding_mask = x.new_zeros(b, 1, h, w)
            pm = F.interpolate(padding_mask.to(x.dtype), size=(h, w), mode="nearest")
            parts.append(pm.unsqueeze(2).expand(b, 1, t, h, w))
        return torch.cat(parts, dim=1)

    def _check_shapes(self, x: Tensor, timesteps: Tensor) -> Tensor:
        if x.ndim != 5 or x.shape[1] != self.in_channels:
            raise ValueError(f"x must be [B, {self.in_channels}, T, H, W]; got {tuple(x.shape)}.")
        _, _, t, h, w = x.shape
        p, pt = self.patch_spatial, self.patch_temporal
        if t % pt or h % p or w % p:
            raise ValueError(
                f"Latent size (T={t}, H={h}, W={w}) must be divisible by the patch "
                f"({pt}, {p}, {p}); resize the video."
            )
        if timesteps.ndim == 1:
            timesteps = timesteps[:, None]
        if timesteps.ndim != 2 or timesteps.shape[1] not in (1, t // pt):
            raise ValueError(
                f"timesteps must be [B] or [B, {t // pt}]; got {tuple(timesteps.shape)}."
            )
        return timesteps

    def forward(
        self,
        x_B_C_T_H_W: Tensor,
        timesteps_B_T: Tensor,
        crossattn_emb: Tensor,
        condition_video_input_mask_B_C_T_H_W: Tensor | None = None,
        padding_mask: Tensor | None = None,
    ) -> Tensor:
        """Velocity [B, out_channels, T, H, W] in float32 (the final layer is an fp32 island).
        timesteps [B], [B,1] or [B,T] on upstream's 0..1000 scale."""
        timesteps = self._check_shapes(x_B_C_T_H_W, timesteps_B_T) * self.timestep_scale
        x = self._input_channels(x_B_C_T_H_W, condition_video_input_mask_B_C_T_H_W, padding_mask)
        p, pt = self.patch_spatial, self.patch_temporal
        t, h, w = x.shape[2] // pt, x.shape[3] // p, x.shape[4] // p
        # Context parallel: this rank keeps its latent frames and slices the per-frame tables.
        cp = self.cp.layout(t, h * w) if self.cp is not None else None
        if cp is not None:
            x = cp.local(x, dim=2, per=pt)
            if timesteps.shape[1] > 1:
                timesteps = cp.local(timesteps, dim=1)
        x = self.x_embedder(x)
        b, t_here, _, _, d = x.shape
        x = x.view(b, t_here, h * w, d)

        emb, adaln_lora = self.t_embedder[1](self.t_embedder[0](timesteps))  # fp32
        emb = self.t_embedding_norm(emb)
        angles = self.pos_embedder.angles(t, h, w, x.device).unsqueeze(1)
        if cp is not None:
            angles = cp.local(angles, dim=0, per=h * w)
        cos, sin = torch.cos(angles), torch.sin(angles)
        context = self.crossattn_proj(crossattn_emb.to(x.dtype))

        for block in self.blocks:
            x = block(x, emb, adaln_lora, context, cos, sin, cp)
        x = self.final_layer(x, emb, adaln_lora)
        out = self._unpatchify(x.view(b, t_here, h, w, -1))
        return out if cp is None else cp.gather(out, dim=2, per=pt)

    def _unpatchify(self, x: Tensor) -> Tensor:
        """B T H W (p1 p2 t C) -> B C (T t) (H p1) (W p2): channel innermost."""
        b, t, h, w, _ = x.shape
        p, pt, c = self.patch_spatial, self.patch_temporal, self.out_channels
        x = x.view(b, t, h, w, p, p, pt, c).permute(0, 7, 1, 6, 2, 4, 3, 5)
        return x.reshape(b, c, t * pt, h * p, w * p)
