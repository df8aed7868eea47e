"""Analytic FLOPs of the Predict2.5 DiT, for MFU: the shared MinimalDiT count plus the text
projection, which runs once per sample on text_len tokens (100352 -> 1024: 0.1 GFLOP per token)."""

from __future__ import annotations

from framework.models.cosmos2_5.net import Predict25DiT
from framework.models.dit import flops as minimal


def forward_flops(net: Predict25DiT, T: int, H: int, W: int, text_len: int = 512) -> float:
    """Forward FLOPs (2 per multiply-add) of one sample with latent size T x H x W."""
    proj = net.crossattn_proj[0]
    return minimal.forward_flops(net, T, H, W, text_len) + 2.0 * (
        text_len * proj.in_features * proj.out_features
    )


def flops_per_sample(net: Predict25DiT, T: int, H: int, W: int, text_len: int = 512) -> float:
    """Training FLOPs of one sample: forward plus backward, counted as 3x forward."""
    return 3.0 * forward_flops(net, T, H, W, text_len)
