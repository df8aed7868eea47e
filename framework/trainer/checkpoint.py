"""Checkpoints in the seeds' layout (DESIGN contract 3), written so a kill never corrupts one.

    <job_dir>/checkpoints/model/iter_{N:09d}.pt       full state dict: `net.` (+ `net_ema.`) keys
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
import os
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
from framework.models.hub import download_hint
from framework.trainer import dist as D
from framework.trainer.ema import PowerEMA

log = logging.getLogger(__name__)

LATEST = "latest_checkpoint.txt"
PARTS = ("model", "optim", "scheduler", "trainer")
_NAME = re.compile(r"^iter_(\d{9})\.pt$")
_GATHER = StateDictOptions(full_state_dict=True, cpu_offload=True)


def iter_name(step: int) -> str:
    return f"iter_{step:09d}.pt"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_save(obj: Any, path: Path) -> None:
    """torch.save to `path` via a fsynced temporary file and a rename."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def atomic_write_text(text: str, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def load_file(path: Path) -> Any:
    # mmap keeps a 14B model file out of RAM until its tensors are used.
    return torch.load(path, map_location="cpu", weights_only=True, mmap=True)


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
        net_sd = get_model_state_dict(model.net, options=_GATHER)
        model_sd = {f"net.{k}": v for k, v in net_sd.items()}
        if ema is not None:
            ema_sd = dict(ema.full_tensors())
            model_sd.update({f"net_ema.{k}": ema_sd.get(k, v) for k, v in net_sd.items()})
        optim_sd = get_optimizer_state_dict(model.net, optimizer, options=_GATHER)
        sched_sd = scheduler.state_dict()
        # Our config, not the checkpoint, defines the schedule; only its position is saved.
        sched_sd["lr_lambdas"] = [None] * len(sched_sd.get("lr_lambdas", [None]))
        if self.env.is_main:
            for part, obj in zip(PARTS, (model_sd, optim_sd, sched_sd, trainer_state)):
                self.path(part, step).parent.mkdir(parents=True, exist_ok=True)
                atomic_save(obj, self.path(part, step))
            atomic_write_text(iter_name(step) + "\n", self.root / LATEST)
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
        has_ema = D.broadcast_object(any(k.startswith("net_ema.") for k in model_sd))
        if ema is not None and has_ema:
            # Load the EMA values through the net (which knows how to shard them), copy them
            # into the shadow, then load the net's own weights over them.
            ema_sd = {
                k.removeprefix("net_ema."): v
                for k, v in model_sd.items()
                if k.startswith("net_ema.")
            }
            set_model_state_dict(model.net, ema_sd, options=_load_options())
            ema.copy_from_params()
        net_sd = {k.removeprefix("net."): v for k, v in model_sd.items() if k.startswith("net.")}
        set_model_state_dict(model.net, net_sd, options=_load_options())
        if ema is not None and not has_ema:
            log.warning("%s has no net_ema. weights; the EMA starts from the loaded net.", name)
            ema.copy_from_params()
        optim_sd = load_file(self.path("optim", name)) if main else {}
        set_optimizer_state_dict(model.net, optimizer, optim_sd, options=_load_options())
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
    """Initialise `model.net` from `checkpoint.load_path` (an official or our model file).

    Keys under `net.` (or `net_ema.` with `checkpoint.load_ema`) are taken without the prefix;
    the model's `ignored_checkpoint_keys` and `checkpoint.ignore_keys` patterns are dropped; the
    rest must match the net exactly.
    """
    path = check_load_path(checkpoint)
    sd = load_file(path)
    if isinstance(sd, dict) and "model" in sd and isinstance(sd["model"], dict):
        sd = sd["model"]  # single-file training checkpoints keep the weights under "model"
    prefix = "net_ema." if checkpoint.get("load_ema", False) else "net."
    if any(k.startswith(prefix) for k in sd):
        sd = {k.removeprefix(prefix): v for k, v in sd.items() if k.startswith(prefix)}
    elif prefix == "net_ema.":
        raise ConfigError(f"{path} has no net_ema.* weights; set checkpoint.load_ema=false.")
    patterns = [*getattr(model, "ignored_checkpoint_keys", ()), *checkpoint.get("ignore_keys", [])]
    sd = {k: v for k, v in sd.items() if not any(fnmatch.fnmatchcase(k, p) for p in patterns)}
    if hasattr(model, "load_pretrained"):
        model.load_pretrained(sd)
    else:
        model.net.load_state_dict(sd, strict=True)
    log.info("loaded %d tensors from %s (%s*)", len(sd), path, prefix)
