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


# What an empty prompt becomes (`model.empty_prompt`), in training and at generation alike:
# "zeros" the all-zero embedding, the "no text" a caption-dropped sample and a dataset with
# `text="none"` give (Predict2's action recipe feeds zeros in both: cosmos-predict2
# `pipelines/video2world_action.py`, `_get_data_batch_input`); "encode" the encoder's embedding
# of "", what upstream's Predict2.5 action recipe trains on (Bridge's `ai_caption=""` embedded
# online) and generates with (its action inference embeds prompt="" online;
# docs/upstream/cosmos_predict2_5.md §2.4, §6.5).
EMPTY_PROMPT_MODES = ("zeros", "encode")


def check_empty_prompt(mode: str) -> str:
    if mode not in EMPTY_PROMPT_MODES:
        raise ValueError(
            f"model.empty_prompt={mode!r} is unknown; use 'zeros' (the all-zero no-text "
            "embedding) or 'encode' (the text encoder's embedding of the empty prompt)."
        )
    return mode


def encode_texts(
    encoder: Any, texts: Sequence[str], empty_prompt: str = "zeros"
) -> tuple[Tensor, Tensor | None]:
    """(embeddings [B, L, D], lengths [B] or None) of `texts` through `encoder` (an object with
    `encode(prompts)` or a callable returning embeddings). With `empty_prompt="zeros"` each
    empty text gives an all-zero row of the same shape (length 0); with "encode" it is encoded
    like any other text. Training and generation both embed through here, so an empty prompt is
    the same thing in both."""
    zeros = check_empty_prompt(empty_prompt) == "zeros"
    given = ["-" if zeros and not t else t for t in texts]  # "-": any text, for the shape
    out = encoder.encode(given) if hasattr(encoder, "encode") else encoder(given)
    emb, lengths = out if isinstance(out, tuple) else (out, None)
    empty = [zeros and not t for t in texts]
    if any(empty):
        mask = torch.tensor(empty, device=emb.device)
        emb = emb.masked_fill(mask[:, None, None], 0)
        if lengths is not None:
            lengths = lengths.masked_fill(mask.to(lengths.device), 0)
    return emb, lengths
