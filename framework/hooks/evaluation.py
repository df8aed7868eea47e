"""EvalHook: `framework.eval.evaluate` on held-out items before, during and after training.

With `cfg.eval` in the experiment the items are its frozen eval set (framework/evaluation/
evalset.py: the manifest is written on first use and a changed item stops the run), the first
`num_items` of them, scored with the hook's own (cheaper) steps and seed.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from framework.eval import METRICS, evaluate, format_table, write_json
from framework.hooks.samples import ema_context, heldout_items, runs_here, with_progress
from framework.inference.settings import guidance_for
from framework.trainer.hook import Hook

log = logging.getLogger(__name__)


class EvalHook(Hook):
    """`evaluate` before training (fresh runs) into <job_dir>/eval_before.json and after it
    (EMA weights when on) into eval_after.json; the means are logged as eval_before/* and
    eval_after/*. `dataset_dir` points the run's dataset at another folder (default: the
    training data's held-out split)."""

    def __init__(
        self,
        before: bool = True,
        after: bool = True,
        num_items: int = 2,
        num_steps: int = 35,
        guidance: float | None = None,
        seed: int = 0,
        num_conditional_frames: int = 1,
        dataset_dir: str | None = None,
        every: int = 0,
    ) -> None:
        # guidance None: the model's own (its sampler node's, else the rule video2world uses).
        self.before, self.after, self.every = before, after, int(every)
        self.num_items = int(num_items)
        self.kw = dict(
            num_steps=int(num_steps),
            seed=int(seed),
            guidance=guidance if guidance is None else float(guidance),
            num_conditional_frames=int(num_conditional_frames),
        )
        self.dataset_dir = dataset_dir

    def _run(self, trainer: Any, tag: str) -> dict | None:
        if not runs_here(trainer):
            return None
        items = self.items(trainer)
        with ema_context(trainer):
            shown = with_progress(trainer, items, f"evaluation {tag} training")
            kw = {**self.kw, "guidance": guidance_for(trainer.cfg, self.kw["guidance"])}
            result = evaluate(trainer.model, shown, **kw)
        if trainer.is_main:
            result["step"] = int(trainer.step)
            name = f"eval_{tag}.json" if tag != "step" else f"eval/step_{trainer.step:09d}.json"
            write_json(result, Path(trainer.job_dir) / name)
            prefix = "eval" if tag == "step" else f"eval_{tag}"
            trainer.log({f"{prefix}/{k}": result[k] for k in METRICS})
            log.info(
                "evaluation %s training (step %d):\n%s", tag, trainer.step, format_table(result)
            )
        return result

    def items(self, trainer: Any) -> list:
        """The frozen eval set's first items when the experiment declares `cfg.eval` (and no
        other dataset_dir is given), else the run's held-out items."""
        cfg = trainer.cfg
        if "eval" not in cfg or self.dataset_dir:
            return heldout_items(trainer, self.dataset_dir, self.num_items)
        from framework.evaluation.evalset import load_eval_set

        frames = trainer.model.expected_pixel_frames
        evalset = load_eval_set(cfg, frames, check_settings=False)
        return evalset.items[: self.num_items]

    def after_step(self, trainer: Any, step: int, loss: float, metrics: dict) -> None:
        # Every N steps: the same scores under eval/* in metrics.jsonl (and wandb when on).
        if self.every and step % self.every == 0 and step < int(trainer.cfg.train.max_steps):
            self._run(trainer, "step")

    def before_train(self, trainer: Any) -> None:
        # A resumed run has already measured its starting point.
        if self.before and trainer.step == 0:
            self._run(trainer, "before")

    def after_train(self, trainer: Any) -> None:
        if self.after:
            self._run(trainer, "after")

    def report_lines(self, trainer: Any) -> list[str]:
        job = Path(trainer.job_dir)
        before, after = job / "eval_before.json", job / "eval_after.json"
        if not (before.is_file() and after.is_file()):
            return []
        b, a = json.loads(before.read_text()), json.loads(after.read_text())
        scores = ", ".join(
            f"{k} {b[k]:.4g} -> {a[k]:.4g}"
            for k in ("psnr", "ssim", "latent_l2")
            if k in b and k in a
        )
        lines = [f"  eval         {scores} (before -> after training)"]
        if "still_psnr" in a:
            # Holding the given frame still scores well on slow clips; motion must beat it.
            lines.append(
                "               holding the first frame still: "
                f"psnr {a['still_psnr']:.4g}, ssim {a['still_ssim']:.4g}"
            )
        return lines
