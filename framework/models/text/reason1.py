"""Cosmos-Reason1 as Predict2.5's text encoder (docs/upstream/cosmos_predict2_5.md §2).

Each caption becomes a two-turn chat (a fixed system text, the caption as the user turn), is
right-padded with the pad token or cut to 512 tokens, and runs through Qwen2.5-VL with no attention
mask (causal attention only, so pad positions carry states too). The 28 hidden states after the
embeddings (the last one after the final RMSNorm) are each normalised per token over channels,
(h - mean) / (std + 1e-8) with Bessel's std, and concatenated in layer order: [B, 512, 28 * 3584]
= [B, 512, 100352] for the 7B model. Loading and M-RoPE positions: framework/models/qwen_vl.py.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from framework.models.qwen_vl import load_qwen_vl, resolve

DEFAULT_HUB_ID = "nvidia/Cosmos-Reason1-7B"
SYSTEM_PROMPT = "You are a helpful assistant who will provide prompts to an image generator."
MAX_LENGTH = 512  # NUM_EMBEDDING_PADDING_TOKENS (§2.2)


def normalize(hidden: Tensor, eps: float = 1e-8) -> Tensor:
    """Per-token (h - mean) / (std + eps) over the channels, std with Bessel's correction."""
    mean = hidden.mean(dim=-1, keepdim=True)
    std = hidden.std(dim=-1, keepdim=True)
    return (hidden - mean) / (std + eps)


class Reason1TextEncoder:
    """`encode(prompts)` -> ([B, max_length, layers * hidden] features, lengths [B]); lengths
    count the chat's tokens before padding (at most max_length). Construction reads nothing (a
    config builds it on the meta device, and a run on precomputed embeddings never needs the
    weights); the folder is found on first use and the model loads on the first `encode`."""

    def __init__(
        self,
        path_or_hub_id: str | Path = DEFAULT_HUB_ID,
        max_length: int = MAX_LENGTH,
        dtype: torch.dtype | str | None = None,
        device: str | torch.device | None = None,
        system_prompt: str = SYSTEM_PROMPT,
    ) -> None:
        self.name = path_or_hub_id
        self.dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.max_length, self.system_prompt = int(max_length), system_prompt
        self._folder: Path | None = None
        self._model: Any = None  # built by _load on first use
        self._tokenizer: Any = None

    @property
    def folder(self) -> Path:
        """The checkpoint folder; QwenVLError naming the download command when it is missing."""
        if self._folder is None:
            self._folder = resolve(self.name, DEFAULT_HUB_ID, label="Reason1 text encoder")
        return self._folder

    def _text_config(self) -> dict:
        config = json.loads((self.folder / "config.json").read_text())
        return config.get("text_config") or config

    @property
    def num_layers(self) -> int:
        return int(self._text_config()["num_hidden_layers"])

    @property
    def dim(self) -> int:
        """Channels of the features: layers x hidden (28 x 3584 = 100352 for the 7B)."""
        return self.num_layers * int(self._text_config()["hidden_size"])

    def to_device(self, device: str | torch.device) -> None:
        self.device = torch.device(device)
        if self._model is not None:
            self._model.to(self.device)

    def _load(self) -> None:
        self._model, self._tokenizer = load_qwen_vl(
            self.folder, self.dtype, self.device, label="Reason1 text encoder"
        )
        self._model.requires_grad_(False)

    def token_ids(self, prompts: Sequence[str]) -> tuple[Tensor, Tensor]:
        """Input ids [B, max_length] (right-padded with the pad id, or cut) and true lengths."""
        if self._tokenizer is None:
            self._load()
        tok = self._tokenizer
        pad = tok.pad_token_id
        rows, lengths = [], []
        for prompt in prompts:
            chat = [
                {"role": "system", "content": self.system_prompt},
                {"role": "user", "content": prompt},
            ]
            ids = tok.apply_chat_template(
                chat, tokenize=True, add_generation_prompt=False, add_vision_id=False
            )
            if isinstance(ids, dict) or hasattr(ids, "keys"):  # transformers 5.x BatchEncoding
                ids = ids["input_ids"]
            ids = list(ids)[: self.max_length]
            lengths.append(len(ids))
            rows.append(ids + [pad] * (self.max_length - len(ids)))
        return torch.tensor(rows, dtype=torch.long), torch.tensor(lengths, dtype=torch.long)

    @torch.no_grad()
    def encode(self, prompts: Sequence[str]) -> tuple[Tensor, Tensor]:
        ids, lengths = self.token_ids(list(prompts))
        model = self._model
        out = model(input_ids=ids.to(self.device), output_hidden_states=True)
        states = out.hidden_states[1:]  # skip the embeddings (§2.3)
        if len(states) != self.num_layers:
            raise ValueError(
                f"the Reason1 model returned {len(states)} hidden states after the embeddings, "
                f"not {self.num_layers}; check the checkpoint's config."
            )
        feats = torch.cat([normalize(h.float()) for h in states], dim=-1)
        return feats, lengths.to(self.device)
