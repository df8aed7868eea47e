"""Initialise a model from `checkpoint.load_path` (an official file or one of ours)."""

from __future__ import annotations

import fnmatch
import logging
from pathlib import Path

from omegaconf import DictConfig
from torch import nn

from framework.config import ConfigError
from framework.io import read_checkpoint
from framework.models.hub import download_hint
from framework.trainer.ema import is_ema_key, plain_key

log = logging.getLogger(__name__)


def check_load_path(checkpoint: DictConfig) -> Path:
    """The `checkpoint.load_path` file, or a one-line error saying how to get it."""
    path = Path(str(checkpoint.load_path))
    if not path.is_file():
        raise ConfigError(
            f"checkpoint.load_path={path} does not exist; {download_hint(path)} (or pass "
            "checkpoint.load_path=<file>, or checkpoint.load_path='' to train from scratch)."
        )
    return path


def load_pretrained(model: nn.Module, checkpoint: DictConfig) -> None:
    """Initialise `model` from `checkpoint.load_path` (an official file or one of ours).

    A model with `load_weights` (every family model) takes the file's `net.*` (or, with
    `checkpoint.load_ema`, the EMA copy) and its extra modules' keys, drops what its family
    documents and `checkpoint.ignore_keys`, and fails naming anything else that does not match.
    Any other model loads the chosen copy of its own state dict strictly.
    """
    path = check_load_path(checkpoint)
    sd = read_checkpoint(path)
    ema, ignore = bool(checkpoint.get("load_ema", False)), list(checkpoint.get("ignore_keys", []))
    try:
        if hasattr(model, "load_weights"):
            model.load_weights(sd, ema=ema, ignore=ignore)
        else:
            _load_strict(model, _one_copy(sd, ema, ignore))
    except (ValueError, RuntimeError) as err:
        raise ConfigError(f"checkpoint.load_path={path}: {str(err).splitlines()[0]}") from None
    log.info("loaded %d tensors from %s%s", len(sd), path, " (EMA)" if ema else "")


def _one_copy(sd: dict, ema: bool, ignore: list[str]) -> dict:
    """The regular (or EMA) copy of a model-level state dict, `ignore` patterns (matched on the
    key below its top-level module) dropped."""
    if ema and not any(is_ema_key(k) for k in sd):
        raise ValueError("the file has no EMA weights; set checkpoint.load_ema=false.")
    out = {}
    for key, value in sd.items():
        if is_ema_key(key) != ema:
            continue
        key = plain_key(key) if ema else key
        if not any(fnmatch.fnmatchcase(key.partition(".")[2], p) for p in ignore):
            out[key] = value
    return out


def _load_strict(model: nn.Module, sd: dict) -> None:
    want = set(model.state_dict())
    missing, unexpected = sorted(want - set(sd)), sorted(set(sd) - want)
    if missing or unexpected:
        raise ValueError(
            f"the file does not match the model (missing: {', '.join(missing[:5]) or 'none'}; "
            f"unexpected: {', '.join(unexpected[:5]) or 'none'}); use the matching experiment "
            "or drop keys with checkpoint.ignore_keys."
        )
    model.load_state_dict(sd, strict=True)
