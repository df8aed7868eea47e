"""Prompt embedding for a generation run: which texts a run embeds, embedding them with the
text encoder freed before the DiT loads, and building no encoder at all when every prompt is
empty under `empty_prompt="zeros"` (the model's `no_text_shape()` gives the zeros)."""

from __future__ import annotations

import gc
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from framework.config import ConfigError
from framework.inference import loading, prompts
from framework.models.text.base import needs_encoder

if TYPE_CHECKING:
    from framework.inference.batch import Item
    from framework.inference.settings import Settings


def prompt_texts(items: list[Item], s: Settings) -> list[str]:
    """The texts a run embeds: each item's prompt, and the negative prompt when guidance uses
    it (guidance 0 never runs the unconditional pass)."""
    return [s.prompt_prefix + it.prompt for it in items] + (
        [s.negative_prompt] if s.guidance else []
    )


def embed_prompts(
    text_encoder,
    items: list[Item],
    s: Settings,
    device,
    no_text_shape: tuple[int, int] | None = None,
) -> prompts.PromptEmbedder:
    """Embed every prompt up front, then free the encoder (T5-11B or Reason1-7B need not share
    the GPU with the DiT). `text_encoder` is the config's `model.text_encoder` (a T5 folder, a
    text-encoder config node) or an encoder object. With `no_text_shape` (the model's) and no
    text that needs the encoder (all empty under empty_prompt="zeros"), none is built: zeros."""
    texts = prompt_texts(items, s)
    if no_text_shape is not None and not needs_encoder(texts, s.empty_prompt):
        embed = prompts.PromptEmbedder(None, s.empty_prompt, no_text_shape)
        embed.embed_many(texts)
        return embed
    from framework.models.text import build_text_encoder

    path = loading.text_encoder_path(text_encoder)  # a missing T5 folder: one line, the fix
    encoder = build_text_encoder(path or text_encoder, device=device)
    if encoder is None:
        raise ConfigError(
            "the model has no text encoder, so prompts cannot be embedded; set "
            "model.text_encoder (a T5 folder or a text-encoder node)."
        )
    embed = prompts.PromptEmbedder(encoder, s.empty_prompt, no_text_shape)
    embed.embed_many(texts)
    embed.encoder = None
    del encoder
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return embed


def embed_and_build(
    cfg, items: list[Item], s: Settings, device, build: Callable[[], Any]
) -> tuple[prompts.PromptEmbedder, Any]:
    """(the prompts' embedder, the model `build()` makes). Prompts that need the text encoder
    are embedded first and the encoder freed before the DiT loads; when none does (every prompt
    empty under empty_prompt="zeros": Predict2's Bridge action recipe, the tiny action jobs),
    the model is built first and its `no_text_shape()` gives the zeros, so no encoder is built
    and none need be configured or downloaded."""
    text_encoder = cfg.model.get("text_encoder")
    if needs_encoder(prompt_texts(items, s), s.empty_prompt):
        embed = embed_prompts(text_encoder, items, s, device)
        return embed, build()
    model = build()
    return embed_prompts(text_encoder, items, s, device, model.no_text_shape()), model
