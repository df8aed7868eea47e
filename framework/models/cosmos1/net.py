"""Cosmos-Predict1 Video2World DiT (upstream `GeneralDIT` + `VideoExtendGeneralDIT`).

Every parameter and buffer name equals the official checkpoint key after stripping `net.`
(docs/upstream/cosmos_predict1.md §4.4), so official files load strictly. Shapes, formulas and
defaults follow §4.1-§4.3; block config `FA-CA-MLP` with adaLN-LoRA, as in every released model.

Decisions (docs/upstream/cosmos_predict1.md §9 item 1, Appendix B):

- `extra_per_block_abs_pos_emb` defaults to True (learnable, §4.3): the released 7B/14B
  Video2World checkpoints carry `extra_pos_embedder.pos_emb_{h,w,t}`, and upstream's instruction
  run dropped them silently through a non-strict load, so its post-trained model differs from the
  base at step 0. Here the base checkpoint's embedding is loaded and used in training and
  inference alike. With False, loading a file that has those keys fails with a message naming
  the two fixes (build with True, or drop them explicitly with `ignore=("extra_pos_embedder.*",)`
  to reproduce upstream's instruction model); nothing is dropped silently.
- `pos_embedder.seq` is kept as the persistent buffer official files carry, so our checkpoints
  keep the official layout; RoPE positions are computed from `arange` (equal values), so a net
  materialised from the meta device computes the same before its buffers are filled.
- fps: temporal RoPE positions are t * 24 / fps (§4.3). fps=None means 24, i.e. positions t,
  which is what diffusers does for None and what upstream does for single images (T = 1). fps may
  be a float or a per-sample tensor [B] / [B, 1]; upstream takes the batch's first value and
  asserts it is uniform, which per-sample positions reproduce whenever that assertion holds.
- Timesteps are per sample ([B] or [B, 1], c_noise = 0.25 ln sigma, §3.4): upstream embeds
  `timesteps.flatten()` and modulates every token of a sample alike. EDM preconditioning is the
  objective's; the net returns the raw output F.
- `in_channels` counts latent channels only (16); the net concatenates the condition mask and
  the padding mask itself, so the patch embed sees 18 channels (72 features), as upstream's
  in_channels = 17 plus `concat_padding_mask`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from framework.models.cosmos1.position import LearnablePosEmbAxis, VideoRopePosition3DEmb
from framework.models.dit.context_parallel import Layout
from framework.models.dit.embeddings import PatchEmbed, TimestepEmbedding, Timesteps
from framework.models.dit.layers import MLP, CheckpointedUnit, RMSNorm, adaln, qk_attention
from framework.models.dit.video_dit import VideoDiT

# TransformerEngine adds `_extra_state` entries to official files (§4.4); both official loaders
# skip them, and they hold no weights.
IGNORED_CHECKPOINT_KEYS: tuple[str, ...] = ("*_extra_state",)

# §4.1: released base Video2World models. Extra pos-emb ratios are unused by the learnable
# embedding, so they are not parameters here.
SIZES: dict[str, dict] = {
    "7B": dict(
        model_channels=4096,
        num_blocks=28,
        num_heads=32,
        rope_h_extrapolation_ratio=1.0,
        rope_w_extrapolation_ratio=1.0,
        rope_t_extrapolation_ratio=2.0,
    ),
    "14B": dict(
        model_channels=5120,
        num_blocks=36,
        num_heads=40,
        rope_h_extrapolation_ratio=2.0,
        rope_w_extrapolation_ratio=2.0,
        rope_t_extrapolation_ratio=2.0,
    ),
}


def net_config(size: str) -> dict:
    """Constructor kwargs of `GeneralDIT` for an official size ("7B", "14B")."""
    if size not in SIZES:
        raise ValueError(f"Unknown Cosmos-Predict1 size {size!r}; use one of {sorted(SIZES)}.")
    return dict(SIZES[size])


class Attention(nn.Module):
    """Bias-free attention; per-head RMSNorm on q and k; no mask (§4.2 step 6). Official layout:
    to_q/to_k = (Linear, RMSNorm), to_v = (Linear, Identity), to_out = (Linear, Dropout)."""

    def __init__(self, query_dim: int, context_dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads, self.head_dim = num_heads, query_dim // num_heads
        self.to_q = nn.Sequential(
            nn.Linear(query_dim, query_dim, bias=False), RMSNorm(self.head_dim, eps=1e-6)
        )
        self.to_k = nn.Sequential(
            nn.Linear(context_dim, query_dim, bias=False), RMSNorm(self.head_dim, eps=1e-6)
        )
        self.to_v = nn.Sequential(nn.Linear(context_dim, query_dim, bias=False), nn.Identity())
        self.to_out = nn.Sequential(nn.Linear(query_dim, query_dim, bias=False), nn.Dropout(0.0))

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
        q = self.to_q[1](self.to_q[0](x).unflatten(-1, heads))
        k = self.to_k[1](self.to_k[0](context).unflatten(-1, heads))
        v = self.to_v[1](self.to_v[0](context).unflatten(-1, heads))
        return self.to_out(qk_attention(q, k, v, rope, cp))


class VideoAttn(nn.Module):
    """Holds the attention under `attn`, the official module path `block.attn.*`."""

    def __init__(self, query_dim: int, context_dim: int, num_heads: int) -> None:
        super().__init__()
        self.attn = Attention(query_dim, context_dim, num_heads)

    def forward(
        self,
        x: Tensor,
        context: Tensor | None = None,
        rope: tuple[Tensor, Tensor] | None = None,
        cp: Layout | None = None,
    ) -> Tensor:
        return self.attn(x, context, rope, cp)


class DITBuildingBlock(CheckpointedUnit):
    """One sub-block ("fa" self-attention, "ca" cross-attention or "mlp") with its own adaLN-LoRA
    modulation: x + gate * f(LN(x) * (1 + scale) + shift) (§4.2 step 6).

    It is the unit of activation checkpointing, compile and FSDP2 (upstream FSDP-wraps this
    class, §4.1), so recompute, compiled graph and all-gather boundaries coincide.
    """

    def __init__(
        self,
        kind: str,
        dim: int,
        context_dim: int,
        num_heads: int,
        mlp_ratio: float,
        adaln_lora_dim: int,
    ) -> None:
        super().__init__()
        self.kind = kind
        if kind == "fa":
            self.block: nn.Module = VideoAttn(dim, dim, num_heads)
        elif kind == "ca":
            self.block = VideoAttn(dim, context_dim, num_heads)
        elif kind == "mlp":
            self.block = MLP(dim, int(dim * mlp_ratio))
        else:
            raise ValueError(f"Unknown sub-block kind {kind!r}; use 'fa', 'ca' or 'mlp'.")
        self.norm_state = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.adaLN_modulation = adaln(dim, adaln_lora_dim, 3)
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
        """x [B, L, D]; emb [B, D]; adaln_lora [B, 3D]; context [B, M, C]. Under context
        parallel L counts this rank's tokens and `cp` is the layout."""
        mod = (self.adaLN_modulation(emb) + adaln_lora).unsqueeze(1)
        shift, scale, gate = mod.chunk(3, dim=-1)
        h = self.norm_state(x) * (1 + scale) + shift
        if self.kind == "fa":
            h = self.block(h, rope=(rope_cos, rope_sin), cp=cp)
        elif self.kind == "ca":
            h = self.block(h, context=context)
        else:
            h = self.block(h)
        return x + gate * h


