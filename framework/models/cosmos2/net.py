"""Cosmos-Predict2 Video2World DiT (upstream `MinimalV1LVGDiT`) with the official module names.

Every parameter name equals the official checkpoint key after stripping `net.`
(upstream/cosmos_predict2.md §4.7), so official files load strictly. Shapes, formulas and defaults
follow upstream/cosmos_predict2.md §4.4-§4.5."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from framework.models.context_parallel import (
    ContextParallel,
    Layout,
    attention,
    context_parallel_of,
)
from framework.models.cosmos2.embeddings import (
    PatchEmbed,
    RopePosition3D,
    TimestepEmbedding,
    Timesteps,
    apply_rope,
)

# Official rope buffers, training counters and TransformerEngine extra state
# (upstream/cosmos_predict2.md §4.7): carried by official files, recomputed or unused here.
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

# upstream/cosmos_predict2.md §4.4. "0.6B" exists upstream only as Text2Image; its Video2World form
# here (same sizes, 18 input channels) serves small runs, with the T2I rope ratios.
SIZES: dict[str, dict] = {
    "0.6B": dict(
        model_channels=1280,
        num_blocks=20,
        num_heads=20,
        rope_h_extrapolation_ratio=4.0,
        rope_w_extrapolation_ratio=4.0,
        rope_t_extrapolation_ratio=1.0,
    ),
    "2B": dict(
        model_channels=2048,
        num_blocks=28,
        num_heads=16,
        rope_h_extrapolation_ratio=3.0,
        rope_w_extrapolation_ratio=3.0,
        rope_t_extrapolation_ratio=1.0,
    ),
    "14B": dict(
        model_channels=5120,
        num_blocks=36,
        num_heads=40,
        rope_h_extrapolation_ratio=2.0,
        rope_w_extrapolation_ratio=2.0,
        rope_t_extrapolation_ratio=20.0 / 24.0,
    ),
}


def net_config(size: str) -> dict:
    """Constructor kwargs of `MiniTrainDiT` for an official size ("0.6B", "2B", "14B")."""
    if size not in SIZES:
        raise ValueError(f"Unknown Cosmos-Predict2 size {size!r}; use one of {sorted(SIZES)}.")
    return dict(SIZES[size])


class RMSNorm(nn.Module):
    """RMSNorm with a learnable scale, computed in fp32 like TE's RMSNorm
    (upstream/cosmos_predict2.md §4.5)."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        out = F.rms_norm(x.float(), (x.shape[-1],), self.weight.float(), self.eps)
        return out.to(x.dtype)


class Attention(nn.Module):
    """Bias-free multi-head attention with q/k RMSNorm over head_dim and no mask
    (upstream/cosmos_predict2.md §4.5.6)."""

    def __init__(self, query_dim: int, context_dim: int, num_heads: int, head_dim: int) -> None:
        super().__init__()
        inner = num_heads * head_dim
        self.num_heads, self.head_dim = num_heads, head_dim
        self.q_proj = nn.Linear(query_dim, inner, bias=False)
        self.k_proj = nn.Linear(context_dim, inner, bias=False)
        self.v_proj = nn.Linear(context_dim, inner, bias=False)
        self.q_norm = RMSNorm(head_dim, eps=1e-6)
        self.k_norm = RMSNorm(head_dim, eps=1e-6)
        self.v_norm = nn.Identity()
        self.output_proj = nn.Linear(inner, query_dim, bias=False)

    def forward(
        self,
        x: Tensor,
        context: Tensor | None = None,
        rope: tuple[Tensor, Tensor] | None = None,
        cp: Layout | None = None,
    ) -> Tensor:
        """`cp`: the context-parallel layout of x's tokens (self-attention only)."""
        context = x if context is None else context
        heads = (self.num_heads, self.head_dim)
        q = self.q_norm(self.q_proj(x).unflatten(-1, heads))
        k = self.k_norm(self.k_proj(context).unflatten(-1, heads))
        v = self.v_norm(self.v_proj(context).unflatten(-1, heads))
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        return self.output_proj(attention(q, k, v, cp).flatten(2))


class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.layer1 = nn.Linear(dim, hidden, bias=False)
        self.activation = nn.GELU()  # exact erf GELU (upstream/cosmos_predict2.md §4.5.6)
        self.layer2 = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.layer2(self.activation(self.layer1(x)))


def _adaln(dim: int, lora_dim: int, n: int) -> nn.Sequential:
    return nn.Sequential(
        nn.SiLU(), nn.Linear(dim, lora_dim, bias=False), nn.Linear(lora_dim, n * dim, bias=False)
    )


