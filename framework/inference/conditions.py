"""Conditioning inputs beyond text and frames for generation, read from files.

An action-conditioned model (its family declares `conditions=("actions",)`) generates the rollout
of given robot actions: `video2world --actions SOURCE` or a batch item's `"actions": SOURCE`, one
action per frame transition. SOURCE is
- `FILE.npy` (float [T_a, D]) or `FILE.json` (a list of T_a lists of D numbers), already
  normalized as the training data was (docs/data.md);
- a Bridge annotation `.json` (an object with per-frame `state` and `continuous_gripper_state`):
  its actions from frame 0 as the action recipes compute them (x20, upstream's inference too);
- `DATASET_DIR:EPISODE` for a LeRobot folder: that episode's actions from its first row,
  normalized with the dataset's stored statistics in the training config's mode
  (`data.dataset.action_norm`, `action_key`, `frame_stride`, `action_kind`; defaults min_max,
  "action", 1, auto).
The clip the model generates needs `pixel_frames(state_t) - 1` actions (one chunk); longer
sources are rolled out chunk by chunk (framework/inference/rollout.py), shorter ones fail naming
both numbers.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from framework.config import ConfigError


def read_actions(source: str | Path, dataset: Mapping[str, Any] | None = None) -> Tensor:
    """float32 [1, T_a, D] from an .npy/.json file, a Bridge annotation or a LeRobot episode
    (`DIR:EPISODE`); `dataset`: the training config's data.dataset node (its normalization);
    ConfigError naming the source otherwise."""
    lerobot = _lerobot_episode(str(source))
    if lerobot is not None:
        return _lerobot_actions(*lerobot, dataset or {})
    path = Path(source)
    if not path.is_file():
        raise ConfigError(
            f"actions file {path} does not exist; pass an .npy or .json file, a Bridge "
            "annotation or DATASET_DIR:EPISODE of a LeRobot folder."
        )
    try:
        if path.suffix == ".npy":
            arr = np.load(path, allow_pickle=False)
        elif path.suffix == ".json":
            data = json.loads(path.read_text())
            arr = _bridge_actions(path, data) if isinstance(data, dict) else data
            arr = np.asarray(arr, dtype=np.float32)
        else:
            raise ValueError(f"unknown suffix {path.suffix!r}")
    except (OSError, ValueError, TypeError) as err:
        raise ConfigError(
            f"actions file {path} cannot be read ({str(err).splitlines()[0]}); pass an .npy or "
            ".json file holding [T, D] numbers."
        ) from None
    return _checked(arr, str(path))


def _checked(arr: np.ndarray, where: str) -> Tensor:
    if arr.ndim != 2 or not np.isfinite(arr).all():
        raise ConfigError(
            f"actions {where} hold an array of shape {arr.shape}; it must be [T, D] of "
            "finite numbers (one action per frame transition)."
        )
    return torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))[None]


def _bridge_actions(path: Path, data: dict) -> np.ndarray:
    """The actions of a Bridge annotation from frame 0, as BridgeActionDataset computes them."""
    from framework.data.action_norm import ActionNorm
    from framework.data.bridge_actions import BRIDGE_ACTION_SCALE, bridge_actions, read_states

    if "state" not in data:
        raise ValueError("a JSON object needs per-frame 'state' (a Bridge annotation)")
    state, gripper = read_states(path)
    return ActionNorm("scale", scale=BRIDGE_ACTION_SCALE)(bridge_actions(state, gripper))


def _lerobot_episode(source: str) -> tuple[Path, int] | None:
    """(root, episode) when `source` is DIR:EPISODE of a folder with meta/info.json."""
    root, sep, episode = source.rpartition(":")
    if not sep or not episode.isdigit() or not (Path(root) / "meta" / "info.json").is_file():
        return None
    return Path(root), int(episode)


def _lerobot_actions(root: Path, episode: int, dataset: Mapping[str, Any]) -> Tensor:
    from framework.data.lerobot import LeRobotDataset

    key = dataset.get("action_key") or "action"
    mode = dataset.get("action_norm") or "min_max"
    stride = int(dataset.get("frame_stride") or 1)
    kind = dataset.get("action_kind") or "auto"
    ds = LeRobotDataset(
        root, action_key=key, action_norm=mode, frame_stride=stride, action_kind=kind
    )
    episodes = {ep.index: ep for ep in ds.meta.episodes}
    if episode not in episodes:
        raise ConfigError(
            f"{root} has no episode {episode} (it has {len(episodes)}, from "
            f"{min(episodes, default=0)}); pass DATASET_DIR:EPISODE with one of them."
        )
    # As training windows get them: relative dimensions summed over a stride's rows.
    acts = ds.episode_actions(episode)
    return _checked(np.asarray(acts, dtype=np.float32), f"of {root} episode {episode}")
