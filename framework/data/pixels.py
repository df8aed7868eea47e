"""Pixel value conventions shared by data, tokenizers and inference: uint8 [0, 255] frames and
the [-1, 1] floats the tokenizers take. Here, in the data layer, so that data never imports the
model layer."""

from __future__ import annotations

import torch
from torch import Tensor


def to_unit_range(video: Tensor) -> Tensor:
    """uint8 [0,255] -> float32 x/127.5 - 1 (upstream/cosmos_predict2.md §4.1 step 1); float input
    is passed through."""
    if video.dtype == torch.uint8:
        return video.float() / 127.5 - 1.0
    if not video.is_floating_point():
        raise TypeError(f"Video must be uint8 or float in [-1, 1]; got dtype {video.dtype}.")
    return video


def to_uint8(video: Tensor) -> Tensor:
    """[-1,1] float -> uint8 with round-half-up, as the upstream export does
    (upstream/cosmos_predict2.md §7.1)."""
    return ((video.float().clamp(-1, 1) + 1) * 127.5 + 0.5).floor().clamp(0, 255).to(torch.uint8)
