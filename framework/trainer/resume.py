"""What a resume may change, decided per config domain, and how an allowed change is applied.

A job folder's `config.yaml` says what its checkpoints were trained with. Starting the job again
with other values either applies them for real or is refused before anything is built or
written (one line, exit 2):

    refused   model.* (the network, tokenizer, state_t, ...: the checkpoint's weights and every
              later generation depend on them; `model.objective.*` excepted), job.*,
              checkpoint.load_path (a LoRA run's base is read from it at every start),
              optim.master_weights (turning it off would drop the fp32 master weights)
    applied   optim.* hyperparameters (lr, weight_decay, betas, eps: set in every parameter
              group after the optimizer state is loaded, which otherwise restores the
              checkpoint's), sched.* (the schedule is rebuilt from the config; its base rates
              become the new optim.lr), train.* (EMA rate, clipping, steps, ...), data.*
              (the data position is carried over in samples), model.objective.*, logging.*,
              hooks.*, parallel.*, checkpoint.* (save cadence, format: either format loads)

Changes that pass are logged once at start. config.yaml and overrides.txt are rewritten only
once the resumed run has finished its first step, so they never describe a run that did not
happen.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from framework import jobs
from framework.config import ConfigError
from framework.trainer.metrics import plain_config

log = logging.getLogger(__name__)

REFUSED = ("model", "job", "checkpoint.load_path", "optim.master_weights")
ALLOWED_INSIDE = ("model.objective",)
# Optimizer hyperparameters that live in param_groups and that load_state_dict overwrites.
HYPERPARAMETERS = ("lr", "weight_decay", "betas", "eps", "momentum")


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    """{dotted key: leaf}; lists are leaves."""
    if isinstance(tree, dict) and tree:
        out: dict[str, Any] = {}
        for k, v in tree.items():
            out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: tree}


def _refused(key: str) -> bool:
    inside = lambda p: key == p or key.startswith(p + ".")  # noqa: E731
    return any(inside(p) for p in REFUSED) and not any(inside(p) for p in ALLOWED_INSIDE)


def changes(job_dir: Path, cfg: DictConfig) -> list[tuple[str, Any, Any]]:
    """(key, value in config.yaml, value now) of every leaf that differs; a key only one side
    has (a newer or older version of the code) is not a change."""
    path = Path(job_dir) / jobs.CONFIG
    if not path.is_file():
        return []
    try:
        old = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    except Exception as err:  # noqa: BLE001  (a damaged record must not block the run's restart)
        log.warning("%s cannot be read (%s); resuming without comparing configs", path, err)
        return []
    before, now = _flat(old), _flat(plain_config(cfg))
    return [(k, before[k], now[k]) for k in now if k in before and before[k] != now[k]]


def check(job_dir: Path, cfg: DictConfig) -> list[str]:
    """Raise ConfigError for the first refused change; return the allowed ones as lines."""
    diffs = changes(job_dir, cfg)
    for key, was, now in diffs:
        if _refused(key):
            raise ConfigError(
                f"cannot resume {job_dir} with {key}={now!r}: its checkpoints were trained "
                f"with {key}={was!r} (config.yaml), and {key.split('.')[0]}.* cannot change on "
                "resume; drop the override, or start a new run under another job.name."
            )
    return [f"{key}: {was!r} -> {now!r}" for key, was, now in diffs]


def hyperparameters(optimizer: Any) -> list[dict[str, Any]]:
    """The config's values in each parameter group (taken before a checkpoint is loaded; the
    scheduler has already scaled `lr`, its base is `initial_lr`)."""
    groups = [{k: g[k] for k in HYPERPARAMETERS if k in g} for g in optimizer.param_groups]
    for values, g in zip(groups, optimizer.param_groups):
        values["lr"] = g.get("initial_lr", values["lr"])
    return groups


def reapply(optimizer: Any, scheduler: Any, fresh: list[dict[str, Any]]) -> None:
    """After loading a checkpoint: the config's hyperparameters again in every group, and the
    schedule's base rates from them, at the restored position."""
    if len(fresh) != len(optimizer.param_groups):
        raise ConfigError(
            f"the checkpoint's optimizer has {len(optimizer.param_groups)} parameter groups, "
            f"the config {len(fresh)}; run with the settings in its config.yaml."
        )
    for group, values in zip(optimizer.param_groups, fresh):
        group.update(values)
        group["initial_lr"] = values["lr"]
    scheduler.base_lrs = [v["lr"] for v in fresh]
    step = scheduler.last_epoch
    lrs = [base * fn(step) for base, fn in zip(scheduler.base_lrs, scheduler.lr_lambdas)]
    for group, lr in zip(optimizer.param_groups, lrs):
        group["lr"] = lr
    scheduler._last_lr = lrs
