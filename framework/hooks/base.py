"""Old import path of the hook base class (framework/trainer/hook.py): the trainer owns the hook
protocol, and this package's hooks implement it, so the trainer never imports this package."""

from framework.trainer.hook import Hook, HookList  # noqa: F401
