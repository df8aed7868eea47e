"""Long action-conditioned rollouts, chunk by chunk, as upstream's action inference
(cosmos-transfer2.5 `cosmos_transfer2/_src/predict2/action/inference/inference.py` L340-364 at
2ff49d0, the Predict2.5 action code it vendors; docs/upstream/cosmos_predict2_5.md §6.5).

A model generates one clip of `pixel_frames(state_t)` frames from one given frame and the
`pixel_frames(state_t) - 1` actions between them: that many actions are one chunk (12 for the
Bridge recipes). Given more actions, chunk k starts from the last frame chunk k-1 generated
(one conditional frame), takes actions [k c, (k + 1) c) and seed `seed + k c` (upstream uses the
chunk's start index as the seed, so our default --seed 0 gives upstream's seeds); the chunks are
stitched without repeating the frame two chunks share (upstream drops each later chunk's first
frame, the re-generated conditioning frame). Actions after the last whole chunk are not rolled
out, with a warning, as upstream skips an incomplete chunk.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from framework.config import ConfigError


def add_options(p: argparse.ArgumentParser) -> None:
    """video2world's (and best-of-N's) action options."""
    a = p.add_argument
    a(
        "--actions",
        default=None,
        help="robot actions to roll out for an action-conditioned model, one per frame "
        "transition: .npy or .json [T, D], a Bridge annotation .json, or DATASET_DIR:EPISODE of "
        "a LeRobot folder (normalized as the training data); more than one chunk are rolled out "
        "chunk by chunk from the input's first frame into one video",
    )
    a(
        "--chunk_size",
        type=int,
        default=None,
        help="actions (= new frames) per chunk of an action rollout (default: the model's clip, "
        "12 for the Bridge recipes; a multiple of the tokenizer's time stride)",
    )
    a(
        "--num_chunks",
        type=int,
        default=None,
        help="chunks to roll out (default: every whole chunk of the actions; upstream's "
        "--single_chunk is 1)",
    )


def check_options(args: argparse.Namespace) -> None:
    for flag in ("chunk_size", "num_chunks"):
        value = getattr(args, flag, None)
        if value is not None and value < 1:
            raise ConfigError(f"--{flag} {value}: use 1 or more.")


def takes_actions(model: Any) -> bool:
    return "actions" in getattr(getattr(model, "family", None), "conditions", ())


def chunk_size(model: Any) -> int:
    """Actions per chunk: one per frame transition of the clip the model generates."""
    return int(model.tokenizer.pixel_frames(model.state_t)) - 1


def set_chunk_size(model: Any, actions: int) -> None:
    """Make `model` generate clips of `actions` + 1 frames (upstream's --chunk_size): its
    state_t becomes actions / temporal compression + 1 latent frames."""
    k = int(model.tokenizer.temporal_compression)
    if actions < k or actions % k:
        raise ConfigError(
            f"--chunk_size {actions} is not a positive multiple of the tokenizer's time stride "
            f"{k}; use {k}, {2 * k}, ... ({chunk_size(model)} is the model's own)."
        )
    model.state_t = actions // k + 1


def plan_chunks(
    num_actions: int, chunk: int, num_chunks: int | None = None
) -> tuple[list[int], int]:
    """(start index of each chunk, number of trailing actions left out)."""
    if num_actions < chunk:
        raise ConfigError(
            f"the model generates {chunk + 1} frames and needs {chunk} actions, but "
            f"{num_actions} were given; pass a longer action sequence."
        )
    whole = num_actions // chunk
    if num_chunks is not None:
        if not 1 <= num_chunks <= whole:
            raise ConfigError(
                f"--num_chunks {num_chunks}: the {num_actions} actions fill {whole} chunk(s) of "
                f"{chunk}; use 1 to {whole}."
            )
        whole = num_chunks
    return [k * chunk for k in range(whole)], num_actions - whole * chunk


def generate_rollout(
    model: Any,
    first: Tensor,
    text_emb: Any,
    neg_text_emb: Any,
    conditions: Mapping[str, Tensor],
    *,
    seed: int = 0,
    num_conditional_frames: int = 1,
    chunk: int | None = None,
    num_chunks: int | None = None,
    log: Callable[[str], None] = print,
    **generate: Any,
) -> Tensor:
    """uint8 video [B, 3, 1 + n c, H, W]: `model.generate` chunk by chunk over
    `conditions["actions"]` [B, T_a, D] (n whole chunks of c actions; `chunk` overrides the
    model's c), each chunk from the previous chunk's last frame. A model that takes no actions
    generates one clip. `text_emb`, `neg_text_emb` and `generate` (guidance, steps, ...) go to
    every `WorldModel.generate` call unchanged."""
    actions = conditions.get("actions")
    if actions is None or not takes_actions(model):
        return model.generate(
            first,
            text_emb,
            neg_text_emb,
            num_conditional_frames=num_conditional_frames,
            seed=seed,
            conditions=conditions,
            **generate,
        )
    if chunk is not None:
        set_chunk_size(model, chunk)
    chunk = chunk_size(model)
    starts, left_out = plan_chunks(actions.shape[1], chunk, num_chunks)
    if left_out and num_chunks is None:
        log(
            f"warning: the last {left_out} of {actions.shape[1]} actions do not fill a chunk of "
            f"{chunk} and are not rolled out (as upstream's action inference)"
        )
    if len(starts) > 1 and num_conditional_frames != 1:
        raise ConfigError(
            f"a rollout of {len(starts)} chunks conditions each chunk on one frame; use "
            "--num_conditional_frames 1 (or --num_chunks 1)."
        )
    pieces, frame = [], first
    for start in starts:
        video = model.generate(
            frame,
            text_emb,
            neg_text_emb,
            num_conditional_frames=num_conditional_frames,
            seed=seed + start,
            conditions={**conditions, "actions": actions[:, start : start + chunk]},
            **generate,
        )
        # Frame 0 of a later chunk re-generates the frame it was given: keep the earlier one.
        pieces.append(video if not pieces else video[:, :, 1:])
        frame = video[:, :, -1:]
    return torch.cat(pieces, dim=2)
