"""The stock training hooks: logging, checkpointing, a progress bar and the torch profiler.

`default_hooks()` is the `hooks` block an experiment starts from.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import TYPE_CHECKING, Any

import torch
from omegaconf import DictConfig

from framework.config import L
from framework.trainer.hook import Hook
from framework.trainer.metrics import peak_flops

if TYPE_CHECKING:
    from framework.trainer.trainer import Trainer

log = logging.getLogger(__name__)


# Per-step values that are totals over the window, not averages.
_SAVES = ("save_held", "save_waited", "save_write", "save_write_gb")
_SUMMED = ("step_time", "data_wait", "samples", "flops", *_SAVES)


class LogHook(Hook):
    """Every `every` steps (default logging.every): window averages to metrics.jsonl and wandb.

    Throughput comes from window totals: samples_per_s = samples / step_time, and MFU = FLOPs /
    (step_time * world * device peak) when the model reports FLOPs and the peak is known (from
    `peak_flops`, else the table in framework/trainer/metrics.py).
    """

    def __init__(self, every: int | None = None, peak_flops: float | None = None) -> None:
        self.every, self.peak = every, peak_flops
        self.window: dict[str, float] = defaultdict(float)
        self.count = 0

    def before_train(self, trainer: Trainer) -> None:
        self.every = int(self.every or trainer.cfg.logging.every)
        # `peak_flops` names the device peak where the table does not know it (CPUs, new GPUs).
        self.peak = float(self.peak) if self.peak else peak_flops(trainer.device)

    def after_step(self, trainer: Trainer, step: int, loss: float, metrics: dict) -> None:
        for key, value in metrics.items():
            self.window[key] += float(value)
        self.count += 1
        # The last step is always logged: reports and curves end where training ended even when
        # max_steps is not a multiple of logging.every.
        if step % self.every and step != trainer.max_steps:
            return
        w, n = self.window, self.count
        record = {k: v / n for k, v in w.items() if k not in _SUMMED}
        record["step_time"] = w["step_time"] / n
        record["data_wait"] = w["data_wait"] / n
        # Seconds in save calls before these steps (not in step_time), and background writes.
        record.update({k: w[k] for k in _SAVES if k in w})
        record["samples_per_s"] = w["samples"] / max(w["step_time"], 1e-9)
        if self.peak and w["flops"] > 0:
            record["mfu"] = w["flops"] / (w["step_time"] * trainer.world_size * self.peak)
        if trainer.device.type == "cuda":
            record["peak_mem_gib"] = torch.cuda.max_memory_allocated(trainer.device) / 2**30
        record.update(trainer.counters)
        bad = trainer.batches.bad_samples
        if bad is not None:
            record["bad_samples"] = bad
        trainer.log(record)
        log.info(
            "step %d  loss %.4g  lr %.3g  grad_norm %.3g  %.2fs/step",
            step,
            record["loss"],
            record["lr"],
            record["grad_norm"],
            record["step_time"],
        )
        self.window, self.count = defaultdict(float), 0


class CheckpointHook(Hook):
    """Saves every `every` steps (default checkpoint.save_iter) and when training ends."""

    def __init__(self, every: int | None = None) -> None:
        self.every = every

    def before_train(self, trainer: Trainer) -> None:
        self.every = int(self.every or trainer.cfg.checkpoint.save_iter)

    def after_step(self, trainer: Trainer, step: int, loss: float, metrics: dict) -> None:
        if self.every > 0 and step % self.every == 0:
            trainer.save_checkpoint()

    def after_train(self, trainer: Trainer) -> None:
        trainer.save_checkpoint()


class ProgressHook(Hook):
    """A tqdm bar with ETA on rank 0."""

    def __init__(self, mininterval: float = 1.0) -> None:
        self.mininterval = mininterval
        self.bar: Any = None
        self.redirect: Any = None

    def before_train(self, trainer: Trainer) -> None:
        if trainer.is_main:
            from tqdm.auto import tqdm
            from tqdm.contrib.logging import logging_redirect_tqdm

            # Log lines go through tqdm.write while the bar is up, so they do not break it.
            self.redirect = logging_redirect_tqdm()
            self.redirect.__enter__()

            self.bar = tqdm(
                total=trainer.max_steps,
                initial=trainer.step,
                unit="step",
                desc=str(trainer.cfg.job.name),
                mininterval=self.mininterval,
                dynamic_ncols=True,
            )

    def after_step(self, trainer: Trainer, step: int, loss: float, metrics: dict) -> None:
        if self.bar is not None:
            self.bar.update(step - self.bar.n)
            self.bar.set_postfix(loss=f"{loss:.4g}", refresh=False)

    def after_train(self, trainer: Trainer) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if self.redirect is not None:
            self.redirect.__exit__(None, None, None)
            self.redirect = None


class ProfileHook(Hook):
    """torch.profiler trace of steps start+1..end into <job_dir>/profile/ (listed ranks only)."""

    def __init__(self, start: int = 10, end: int = 12, ranks: tuple[int, ...] = (0,)) -> None:
        if end <= start:
            raise ValueError(f"ProfileHook: end={end} must be after start={start}; fix the hook.")
        self.start, self.end, self.ranks = start, end, tuple(ranks)
        self.prof: Any = None

    def _begin(self, trainer: Trainer) -> None:
        activities = [torch.profiler.ProfilerActivity.CPU]
        if trainer.device.type == "cuda":
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        self.prof = torch.profiler.profile(
            activities=activities, record_shapes=True, profile_memory=True, with_stack=False
        )
        self.prof.__enter__()

    def before_train(self, trainer: Trainer) -> None:
        if trainer.rank in self.ranks and self.start == trainer.step < self.end:
            self._begin(trainer)

    def after_step(self, trainer: Trainer, step: int, loss: float, metrics: dict) -> None:
        if trainer.rank not in self.ranks:
            return
        if step == self.start and self.prof is None:
            self._begin(trainer)
        elif step == self.end and self.prof is not None:
            self._finish(trainer)

    def after_train(self, trainer: Trainer) -> None:
        if self.prof is not None:
            self._finish(trainer)

    def _finish(self, trainer: Trainer) -> None:
        self.prof.__exit__(None, None, None)
        out = trainer.job_dir / "profile"
        out.mkdir(parents=True, exist_ok=True)
        path = out / f"trace_rank{trainer.rank}_steps{self.start + 1}-{trainer.step}.json"
        self.prof.export_chrome_trace(str(path))
        self.prof = None
        log.info("profiler trace written to %s", path)


def default_hooks() -> dict[str, DictConfig | None]:
    """The stock `hooks` block; experiments add or drop entries by name (`~hooks.progress`)."""
    return {"log": L(LogHook)(), "checkpoint": L(CheckpointHook)(), "progress": L(ProgressHook)()}
