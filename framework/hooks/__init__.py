"""Training hooks: they observe or schedule (log, checkpoint, sample, evaluate, profile, plot).

`Hook` is the base class; `default_hooks()` the stock `hooks` block of an experiment. Heavier
hooks (samples, evaluation, loss curve) are imported on first use by their config target, so
importing this package stays cheap.
"""

from framework.hooks.training import (
    CheckpointHook,
    LogHook,
    ProfileHook,
    ProgressHook,
    default_hooks,
)
from framework.trainer.hook import Hook, HookList

__all__ = [
    "CheckpointHook",
    "Hook",
    "HookList",
    "LogHook",
    "ProfileHook",
    "ProgressHook",
    "default_hooks",
]