class GeneralDITTransformerBlock(nn.Module):
    """`blocks.block{i}`: adds the extra position embedding, then FA, CA, MLP (§4.2 step 6)."""

    def __init__(
        self, dim: int, context_dim: int, num_heads: int, mlp_ratio: float, adaln_lora_dim: int
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            DITBuildingBlock(kind, dim, context_dim, num_heads, mlp_ratio, adaln_lora_dim)
            for kind in ("fa", "ca", "mlp")
        )

    def forward(
        self,
        x: Tensor,
        emb: Tensor,
        adaln_lora: Tensor,
        context: Tensor,
        rope_cos: Tensor,
        rope_sin: Tensor,
        extra_pos: Tensor | None,
        cp: Layout | None = None,
    ) -> Tensor:
        if extra_pos is not None:
            x = x + extra_pos
        for block in self.blocks:
            x = block(x, emb, adaln_lora, context, rope_cos, rope_sin, cp)
        return x


class FinalLayer(nn.Module):
    def __init__(self, dim: int, out_features: int, adaln_lora_dim: int) -> None:
        super().__init__()
        self.norm_final = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(dim, out_features, bias=False)
        self.adaLN_modulation = adaln(dim, adaln_lora_dim, 2)

    def forward(self, x: Tensor, emb: Tensor, adaln_lora: Tensor) -> Tensor:
        d = x.shape[-1]
        mod = self.adaLN_modulation(emb) + adaln_lora[:, : 2 * d]
        shift, scale = mod.unsqueeze(1).chunk(2, dim=-1)
        return self.linear(self.norm_final(x) * (1 + scale) + shift)


