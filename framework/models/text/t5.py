"""T5 text encoder (transformers) and the official embedding pickle format
(upstream/cosmos_predict2.md §6.3).

Upstream embeds captions with the encoder of `google-t5/t5-11b` ("T5-XXL", d_model 1024) padded to
512 tokens, zeroing every position past the true length (EOS included in the length).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from framework.data.safe_load import save_t5_pickle

DEFAULT_HUB_ID = "google-t5/t5-11b"
MAX_LENGTH = 512  # NUM_EMBEDDING_PADDING_TOKENS, upstream/cosmos_predict2.md §6.3
DOWNLOAD_HINT = "python -m data_prep.t5_embed --download"


def default_local_dir(hub_id: str = DEFAULT_HUB_ID) -> Path:
    """Where the download command puts a hub checkpoint: checkpoints/<org>/<name> (as upstream)."""
    return Path("checkpoints") / hub_id


def resolve_t5_dir(path_or_hub_id: str | Path) -> Path:
    """A local folder for `path_or_hub_id`; raises naming the download command when missing."""
    path = Path(path_or_hub_id)
    for candidate in (path, default_local_dir(str(path_or_hub_id))):
        if (candidate / "config.json").is_file():
            return candidate
    raise FileNotFoundError(
        f"T5 encoder {path_or_hub_id} not found (looked in {path} and "
        f"{default_local_dir(str(path_or_hub_id))}); download it with {DOWNLOAD_HINT} "
        f"--t5 {path_or_hub_id}"
    )


def download_t5(hub_id: str = DEFAULT_HUB_ID, local_dir: str | Path | None = None) -> Path:
    """Fetch the encoder checkpoint and tokenizer from the Hugging Face hub (resumable)."""
    from huggingface_hub import snapshot_download

    local_dir = Path(local_dir) if local_dir is not None else default_local_dir(hub_id)
    # Only the PyTorch weights and tokenizer: the TF/Flax/Rust copies of t5-11b add ~90 GB.
    snapshot_download(
        repo_id=hub_id,
        local_dir=str(local_dir),
        ignore_patterns=["*.h5", "*.msgpack", "*.ot", "onnx/*", "*.tflite"],
    )
    return local_dir


class T5TextEncoder:
    """`encode(prompts)` -> (embeddings [B, max_length, D] zeroed past each length, lengths [B]).
    Given a path, the folder is checked at construction (a missing encoder fails before any
    work); the weights load on the first `encode`."""

    def __init__(
        self,
        path_or_hub_id: str | Path = DEFAULT_HUB_ID,
        max_length: int = MAX_LENGTH,
        dtype: torch.dtype | str = torch.float32,
        device: str | torch.device | None = None,
    ) -> None:
        self.folder = resolve_t5_dir(path_or_hub_id)
        self.dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.max_length, self.device = max_length, torch.device(device)
        config = json.loads((self.folder / "config.json").read_text())
        self.dim = int(config["d_model"])
        self._model: Any = None  # built by _load on first use
        self._tokenizer: Any = None

    def to_device(self, device: str | torch.device) -> None:
        self.device = torch.device(device)
        if self._model is not None:
            self._model.to(self.device)

    def _load(self) -> None:
        from transformers import AutoTokenizer, T5EncoderModel

        folder = str(self.folder)
        self._tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        model: Any = T5EncoderModel.from_pretrained(folder, local_files_only=True, dtype=self.dtype)
        self._model = model.to(self.device).eval().requires_grad_(False)

    @property
    def model(self):
        if self._model is None:
            self._load()
        return self._model

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            self._load()
        return self._tokenizer

    @torch.no_grad()
    def encode(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        # Padding to the longest prompt instead of to 512 (upstream) gives the same outputs at the
        # valid positions (masked attention; tests/test_text.py) at a fraction of the cost.
        tokens = self.tokenizer(
            list(prompts),
            padding="longest",
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        ids = tokens["input_ids"].to(self.device)
        mask = tokens["attention_mask"].to(self.device)
        hidden = self.model(input_ids=ids, attention_mask=mask).last_hidden_state
        lengths = mask.sum(dim=1)
        out = torch.zeros(
            len(prompts), self.max_length, self.dim, dtype=hidden.dtype, device=self.device
        )
        out[:, : hidden.shape[1]] = hidden * mask.unsqueeze(-1).to(hidden.dtype)
        return out, lengths


def embedding_to_pickle(emb: torch.Tensor | np.ndarray, length: int, path: str | Path) -> None:
    """Write emb[:length] in the official format (a list with one float16 [n_tokens, D] array)."""
    if isinstance(emb, torch.Tensor):
        emb = emb[:length].float().cpu().numpy()
    save_t5_pickle(np.asarray(emb)[:length], path)
