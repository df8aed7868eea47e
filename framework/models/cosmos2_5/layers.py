"""Predict2.5's fp32 islands (docs/upstream/cosmos_predict2_5.md §1.2 item 5): upstream runs the
timestep MLP, every adaLN modulation and the final layer inside `autocast(float32)`, so with bf16
weights they compute in fp32 on the weights' bf16 values. Everything else is the shared DiT layer
(framework/models/dit/)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def fp32_linear(layer: nn.Linear, x: Tensor) -> Tensor:
    """`layer(x)` in float32 with autocast off, whatever the parameter dtype."""
    with torch.autocast(x.device.type, enabled=False):
        bias = None if layer.bias is None else layer.bias.float()
        return F.linear(x.float(), layer.weight.float(), bias)


def modulation(head: nn.Sequential, emb: Tensor, adaln_lora: Tensor, n: int) -> tuple[Tensor, ...]:
    """n fp32 chunks of head(emb) + adaln_lora[..., :n D] for an adaLN-LoRA head (SiLU, D -> lora,
    lora -> n D at indices 0, 1, 2)."""
    d = emb.shape[-1]
    hidden = fp32_linear(head[1], F.silu(emb.float()))
    return (fp32_linear(head[2], hidden) + adaln_lora[..., : n * d].float()).chunk(n, dim=-1)
