"""Hooks observe or schedule; they never change the math of a step.

Three events (`before_train`, `after_step`, `after_train`), `state_dict`/`load_state_dict` (the
checkpoint carries them) and `report_lines` (what the hook adds to the end-of-run summary).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from omegaconf import DictConfig

from framework.config import instantiate

if TYPE_CHECKING:
    from framework.trainer.trainer import Trainer


class Hook:
    """Base class: override the events you need."""

    def before_train(self, trainer: Trainer) -> None:
        pass

    def after_step(self, trainer: Trainer, step: int, loss: float, metrics: dict) -> None:
        pass

    def after_train(self, trainer: Trainer) -> None:
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def report_lines(self, trainer: Trainer) -> list[str]:
        """Lines for the end-of-run summary (files this hook wrote, what it measured)."""
        return []


class HookList:
    """Named hooks called in config order; their states travel in the trainer checkpoint."""

    def __init__(self, hooks: dict[str, Hook]) -> None:
        self.hooks = hooks

    @classmethod
    def from_config(cls, cfg: DictConfig | None) -> HookList:
        hooks = {}
        for name, node in (cfg or {}).items():
            if node is None:
                continue
            hook = instantiate(node)
            if not isinstance(hook, Hook):
                raise TypeError(
                    f"hooks.{name} builds a {type(hook).__name__}, not a Hook; "
                    "subclass framework.hooks.Hook."
                )
            hooks[str(name)] = hook
        return cls(hooks)

    def before_train(self, trainer: Trainer) -> None:
        for hook in self.hooks.values():
            hook.before_train(trainer)

    def after_step(self, trainer: Trainer, step: int, loss: float, metrics: dict) -> None:
        for hook in self.hooks.values():
            hook.after_step(trainer, step, loss, metrics)

    def after_train(self, trainer: Trainer) -> None:
        for hook in self.hooks.values():
            hook.after_train(trainer)

    def state_dict(self) -> dict:
        return {name: hook.state_dict() for name, hook in self.hooks.items()}

    def load_state_dict(self, state: dict) -> None:
        for name, hook in self.hooks.items():
            if name in state:
                hook.load_state_dict(state[name])

    def report_lines(self, trainer: Trainer) -> list[str]:
        return [line for hook in self.hooks.values() for line in hook.report_lines(trainer)]
