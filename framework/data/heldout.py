"""Held-out items: what eval, the sample hook and `make generate` condition on.

A dataset exposes `heldout_items(num_items, num_frames) -> list[HeldOutItem]`: the first frames
of a few fixed clips (resized and strided as in training), their caption and its embedding. Each
dataset decides where its held-out split is (GR1 layout: a `val/` folder when present; Bridge
layout: `annotation/val`); the callers know no folder names. Items come in a fixed order, so every
run sees the same ones; an unreadable clip is skipped with a warning, not fatal.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from framework.data.safe_load import UnsafeFileError, load_t5_pickle
from framework.data.video import ClipReader, VideoError

log = logging.getLogger(__name__)


@dataclass
class HeldOutItem:
    name: str
    video: Tensor  # uint8 [1,3,T,H,W]: the first T frames of the clip
    text_emb: Tensor | None  # float32 [1,L,D]: the stored embedding (not padded), or None
    prompt: str  # the caption, "" when the dataset has none
    fps: float  # after the frame stride
    source: str = ""  # the video file, for messages and reports
    # The clip's inputs beyond text and frames that an action-conditioned model needs, e.g.
    # {"actions": float32 [1, T_a, D]}; passed to `WorldModel.generate(conditions=...)`.
    conditions: dict[str, Tensor] = field(default_factory=dict)

    @property
    def text(self) -> Tensor | list[str]:
        """What `WorldModel.embed_text` takes: the stored embedding when the dataset has one,
        else the caption (a model with an online text encoder embeds it)."""
        return self.text_emb if self.text_emb is not None else [self.prompt]


def read_frames(
    video: str | Path, num_frames: int, size: tuple[int, int] | None, stride: int = 1
) -> tuple[Tensor, float]:
    """uint8 [1,3,num_frames,H,W] (frames 0, stride, ...) and the fps after the stride."""
    with ClipReader(video, size=size, mode="resize") as reader:
        fps = reader.fps / stride
        have = 1 + (reader.num_frames - 1) // stride
        frames = reader.read(0, min(num_frames, have), stride)
    if frames.shape[0] < num_frames:
        raise VideoError(
            f"{video} gives {frames.shape[0]} frames at stride {stride} but {num_frames} are "
            "needed; use longer held-out clips or a smaller state_t."
        )
    return torch.from_numpy(frames).permute(3, 0, 1, 2)[None].contiguous(), fps


def load_items(
    candidates: Iterable[Any],
    num_items: int,
    load: Callable[[Any], HeldOutItem],
    where: str,
) -> list[HeldOutItem]:
    """The first `num_items` candidates that load; bad ones are skipped with a warning."""
    items = []
    for candidate in candidates:
        if len(items) == num_items:
            break
        try:
            items.append(load(candidate))
        except (VideoError, UnsafeFileError, OSError, ValueError) as err:
            log.warning("held-out item skipped: %s", str(err).splitlines()[0])
    if not items:
        raise FileNotFoundError(
            f"{where} has no readable held-out clip with an embedding; check it with "
            "python -m data_prep.validate, or point the dataset at another folder."
        )
    return items


def embedding(path: str | Path) -> Tensor:
    """A T5 pickle as float32 [1,L,D]."""
    emb = load_t5_pickle(path, dim=None)
    return torch.from_numpy(np.asarray(emb, dtype=np.float32))[None]


def build_dataset(dataset: DictConfig, dataset_dir: str | None = None) -> Any:
    """The config's dataset, optionally pointed at another folder (its held-out split is used).
    Held-out items always come from videos, so a latent cache is not opened."""
    node = OmegaConf.create(OmegaConf.to_container(dataset, resolve=True))
    if dataset_dir:
        node.dataset_dir = str(dataset_dir)
    if "latent_cache_dir" in node:
        node.latent_cache_dir = None
    from framework.config import instantiate

    return instantiate(node)


def heldout_of(dataset: Any, num_items: int, num_frames: int) -> list[HeldOutItem]:
    """`dataset.heldout_items(...)`, or one clear error when the dataset has no held-out split."""
    fn = getattr(dataset, "heldout_items", None)
    if fn is None:
        raise ValueError(
            f"{type(dataset).__name__} has no heldout_items(num_items, num_frames); add it to "
            "the dataset class (docs/architecture.md) or remove the sample/eval hooks."
        )
    return fn(num_items, num_frames)
