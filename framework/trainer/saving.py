"""Saving and restoring the trainer's whole state: the checkpoint of a step (model, optimizer,
schedule, EMA through the Checkpointer, plus the step, data position, random streams, hook
states and counters) and the resume from one. The policy of what a resume may change is in
resume.py; the files and their layout in checkpoint.py and framework/jobs.py."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from framework.config import ConfigError
from framework.io import UnsafeFileError
from framework.jobs import LATEST
from framework.trainer import dist as D
from framework.trainer import resume
from framework.trainer.state import rng_state, set_rng_state

if TYPE_CHECKING:
    from framework.trainer.trainer import Trainer

log = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """The loss (or the EMA weights) stayed NaN/Inf; the last checkpoint is left as it was."""


def saves_left(trainer: Trainer) -> int:
    """The saves this run still makes: every checkpoint.save_iter steps and the last."""
    every = int(trainer.cfg.checkpoint.get("save_iter") or 0)
    if every <= 0:
        return 1
    return trainer.max_steps // every - trainer.step // every + int(trainer.max_steps % every != 0)


def save_step(trainer: Trainer) -> None:
    """Save the current step (once per step, however many hooks ask); at train.max_steps
    with the whole model file (format=dcp writes it for the last step only)."""
    if trainer.last_saved_step == trainer.step:
        return
    check_ema_finite(trainer)
    start = time.perf_counter()
    state = {
        "step": trainer.step,
        "world_size": trainer.world_size,
        "context_parallel": trainer.env.cp,
        "data": trainer.batches.state_dict(),
        "rng": D.all_gather_object(rng_state()),
        "hooks": trainer.hooks.state_dict(),
        "counters": dict(trainer.counters),
    }
    trainer.checkpointer.save(
        trainer.step,
        trainer.model,
        trainer.optimizer,
        trainer.scheduler,
        trainer.ema,
        state,
        final=trainer.step >= trainer.max_steps,
    )
    trainer.last_saved_step = trainer.step
    trainer._save_held += time.perf_counter() - start
    trainer._save_waited += trainer.checkpointer.waited_seconds


def check_ema_finite(trainer: Trainer) -> None:
    """Never save NaN/Inf EMA weights over a good checkpoint: `--load_ema` would generate
    from them."""
    if trainer.ema is None or D.all_reduce_sum(trainer.ema.nonfinite(trainer.device)).item() == 0:
        return
    raise NonFiniteLossError(
        f"the EMA weights hold NaN/Inf at step {trainer.step} (train.ema.rate="
        f"{trainer.ema.rate}); the last checkpoint ({trainer.checkpointer.named() or 'none'}) is "
        "left as it was: lower optim.lr or check the data."
    )


def restore(trainer: Trainer, name: str) -> None:
    """Load the step `name` into the trainer: weights and optimizer state, then the config's
    optimizer hyperparameters re-applied (resume.py), the step, data position, hooks, counters
    and (on the same layout) every rank's random streams."""
    fresh = resume.hyperparameters(trainer.optimizer)  # the config's, before the checkpoint's
    try:
        state = trainer.checkpointer.load(
            name, trainer.model, trainer.optimizer, trainer.scheduler, trainer.ema
        )
        resume.reapply(trainer.optimizer, trainer.scheduler, fresh)
    except (RuntimeError, ValueError, KeyError) as err:
        if isinstance(err, UnsafeFileError):
            marker = trainer.checkpointer.root / LATEST
            raise ConfigError(
                f"{str(err).splitlines()[0]} Write an earlier iteration's name into {marker}, "
                "or start over under another job.name."
            ) from None
        raise ConfigError(
            f"cannot resume {trainer.job_dir} from {name}: the checkpoint does not fit this "
            f"config ({' '.join(str(err).split())[:200]}); run with the settings in its "
            "config.yaml, or start over under another job.name."
        ) from None
    trainer.step = trainer.last_saved_step = int(state["step"])
    if trainer.resume_changes:
        log.info("resuming with changes: %s", "; ".join(trainer.resume_changes))
    trainer.batches.load_state_dict(state["data"])
    trainer.hooks.load_state_dict(state.get("hooks", {}))
    trainer.counters.update(state.get("counters", {}))
    # Per-rank streams fit only the same layout: under context parallel the ranks of a group
    # must keep drawing the same noise.
    before = (int(state["world_size"]), int(state.get("context_parallel", 1)))
    if before == (trainer.world_size, trainer.env.cp):
        set_rng_state(state["rng"][trainer.rank])
    else:
        log.warning(
            "resuming on %d processes (context parallel %d) from a run on %d (context "
            "parallel %d): random streams restart from the seed.",
            trainer.world_size,
            trainer.env.cp,
            *before,
        )
