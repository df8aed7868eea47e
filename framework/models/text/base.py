"""Text encoders as components of a world model.

A text encoder turns prompts into the embeddings the net cross-attends to:

    encode(prompts) -> (embeddings [B, max_length, dim] float, lengths [B] int64)
    dim, max_length

Implementations: T5 (Predict1/Predict2, t5.py) and Reason1 (Predict2.5, reason1.py); a family or
a test adds its own by writing a class with these three members. A config names one with
`model.text_encoder=L(Class)(...)` (or, as before, a T5 folder path as a string). Encoders build
their weights on first use, so a training run whose dataset has precomputed embeddings never
loads them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor


@runtime_checkable
class TextEncoder(Protocol):
    dim: int
    max_length: int

    def encode(self, prompts: Sequence[str]) -> tuple[Tensor, Tensor]: ...


def build_text_encoder(spec: Any, device: torch.device | str | None = None) -> TextEncoder | None:
    """The encoder a config's `model.text_encoder` names: None; a T5 folder or hub id (string,
    the older spelling); a config node (instantiated here); or an encoder object (returned)."""
    if spec is None or spec == "":
        return None
    if isinstance(spec, (str, Path)):
        from framework.models.text.t5 import T5TextEncoder

        return T5TextEncoder(spec, device=device)
    if hasattr(spec, "encode"):
        return spec
    from framework.config import instantiate

    enc = instantiate(spec)
    if device is not None and hasattr(enc, "to_device"):
        enc.to_device(device)
    return enc


def fit_length(emb: Tensor, length: int) -> Tensor:
    """Zero-pad or cut [B, N, D] embeddings to [B, length, D]."""
    if emb.shape[1] >= length:
        return emb[:, :length]
    return torch.nn.functional.pad(emb, (0, 0, 0, length - emb.shape[1]))
