"""Checkpoints in the seeds' layout (DESIGN contract 3), written so a kill never corrupts one.

    <job_dir>/checkpoints/model/iter_{N:09d}.pt       the model's whole state dict: `net.*` in the
                                                      official layout, extra modules such as
                                                      `logvar.*`, and `<name>_ema.*` with EMA
                          optim/iter_{N:09d}.pt       full optimizer state, keys by parameter name
                          scheduler/iter_{N:09d}.pt   LambdaLR position
                          trainer/iter_{N:09d}.pt     step, data position, per-rank RNG, hooks
                          latest_checkpoint.txt       one line: iter_{N:09d}.pt

Every file is written under a temporary name, fsynced and renamed; `latest_checkpoint.txt` is
rewritten last, so until it names the new iteration the previous one stays complete and in use.
"""

from __future__ import annotations

import fnmatch
import logging
import re
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from framework.config import ConfigError
from framework.io import atomic_torch_save, atomic_write_text, load_torch_file, read_checkpoint
from framework.models.hub import download_hint
from framework.trainer import dist as D
from framework.trainer.ema import PowerEMA, ema_key, is_ema_key, plain_key

log = logging.getLogger(__name__)

LATEST = "latest_checkpoint.txt"
PARTS = ("model", "optim", "scheduler", "trainer")
_NAME = re.compile(r"^iter_(\d{9})\.pt$")
_GATHER = StateDictOptions(full_state_dict=True, cpu_offload=True)


def iter_name(step: int) -> str:
    return f"iter_{step:09d}.pt"


def load_file(path: Path) -> Any:
    return load_torch_file(path)


def _load_options() -> StateDictOptions:
    # Rank 0 reads the file and broadcasts: one read of the file instead of one per process.
    return StateDictOptions(full_state_dict=True, broadcast_from_rank0=D.is_initialized())


class Checkpointer:
    """Saves and restores model, EMA, optimizer, scheduler and trainer state under `root`."""

    def __init__(self, root: Path, env: D.DistEnv, keep_last: int = 0) -> None:
        self.root, self.env, self.keep_last = Path(root), env, int(keep_last)

    def path(self, part: str, step_or_name: int | str) -> Path:
        name = iter_name(step_or_name) if isinstance(step_or_name, int) else step_or_name
        return self.root / part / name

    def latest(self) -> str | None:
        """The name in latest_checkpoint.txt, after checking its four files are there."""
        marker = self.root / LATEST
        if not marker.is_file():
            return None
        name = marker.read_text().strip()
        if not _NAME.match(name):
            raise ConfigError(
                f"{marker} holds {name!r}, not iter_NNNNNNNNN.pt; fix or delete it "
                "to start from scratch."
            )
        missing = [str(self.path(p, name)) for p in PARTS if not self.path(p, name).is_file()]
        if missing:
            raise ConfigError(
                f"{marker} names {name} but {', '.join(missing)} is missing; point "
                "it at a complete earlier iteration or delete it."
            )
        return name

    # ---- save ---------------------------------------------------------------------------------

    def save(
        self,
        step: int,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        ema: PowerEMA | None,
        trainer_state: dict,
    ) -> None:
        """Collective: every rank gathers, rank 0 writes. Returns once the files are durable."""
        model_sd = get_model_state_dict(model, options=_GATHER)
        if ema is not None:
            # Every key of a module gets its EMA twin; keys that do not train (buffers, a frozen
            # LoRA base) repeat the regular value, so `net_ema.*` alone is a complete net.
            ema_sd = dict(ema.full_tensors())
            model_sd.update({ema_key(k): ema_sd.get(k, v) for k, v in list(model_sd.items())})
        optim_sd = get_optimizer_state_dict(model, optimizer, options=_GATHER)
        sched_sd = scheduler.state_dict()
        # Our config, not the checkpoint, defines the schedule; only its position is saved.
        sched_sd["lr_lambdas"] = [None] * len(sched_sd.get("lr_lambdas", [None]))
        if self.env.is_main:
            for part, obj in zip(PARTS, (model_sd, optim_sd, sched_sd, trainer_state)):
                self.path(part, step).parent.mkdir(parents=True, exist_ok=True)
                atomic_torch_save(obj, self.path(part, step))
            atomic_write_text(self.root / LATEST, iter_name(step) + "\n")
            self.prune()
            log.info("saved checkpoint %s", self.path("model", step))
        D.barrier()

    def prune(self) -> None:
        """Keep the newest `keep_last` iterations (0 keeps all) and drop stray temp files."""
        for tmp in [*self.root.glob("*.tmp"), *self.root.glob("*/*.tmp")]:
            tmp.unlink(missing_ok=True)
        if self.keep_last <= 0:
            return
        names = sorted({p.name for p in (self.root / "trainer").glob("iter_*.pt")})
        for name in names[: -self.keep_last]:
            for part in PARTS:
                self.path(part, name).unlink(missing_ok=True)

    # ---- load ---------------------------------------------------------------------------------

    def load(
        self,
        name: str,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        ema: PowerEMA | None,
    ) -> dict:
        """Collective: restore everything saved under `name`; returns the trainer state."""
        main = self.env.is_main or not D.is_initialized()
        model_sd = load_file(self.path("model", name)) if main else {}
        ema_sd = {k: v for k, v in model_sd.items() if is_ema_key(k)}
        has_ema = D.broadcast_object(bool(ema_sd))
        if ema is not None and has_ema:
            # Load the EMA values through the model (which knows how to shard them), copy them
            # into the shadow, then load the regular weights over them.
            ema_sd = {plain_key(k): v for k, v in ema_sd.items()}
            set_model_state_dict(model, ema_sd, options=_load_options())
            ema.copy_from_params()
        plain = {k: v for k, v in model_sd.items() if not is_ema_key(k)}
        set_model_state_dict(model, plain, options=_load_options())
        if ema is not None and not has_ema:
            log.warning("%s has no EMA weights; the EMA starts from the loaded model.", name)
            ema.copy_from_params()
        optim_sd = load_file(self.path("optim", name)) if main else {}
        set_optimizer_state_dict(model, optimizer, optim_sd, options=_load_options())
        scheduler.load_state_dict(load_file(self.path("scheduler", name)))
        log.info("resumed from %s", self.path("model", name))
        return load_file(self.path("trainer", name))


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
