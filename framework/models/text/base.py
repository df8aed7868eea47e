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


def needs_encoder(texts: Sequence[str], empty_prompt: str = "zeros") -> bool:
    """Whether embedding `texts` needs the text encoder: not when every text is empty under
    "zeros" (the all-zero embedding has no text in it, only a shape)."""
    return check_empty_prompt(empty_prompt) == "encode" or any(texts)


def no_text(
    n: int, shape: tuple[int, int], device: torch.device | str | None = None
) -> tuple[Tensor, Tensor]:
    """The all-zero embeddings [n, tokens, width] (float32) and lengths [n] (0) of `n` empty
    prompts under "zeros"; `shape` is (tokens, width), e.g. `WorldModel.no_text_shape()`."""
    tokens, width = shape
    emb = torch.zeros(n, tokens, width, device=device)
    return emb, torch.zeros(n, dtype=torch.int64, device=device)


def declared_dim(spec: Any) -> int | None:
    """The embedding width a `model.text_encoder` declares without being built or read: a config
    node's or an encoder object's plain `dim` (a T5 folder string or a Reason1 encoder, whose
    width is in its checkpoint's files, declare none)."""
    if isinstance(spec, (str, Path)) or spec is None:
        return None
    if hasattr(spec, "keys"):  # a config node
        dim = spec.get("dim")
    else:  # an object: its own attribute only, not a property that reads files
        dim = vars(spec).get("dim") if hasattr(spec, "__dict__") else None
    return dim if isinstance(dim, int) and not isinstance(dim, bool) else None


def net_text_width(net: Any) -> int | None:
    """The width of the text embeddings `net` takes, when it declares one: a Predict2.5 net's
    projection input (`crossattn_proj_in_channels`: Reason1's features, or T5's 1024), else the
    cross-attention's context width (`crossattn_emb_channels`: T5's 1024 for Predict1/2)."""
    proj = getattr(net, "crossattn_proj", None)
    if isinstance(proj, torch.nn.Sequential):
        width = getattr(proj[0], "in_features", None)
    else:
        width = getattr(net, "crossattn_emb_channels", None)
    return width if isinstance(width, int) and not isinstance(width, bool) else None


def encode_texts(
    encoder: Any,
    texts: Sequence[str],
    empty_prompt: str = "zeros",
    no_text_shape: tuple[int, int] | None = None,
    device: torch.device | str | None = None,
) -> tuple[Tensor, Tensor | None]:
    """(embeddings [B, L, D], lengths [B] or None) of `texts` through `encoder` (an object with
    `encode(prompts)` or a callable returning embeddings). With `empty_prompt="zeros"` each
    empty text gives an all-zero row of the same shape (length 0); with "encode" it is encoded
    like any other text. Training and generation both embed through here, so an empty prompt is
    the same thing in both. When no text needs the encoder (`needs_encoder`) and
    `no_text_shape` (tokens, width) is given, the zeros are made on `device` without calling the
    encoder, which may then be None: a model trained on zero text needs none to generate."""
    if no_text_shape is not None and not needs_encoder(texts, empty_prompt):
        return no_text(len(texts), no_text_shape, device)
    zeros = check_empty_prompt(empty_prompt) == "zeros"
    if encoder is None:
        raise ValueError(
            "prompts need a text encoder but none is configured; set model.text_encoder (a T5 "
            "folder or a text-encoder node) or give only empty prompts with "
            "model.empty_prompt='zeros'."
        )
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
