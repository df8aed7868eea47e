"""The generic lines of the closing summary of a run: where its files are, how its loss went.

The model and the hooks add their own lines (`report_lines`); this module knows no model.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from framework.trainer.metrics import read_metrics

if TYPE_CHECKING:
    from framework.trainer.trainer import Trainer


def run_report(job_dir: Path, checkpoint: str | None = None) -> list[str]:
    """Run folder, config, the logged `loss` at the first and last step, the latest checkpoint."""
    lines = [
        f"Run folder: {job_dir}",
        f"  config       {job_dir / 'config.yaml'} (+ overrides.txt)",
    ]
    metrics = job_dir / "metrics.jsonl"
    losses = [r for r in read_metrics(job_dir) if "loss" in r] if metrics.is_file() else []
    if losses:
        first, last = losses[0], losses[-1]
        lines.append(
            f"  metrics      {metrics} (loss {first['loss']:.4g} at step {first['step']} -> "
            f"{last['loss']:.4g} at step {last['step']})"
        )
    if checkpoint:
        lines.append(f"  checkpoint   {checkpoint}")
    return lines


def summary(trainer: Trainer) -> str:
    """The end-of-run summary: the generic lines, then the model's and each hook's."""
    checkpoint = trainer.checkpointer.named()
    path = str(trainer.checkpointer.path("model", checkpoint)) if checkpoint else None
    lines = run_report(trainer.job_dir, path)
    if path and hasattr(trainer.model, "report_lines"):
        lines += trainer.model.report_lines(path)
    return "\n".join(lines + trainer.hooks.report_lines(trainer))