class Block(nn.Module):
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
        self.adaln_modulation_self_attn = _adaln(dim, adaln_lora_dim, 3)
        self.adaln_modulation_cross_attn = _adaln(dim, adaln_lora_dim, 3)
        self.adaln_modulation_mlp = _adaln(dim, adaln_lora_dim, 3)
        # Set by parallelize.py: extra torch.utils.checkpoint kwargs (None = no checkpointing).
        # Checkpointing inside forward keeps parameter and state-dict names official.
        self.checkpoint_kwargs: dict | None = None

    def forward(
        self,
        x: Tensor,
        emb: Tensor,
        adaln_lora: Tensor,
        context: Tensor,
        rope_cos: Tensor,
        rope_sin: Tensor,
        cp: Layout | None = None,
    ) -> Tensor:
        if self.checkpoint_kwargs is not None and torch.is_grad_enabled():
            return checkpoint(
                self._forward,
                x,
                emb,
                adaln_lora,
                context,
                rope_cos,
                rope_sin,
                cp,
                use_reentrant=False,
                preserve_rng_state=False,
                **self.checkpoint_kwargs,
            )
        return self._forward(x, emb, adaln_lora, context, rope_cos, rope_sin, cp)

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

        def modulation(adaln: nn.Module) -> tuple[Tensor, ...]:
            return (adaln(emb) + adaln_lora).unsqueeze(2).chunk(3, dim=-1)

        shift, scale, gate = modulation(self.adaln_modulation_self_attn)
        h = self.layer_norm_self_attn(x) * (1 + scale) + shift
        h = self.self_attn(h.reshape(b, t * s, d), rope=(rope_cos, rope_sin), cp=cp)
        x = x + gate * h.view(b, t, s, d)

        shift, scale, gate = modulation(self.adaln_modulation_cross_attn)
        h = self.layer_norm_cross_attn(x) * (1 + scale) + shift
        h = self.cross_attn(h.reshape(b, t * s, d), context=context)
        x = x + gate * h.view(b, t, s, d)

        shift, scale, gate = modulation(self.adaln_modulation_mlp)
        h = self.layer_norm_mlp(x) * (1 + scale) + shift
        return x + gate * self.mlp(h)


class FinalLayer(nn.Module):
    def __init__(self, dim: int, out_features: int, adaln_lora_dim: int) -> None:
        super().__init__()
        self.layer_norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(dim, out_features, bias=False)
        self.adaln_modulation = _adaln(dim, adaln_lora_dim, 2)

    def forward(self, x: Tensor, emb: Tensor, adaln_lora: Tensor) -> Tensor:
        d = x.shape[-1]
        mod = self.adaln_modulation(emb) + adaln_lora[..., : 2 * d]
        shift, scale = mod.unsqueeze(2).chunk(2, dim=-1)
        return self.linear(self.layer_norm(x) * (1 + scale) + shift)


class MiniTrainDiT(nn.Module):
    """Predict2 Video2World DiT. Input channels: latent, condition mask, padding mask (§4.5.1-2)."""

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
        self.pos_embedder = RopePosition3D(
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
            Block(d, crossattn_emb_channels, num_heads, mlp_ratio, adaln_lora_dim)
            for _ in range(num_blocks)
        )
        out_features = patch_spatial * patch_spatial * patch_temporal * out_channels
        self.final_layer = FinalLayer(d, out_features, adaln_lora_dim)
        self.cp: ContextParallel | None = None  # enable_context_parallel
        self.init_weights()

    def enable_context_parallel(self, group=None) -> None:
        """Split each sample's latent frames across `group` (None: off; context_parallel.py):
        every rank of it passes the same whole inputs and gets the same whole output."""
        self.cp = context_parallel_of(group)

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
            for adaln in (
                block.adaln_modulation_self_attn,
                block.adaln_modulation_cross_attn,
                block.adaln_modulation_mlp,
            ):
                adaln[2].weight.zero_()
        self.final_layer.adaln_modulation[2].weight.zero_()

    def _input_channels(
        self, x: Tensor, cond_mask: Tensor | None, padding_mask: Tensor | None
    ) -> Tensor:
        b, _, t, h, w = x.shape
        if cond_mask is None:  # image batches: the condition channel is zeros (§4.5.1)
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
            if timesteps.shape[1] > 1:
                timesteps = cp.local(timesteps, dim=1)
        x = self.x_embedder(x)
        b, t_here, _, _, d = x.shape
        x = x.view(b, t_here, h * w, d)

        # Sinusoid in fp32, then the compute dtype (bf16 params need bf16 inputs without autocast).
        sinusoid = self.t_embedder[0](timesteps).to(x.dtype)
        emb, adaln_lora = self.t_embedder[1](sinusoid)
        emb = self.t_embedding_norm(emb)
        angles = self.pos_embedder.angles(t, h, w, x.device).unsqueeze(1)
        if cp is not None:
            angles = cp.local(angles, dim=0, per=h * w)
        cos, sin = torch.cos(angles), torch.sin(angles)
        context = crossattn_emb.to(x.dtype)

        for block in self.blocks:
            x = block(x, emb, adaln_lora, context, cos, sin, cp)
        x = self.final_layer(x, emb, adaln_lora)
        out = self._unpatchify(x.view(b, t_here, h, w, -1))
        return out if cp is None else cp.gather(out, dim=2, per=pt)

    def _unpatchify(self, x: Tensor) -> Tensor:
        """B T H W (p1 p2 t C) -> B C (T t) (H p1) (W p2): channel innermost (§4.5.8)."""
        b, t, h, w, _ = x.shape
        p, pt, c = self.patch_spatial, self.patch_temporal, self.out_channels
        x = x.view(b, t, h, w, p, p, pt, c).permute(0, 7, 1, 6, 2, 4, 3, 5)
        return x.reshape(b, c, t * pt, h * p, w * p)
