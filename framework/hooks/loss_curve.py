"""LossCurveHook: loss_curve.png in the job folder when training ends."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from framework.inference.plots import plot_loss_curve
from framework.trainer.hook import Hook

log = logging.getLogger(__name__)


class LossCurveHook(Hook):
    """Writes loss_curve.png into the job folder when training ends (rank 0)."""

    def after_train(self, trainer: Any) -> None:
        if not trainer.is_main:
            return
        try:
            plot_loss_curve(trainer.job_dir)
        except (FileNotFoundError, ValueError) as err:  # a run with no logged step
            log.warning("no loss curve: %s", err)

    def report_lines(self, trainer: Any) -> list[str]:
        curve = Path(trainer.job_dir) / "loss_curve.png"
        return [f"  loss curve   {curve}"] if curve.is_file() else []
