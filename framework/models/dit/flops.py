"""Analytic FLOPs of the MinimalDiT (Predict2; Predict2.5 adds its text projection), for MFU."""

from __future__ import annotations

from framework.models.dit.minimal import MinimalDiT


def forward_flops(net: MinimalDiT, T: int, H: int, W: int, text_len: int = 512) -> float:
    """Forward FLOPs (2 per multiply-add) of one sample with latent size T x H x W: every Linear
    and the two attention matmuls (QK^T, PV); norms and pointwise ops are left out."""
    p, pt = net.patch_spatial, net.patch_temporal
    frames, tokens = T // pt, (T // pt) * (H // p) * (W // p)
    d, ctx = net.model_channels, net.crossattn_emb_channels
    hidden = int(d * net.mlp_ratio)
    lora = net.final_layer.adaln_modulation[1].out_features

    per_block = (
        4 * tokens * d * d  # self q, k, v, out
        + 2 * tokens * tokens * d  # self QK^T and PV
        + 2 * tokens * d * d  # cross q, out
        + 2 * text_len * ctx * d  # cross k, v
        + 2 * tokens * text_len * d  # cross QK^T and PV
        + 2 * tokens * d * hidden  # mlp
        + 3 * frames * (d * lora + lora * 3 * d)  # adaLN-LoRA per sub-layer, per latent frame
    )
    embed_in = net.x_embedder.proj[1].in_features
    out_features = net.final_layer.linear.out_features
    outer = (
        tokens * embed_in * d  # patch embed
        + frames * (d * d + d * 3 * d)  # t_embedder
        + frames * (d * lora + lora * 2 * d)  # final adaLN
        + tokens * d * out_features  # final linear
    )
    return 2.0 * (len(net.blocks) * per_block + outer)


def flops_per_sample(net: MinimalDiT, T: int, H: int, W: int, text_len: int = 512) -> float:
    """Training FLOPs of one sample: forward plus backward, counted as 3x forward."""
    return 3.0 * forward_flops(net, T, H, W, text_len)
