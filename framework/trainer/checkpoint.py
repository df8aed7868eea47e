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
import json
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
MANIFEST = "manifest"  # manifest/iter_N.json: the byte size of each part as written
PARTS = ("model", "optim", "scheduler", "trainer")


class CheckpointWriteError(OSError):
    """Saving failed (disk full, permissions); the previous checkpoint is still named latest."""


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
        """The iteration to resume from: the one latest_checkpoint.txt names when it is complete,
        else (with a warning) the newest complete earlier one; None without a marker."""
        marker = self.root / LATEST
        if not marker.is_file():
            return None
        named = marker.read_text().strip()
        if not _NAME.match(named):
            raise ConfigError(
                f"{marker} holds {named!r}, not iter_NNNNNNNNN.pt; fix or delete it "
                "to start from scratch."
            )
        problem = self.problem(named)
        if not problem:
            return named
        for name in self.iterations(upto=named):
            if name != named and not self.problem(name):
                log.warning(
                    "%s is incomplete or damaged (%s); resuming from %s instead",
                    named,
                    problem,
                    name,
                )
                return name
        raise ConfigError(
            f"{marker} names {named} but {problem}, and no earlier iteration is complete; "
            f"delete {self.root} to start from scratch."
        )

    def iterations(self, upto: str | None = None) -> list[str]:
        """Saved iteration names (any part present), newest first, at most `upto`."""
        names = {p.name for part in PARTS for p in (self.root / part).glob("iter_*.pt")}
        names = {n for n in names if _NAME.match(n) and (upto is None or n <= upto)}
        return sorted(names, reverse=True)

    def problem(self, name: str) -> str:
        """Why iteration `name` cannot be resumed ("" when complete): a missing part, or a file
        whose size differs from the manifest written with it (a truncated or damaged copy)."""
        missing = [p for p in PARTS if not self.path(p, name).is_file()]
        if missing:
            return f"{', '.join(str(self.path(p, name)) for p in missing)} is missing"
        manifest = self.root / MANIFEST / name.replace(".pt", ".json")
        if not manifest.is_file():
            return ""  # written before manifests existed: existence is all we can check
        sizes = json.loads(manifest.read_text())
        for part, size in sizes.items():
            have = self.path(part, name).stat().st_size
            if have != size:
                return f"{self.path(part, name)} has {have} bytes, {size} were written"
        return ""

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
        error = None
        if self.env.is_main:
            try:
                self._write(step, (model_sd, optim_sd, sched_sd, trainer_state))
            except OSError as err:  # a full disk, a lost mount, no permission
                where = err.filename or self.root
                error = (
                    f"saving checkpoint {iter_name(step)} failed at {where}: "
                    f"{err.strerror or err}; {self.root / LATEST} still names the previous "
                    "checkpoint, so a restart resumes from it once the disk has room (or the "
                    "permissions are fixed)."
                )
        error = D.broadcast_object(error)  # every rank stops, not only the one that wrote
        if error:
            raise CheckpointWriteError(error)

    def _write(self, step: int, parts: tuple) -> None:
        """Rank 0: each part atomically, then the manifest of their sizes, then latest."""
        sizes = {}
        for part, obj in zip(PARTS, parts):
            sizes[part] = atomic_torch_save(obj, self.path(part, step)).stat().st_size
        manifest = self.root / MANIFEST / iter_name(step).replace(".pt", ".json")
        atomic_write_text(manifest, json.dumps(sizes) + "\n")
        atomic_write_text(self.root / LATEST, iter_name(step) + "\n")
        self.prune()
        log.info("saved checkpoint %s", self.path("model", step))

    def prune(self) -> None:
        """Drop stray temp files, and iterations older than the `keep_last` newest ones up to the
        one latest names (0 keeps all). That one is never removed, nor anything newer than it
        (leftovers of an earlier run in the same folder, which the run overwrites as it goes)."""
        for tmp in [*self.root.glob("*.tmp"), *self.root.glob("*/*.tmp")]:
            tmp.unlink(missing_ok=True)
        marker = self.root / LATEST
        if self.keep_last <= 0 or not marker.is_file():
            return
        named = marker.read_text().strip()
        for name in self.iterations(upto=named)[self.keep_last :]:
            if name == named:
                continue
            for part in PARTS:
                self.path(part, name).unlink(missing_ok=True)
            (self.root / MANIFEST / name.replace(".pt", ".json")).unlink(missing_ok=True)

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
