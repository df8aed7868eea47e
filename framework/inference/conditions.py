"""Conditioning inputs beyond text and frames for generation, read from files.

An action-conditioned model (its family declares `conditions=("actions",)`) generates the rollout
of given robot actions: `video2world --actions FILE` or a batch item's `"actions": FILE`. A file is
`.npy` (float [T_a, D]) or `.json` (a list of T_a lists of D numbers), one action per frame
transition, already normalized as the training data was (docs/data.md). The model checks that
what it needs is there (WorldModel.batch_conditions).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from framework.config import ConfigError


def read_actions(path: str | Path) -> Tensor:
    """float32 [1, T_a, D] from an .npy or .json file; ConfigError naming the file otherwise."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"actions file {path} does not exist; pass an .npy or .json file.")
    try:
        if path.suffix == ".npy":
            arr = np.load(path, allow_pickle=False)
        elif path.suffix == ".json":
            arr = np.asarray(json.loads(path.read_text()), dtype=np.float32)
        else:
            raise ValueError(f"unknown suffix {path.suffix!r}")
    except (OSError, ValueError, TypeError) as err:
        raise ConfigError(
            f"actions file {path} cannot be read ({str(err).splitlines()[0]}); pass an .npy or "
            ".json file holding [T, D] numbers."
        ) from None
    if arr.ndim != 2 or not np.isfinite(arr).all():
        raise ConfigError(
            f"actions file {path} holds an array of shape {arr.shape}; it must be [T, D] of "
            "finite numbers (one action per frame transition)."
        )
    return torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))[None]