class GeneralDIT(VideoDiT):
    """Predict1 Video2World DiT. Input channels: latent, condition mask, padding mask (§4.2)."""

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
        extra_per_block_abs_pos_emb: bool = True,
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
        self.adaln_lora_dim = adaln_lora_dim
        self.extra_per_block_abs_pos_emb = extra_per_block_abs_pos_emb
        d = model_channels
        len_h, len_w = max_img_h // patch_spatial, max_img_w // patch_spatial
        len_t = max_frames // patch_temporal
        # +1 condition-mask channel (VideoExtendGeneralDIT), +1 padding-mask channel (§4.1).
        embed_in = in_channels + 1 + int(concat_padding_mask)
        self.x_embedder = PatchEmbed(embed_in, d, patch_spatial, patch_temporal)
        self.pos_embedder = VideoRopePosition3DEmb(
            d // num_heads,
            rope_h_extrapolation_ratio,
            rope_w_extrapolation_ratio,
            rope_t_extrapolation_ratio,
            len_h,
            len_w,
            len_t,
        )
        if extra_per_block_abs_pos_emb:
            self.extra_pos_embedder = LearnablePosEmbAxis(d, len_h, len_w, len_t)
        self.t_embedder = nn.Sequential(Timesteps(d), TimestepEmbedding(d))
        self.blocks = nn.ModuleDict(
            {
                f"block{i}": GeneralDITTransformerBlock(
                    d, crossattn_emb_channels, num_heads, mlp_ratio, adaln_lora_dim
                )
                for i in range(num_blocks)
            }
        )
        out_features = patch_spatial * patch_spatial * patch_temporal * out_channels
        self.final_layer = FinalLayer(d, out_features, adaln_lora_dim)
        self.affline_norm = RMSNorm(d, eps=1e-6)  # (sic) official name
        self.cp = None
        self.init_weights()

    def units(self) -> list[nn.Module]:
        return list(self.sub_blocks())

    def sub_blocks(self) -> list[DITBuildingBlock]:
        """Every FA/CA/MLP sub-block in forward order (the checkpoint/compile/FSDP units)."""
        return [sub for block in self.blocks.values() for sub in block.blocks]

    @torch.no_grad()
    def init_weights(self) -> None:
        """Upstream GeneralDIT init: Xavier-uniform Linears, t_embedder Linears N(0, 0.02), each
        sub-block's last adaLN Linear at zero (the final layer's is not), extra position tables
        trunc-normal std 0.02, norm scales one, `pos_embedder.seq` its official value."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
            elif isinstance(module, RMSNorm):
                module.weight.fill_(1.0)
        for linear in (self.t_embedder[1].linear_1, self.t_embedder[1].linear_2):
            nn.init.normal_(linear.weight, std=0.02)
        for sub in self.sub_blocks():
            sub.adaLN_modulation[2].weight.zero_()
        if self.extra_per_block_abs_pos_emb:
            for table in (
                self.extra_pos_embedder.pos_emb_h,
                self.extra_pos_embedder.pos_emb_w,
                self.extra_pos_embedder.pos_emb_t,
            ):
                nn.init.trunc_normal_(table, std=0.02)
        self.pos_embedder.seq.copy_(self.pos_embedder.default_seq())

    def _check_inputs(
        self, x: Tensor, timesteps: Tensor, fps: float | Tensor | None
    ) -> tuple[Tensor, Tensor | None]:
        self._check_latent(x)
        b = x.shape[0]
        if timesteps.ndim == 2 and timesteps.shape[1] == 1:
            timesteps = timesteps[:, 0]
        if timesteps.ndim != 1 or timesteps.shape[0] != b:
            raise ValueError(
                f"timesteps must be [B] or [B, 1] with B={b} (one noise level per "
                f"sample); got {tuple(timesteps.shape)}."
            )
        if fps is None:
            return timesteps, None
        fps_t = torch.as_tensor(fps, dtype=torch.float32).reshape(-1)
        if fps_t.numel() not in (1, b):
            raise ValueError(
                f"fps must be a number or have one value per sample (B={b}); "
                f"got {fps_t.numel()} values."
            )
        return timesteps, fps_t

    def forward(
        self,
        x_B_C_T_H_W: Tensor,
        timesteps_B: Tensor,
        crossattn_emb: Tensor,
        fps: float | Tensor | None = None,
        padding_mask: Tensor | None = None,
        condition_video_input_mask_B_C_T_H_W: Tensor | None = None,
    ) -> Tensor:
        """Raw network output F [B, out_channels, T, H, W] in the dtype of x.

        x: c_in-scaled noisy latent [B, 16, T, H, W]; timesteps: c_noise [B] or [B, 1];
        crossattn_emb: T5 embeddings [B, M, 1024] (M >= 1, zero padding is attended, §9 item 4);
        fps: float, [B] or None (= 24); padding_mask: [B, 1, H', W'] at any resolution (zeros if
        None); condition mask: [B, 1, T, H, W] (zeros if None).
        """
        timesteps, fps_t = self._check_inputs(x_B_C_T_H_W, timesteps_B, fps)
        x = self._input_channels(x_B_C_T_H_W, condition_video_input_mask_B_C_T_H_W, padding_mask)
        p, pt = self.patch_spatial, self.patch_temporal
        t, h, w = x.shape[2] // pt, x.shape[3] // p, x.shape[4] // p  # the whole video's grid
        # Context parallel: this rank keeps its latent frames and slices the whole video's
        # position tables, so its tokens keep their global (t, h, w) positions.
        cp = self.cp.layout(t, h * w) if self.cp is not None else None
        if cp is not None:
            x = cp.local(x, dim=2, per=pt)
        x = self.x_embedder(x)
        b, t_here, _, _, d = x.shape
        x = x.reshape(b, t_here * h * w, d)

        # Sinusoid in fp32, then the compute dtype (bf16 params need bf16 inputs without autocast).
        sinusoid = self.t_embedder[0](timesteps).to(x.dtype)
        emb, adaln_lora = self.t_embedder[1](sinusoid)
        emb = self.affline_norm(emb)
        angles = self.pos_embedder.angles(t, h, w, x.device, fps_t).unsqueeze(2)
        if cp is not None:
            angles = cp.local(angles, dim=1, per=h * w)
        if angles.shape[0] == 1:
            angles = angles[0]  # [L, 1, d/2], shared by the batch
        cos, sin = torch.cos(angles), torch.sin(angles)
        extra_pos = None
        if self.extra_per_block_abs_pos_emb:
            extra_pos = self.extra_pos_embedder(t, h, w).to(x.dtype)
            if cp is not None:
                extra_pos = cp.local(extra_pos, dim=1, per=h * w)
        context = crossattn_emb.to(x.dtype)

        for block in self.blocks.values():
            x = block(x, emb, adaln_lora, context, cos, sin, extra_pos, cp)
        x = self.final_layer(x, emb, adaln_lora)
        out = self._unpatchify(x.view(b, t_here, h, w, -1))
        return out if cp is None else cp.gather(out, dim=2, per=pt)
