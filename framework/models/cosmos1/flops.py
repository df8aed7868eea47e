"""Analytic FLOPs of the Predict1 DiT, for MFU."""

from __future__ import annotations

from framework.models.cosmos1.net import GeneralDIT


def forward_flops(net: GeneralDIT, T: int, H: int, W: int, text_len: int = 512) -> float:
    """Forward FLOPs (2 per multiply-add) of one sample with latent size T x H x W: every Linear
    and the two attention matmuls (QK^T, PV); norms, RoPE and pointwise ops are left out.
    Modulation is per sample (one noise level, docs/upstream/cosmos_predict1.md §4.2), not per
    latent frame as in Predict2."""
    p, pt = net.patch_spatial, net.patch_temporal
    tokens = (T // pt) * (H // p) * (W // p)
    d, ctx, lora = net.model_channels, net.crossattn_emb_channels, net.adaln_lora_dim
    hidden = int(d * net.mlp_ratio)

    per_block = (
        4 * tokens * d * d  # FA q, k, v, out
        + 2 * tokens * tokens * d  # FA QK^T and PV
        + 2 * tokens * d * d  # CA q, out
        + 2 * text_len * ctx * d  # CA k, v
        + 2 * tokens * text_len * d  # CA QK^T and PV
        + 2 * tokens * d * hidden  # MLP
        + 3 * (d * lora + lora * 3 * d)  # adaLN-LoRA of the three sub-blocks
    )
    embed_in = net.x_embedder.proj[1].in_features
    out_features = net.final_layer.linear.out_features
    patch_embed = tokens * embed_in * d
    t_embedder = d * d + d * 3 * d
    final = d * lora + lora * 2 * d + tokens * d * out_features  # adaLN, then the Linear
    return 2.0 * (len(net.blocks) * per_block + patch_embed + t_embedder + final)


def flops_per_sample(net: GeneralDIT, T: int, H: int, W: int, text_len: int = 512) -> float:
    """Training FLOPs of one sample: forward plus backward, counted as 3x forward."""
    return 3.0 * forward_flops(net, T, H, W, text_len)
