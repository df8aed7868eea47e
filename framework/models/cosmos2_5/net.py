"""Cosmos-Predict2.5 Video2World DiT (upstream `MinimalV1LVGDiT` with the 2.5 settings) with the
official module names.

It is the shared `MinimalDiT` (framework/models/dit/minimal.py) with what 2.5 changes
(docs/upstream/cosmos_predict2_5.md §1.2): a text projection `crossattn_proj` (Linear with bias,
GELU) before the blocks, timesteps on upstream's 0..1000 scale times `timestep_scale`, and fp32
islands (timestep embedding, adaLN modulations, final layer; q and k already go through RoPE in
fp32 in the shared attention). Every parameter name equals the official key after `net.` (§1.5).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from framework.models.cosmos2_5.layers import fp32_linear, modulation
from framework.models.dit import minimal

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

# §1.1. Both sizes use RoPE ratios h/w 3, t 1 (the constructor's defaults) and the 100352 -> 1024
# text projection.
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


class Block(minimal.Block):
    """The shared block with its three modulations computed in fp32, then cast to x's dtype."""

    def modulation(
        self, head: nn.Module, emb: Tensor, adaln_lora: Tensor, x: Tensor
    ) -> tuple[Tensor, ...]:
        assert isinstance(head, nn.Sequential)
        return tuple(m.to(x.dtype).unsqueeze(2) for m in modulation(head, emb, adaln_lora, 3))


class FinalLayer(minimal.FinalLayer):
    """LayerNorm, modulation and Linear all in fp32; the velocity leaves as fp32."""

    def forward(self, x: Tensor, emb: Tensor, adaln_lora: Tensor) -> Tensor:
        shift, scale = (
            m.unsqueeze(2) for m in modulation(self.adaln_modulation, emb, adaln_lora, 2)
        )
        with torch.autocast(x.device.type, enabled=False):
            h = self.layer_norm(x.float()) * (1 + scale) + shift
        return fp32_linear(self.linear, h)


class Predict25DiT(minimal.MinimalDiT):
    """Predict2.5 Video2World DiT: latent + condition mask + padding mask in (§1.2 item 2),
    timesteps [B], [B,1] or [B,T] on 0..1000 (item 3), text of `crossattn_proj_in_channels`
    (item 4); velocity out in fp32."""

    block_class = Block
    final_layer_class = FinalLayer

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
        config = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        shared = {k: v for k, v in config.items() if k not in _OWN_ARGS}
        super().__init__(**shared)  # with this class's fp32-modulation Block and FinalLayer
        self.config = config
        self.timestep_scale = timestep_scale
        self.crossattn_proj = nn.Sequential(
            nn.Linear(crossattn_proj_in_channels, crossattn_emb_channels, bias=True), nn.GELU()
        )
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        """The shared upstream init; `crossattn_proj` keeps torch's default Linear init, as
        upstream's `init_weights` leaves it (§1.2 item 4). Only matters when training from
        scratch."""
        super().init_weights()
        proj = getattr(self, "crossattn_proj", None)
        if proj is not None:
            proj[0].reset_parameters()

    def embed_context(self, crossattn_emb: Tensor, dtype: torch.dtype) -> Tensor:
        want = self.crossattn_proj[0].in_features
        if crossattn_emb.shape[-1] != want:
            raise ValueError(
                f"the text embeddings have {crossattn_emb.shape[-1]} channels but this "
                f"Predict2.5 net projects {want} (Reason1 features: {REASON1_CHANNELS}); give it "
                "embeddings of its text encoder or set model.net.crossattn_proj_in_channels."
            )
        return self.crossattn_proj(crossattn_emb.to(dtype))

    def embed_time(self, timesteps: Tensor, dtype: torch.dtype, **conditions: Tensor):
        """(emb, adaln_lora) in fp32 from timesteps on 0..1000, scaled by `timestep_scale`."""
        if conditions:
            raise ValueError(
                f"{type(self).__name__} takes no conditioning input {sorted(conditions)}; "
                "remove it from the model's conditions or use a net that declares it."
            )
        sinusoid = self.t_embedder[0](timesteps * self.timestep_scale)  # fp32
        mlp = self.t_embedder[1]
        adaln_lora = fp32_linear(mlp.linear_2, F.silu(fp32_linear(mlp.linear_1, sinusoid)))
        return self.t_embedding_norm(sinusoid), adaln_lora


_OWN_ARGS = ("crossattn_proj_in_channels", "timestep_scale")
