"""The generic trainer: `run(cfg, overrides) -> exit code` and the `Trainer` class."""

from framework.trainer.entry import (
    EXIT_NONFINITE,
    EXIT_OK,
    EXIT_OOM,
    EXIT_PREEMPTED,
    EXIT_USER_ERROR,
    run,
)
from framework.trainer.trainer import NonFiniteLossError, Trainer

__all__ = [
    "run",
    "Trainer",
    "NonFiniteLossError",
    "EXIT_OK",
    "EXIT_USER_ERROR",
    "EXIT_NONFINITE",
    "EXIT_OOM",
    "EXIT_PREEMPTED",
]
