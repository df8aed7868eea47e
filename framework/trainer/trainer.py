"""The generic trainer: any model that follows the protocol of docs/architecture.md.

The model gives the loss; the trainer owns precision, accumulation, clipping, AdamW, the schedule,
EMA, checkpoints and processes; hooks only observe or schedule. docs/training.md describes the
files it writes, resume, and the exit codes.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
from omegaconf import DictConfig
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from framework import jobs
from framework.config import ConfigError, instantiate
from framework.jobs import PREEMPTED, JobLock, checkpoints_of, job_dir_of
from framework.trainer import dist as D
from framework.trainer import resume, saving
from framework.trainer.checkpoint import Checkpointer
from framework.trainer.data import BatchStream
from framework.trainer.ema import PowerEMA, clean_name
from framework.trainer.hook import HookList
from framework.trainer.master_adamw import params_to_
from framework.trainer.metrics import MetricsSink
from framework.trainer.pretrained import check_load_path, load_pretrained
from framework.trainer.report import summary
from framework.trainer.saving import NonFiniteLossError
from framework.trainer.state import (
    autocast_dtype,
    clip_by_norm_,
    frozen_to_,
    preemption_signals,
    seed_everything,
    set_determinism,
    squared_grad_norm,
    to_device,
    write_run_files,
    zero_nonfinite_grads_,
)
from framework.trainer.validate import validate

log = logging.getLogger(__name__)


@dataclass
class StepResult:
    loss: float
    metrics: dict[str, float] = field(default_factory=dict)
    skipped: bool = False


class _StepModule(nn.Module):
    """Routes training_step through forward so DDP's reducer sees every step."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: dict, step: int) -> tuple[Tensor, dict]:
        return self.model.training_step(batch, step)


class Trainer:
    """Builds model, data, optimizer, schedule, EMA and hooks from `cfg`, resumes, and fits."""

    def __init__(
        self,
        cfg: DictConfig,
        overrides: list[str] | tuple[str, ...] = (),
        env: D.DistEnv | None = None,
    ) -> None:
        self.cfg = validate(cfg)  # before anything is built or written
        env = env or D.init_distributed(cfg.parallel.strategy)
        cp = D.context_parallel_degree(cfg.parallel, env.world_size)
        self.env = dataclasses.replace(env, cp=cp)
        self.device = self.env.device
        self.job_dir = job_dir_of(cfg)
        self.max_steps = int(cfg.train.max_steps)
        self.accum = int(cfg.train.grad_accum)
        self.master_weights = bool(cfg.optim.get("master_weights", False))
        self.autocast_dtype = autocast_dtype(cfg.train.precision, self.device, self.master_weights)
        set_determinism(bool(cfg.train.deterministic))
        self.lock = self._lock_job_dir()
        # A resume applies a changed value for real or refuses it, before anything is built.
        resuming = jobs.read_latest(checkpoints_of(self.job_dir)) is not None
        self.resume_changes = resume.check(self.job_dir, cfg) if resuming else []
        self.overrides = list(overrides)

        # The same seed on every rank while building: FSDP shards and DDP replicas start equal.
        seed_everything(int(cfg.train.seed))
        if cfg.checkpoint.get("load_path"):
            check_load_path(cfg.checkpoint)  # before allocating a multi-billion-parameter net
        self.model: nn.Module = instantiate(cfg.model)
        # Weights that do not train and come from load_path (a LoRA run's base) are read from
        # there at every start and never written into checkpoints.
        frozen = {clean_name(n) for n, p in self.model.named_parameters() if not p.requires_grad}
        self.checkpointer = Checkpointer(
            checkpoints_of(self.job_dir),
            self.env,
            cfg.checkpoint.keep_last,
            cfg.checkpoint.get("format", "pt"),
            exclude=frozen if cfg.checkpoint.get("load_path") else (),
            staging_buffers=cfg.checkpoint.get("staging_buffers", 1),
            writer_threads=cfg.checkpoint.get("writer_threads", 2),
        )
        resume_from = self.checkpointer.latest()
        if cfg.checkpoint.get("load_path") and (resume_from is None or frozen):
            load_pretrained(self.model, cfg.checkpoint)
        if self.autocast_dtype is not None:
            frozen_to_(self.model, self.autocast_dtype)
        if self.master_weights:  # the optimizer keeps the fp32 copy (master_adamw.py)
            params_to_((p for p in self.model.parameters() if p.requires_grad), torch.bfloat16)
        self.model.to(self.device)
        self.mesh = D.build_mesh(cfg.parallel, self.env)
        D.enable_context_parallel(self.model, self.env.cp)  # before parallelize: compile sees it
        self.model.parallelize(self.mesh, cfg.parallel)
        self.step_module: nn.Module = _StepModule(self.model)
        if cfg.parallel.strategy == "ddp":
            self.step_module = DistributedDataParallel(self.step_module)
        self.params = [p for p in self.model.trainable_parameters() if p.requires_grad]
        self.optimizer = instantiate(cfg.optim, params=self.params)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, instantiate(cfg.sched))
        ema = cfg.train.get("ema") or {}
        self.ema = PowerEMA(self.model, ema.get("rate", 0.1)) if ema.get("enabled") else None
        self.batches = BatchStream(cfg.data, self.env, int(cfg.train.seed))
        self.hooks = HookList.from_config(cfg.get("hooks"))
        self.sink = MetricsSink(self.job_dir, cfg, self.is_main)
        self.replicas = D.replicate_degree(cfg.parallel, self.world_size)

        self.step = 0
        self.last_saved_step: int | None = None
        self.stop_requested = False
        self._prepared = False
        self._save_held = 0.0  # seconds the loop spent in save calls since the last step
        self._save_waited = 0.0  # of which waiting for the previous save's write (dcp)
        self.counters = {"nonfinite_steps": 0, "nonfinite_in_a_row": 0, "nonfinite_grads": 0}
        self._signal: int | None = None
        self.pending_signal: int | None = None
        # The ranks of one context-parallel group draw the same noise for their shared sample.
        seed_everything(int(cfg.train.seed) + self.env.dp_rank)
        if resume_from is not None:
            saving.restore(self, resume_from)
        # config.yaml and overrides.txt are written after this run's first step (fit), so a
        # run refused here or failing before it never rewrites what the job's checkpoints ran.
        self._recorded = False
        if self.is_main:
            (self.job_dir / PREEMPTED).unlink(missing_ok=True)
        D.barrier()

    # ---- what hooks see -----------------------------------------------------------------------

    @property
    def rank(self) -> int:
        return self.env.rank

    @property
    def world_size(self) -> int:
        return self.env.world_size

    @property
    def is_main(self) -> bool:
        return self.env.is_main

    def log(self, values: dict[str, Any]) -> None:
        """Record values for the current step (metrics.jsonl and wandb; rank 0 only)."""
        self.sink.log(self.step, values)

    # ---- the loop -----------------------------------------------------------------------------

    def fit(self) -> bool:
        """Train to train.max_steps. Returns False when stopped early by SIGTERM/SIGUSR1. The job
        folder's lock is released when it returns or raises, after any save in flight."""
        try:
            return self._fit()
        finally:
            self.checkpointer.close()
            if self.lock is not None:
                self.lock.release()

    def _fit(self) -> bool:
        if self.step >= self.max_steps:
            # A second `make train` resumes the finished job; say why nothing happens.
            log.info(
                "%s is already at step %d (train.max_steps=%d): nothing to train. Raise "
                "train.max_steps to go on, or start over with another job.name or after "
                "deleting the folder.",
                self.job_dir,
                self.step,
                self.max_steps,
            )
        self.hooks.before_train(self)
        with preemption_signals(self._on_signal):
            if self.pending_signal is not None:  # arrived while the run was being set up
                self._on_signal(self.pending_signal)
            while self.step < self.max_steps and not self.stop_requested:
                result = self.train_step()
                if result.skipped:
                    self._count_nonfinite()
                    continue
                self.counters["nonfinite_in_a_row"] = 0
                self.step += 1
                if not self._recorded and self.is_main:
                    write_run_files(self.job_dir, self.cfg, self.overrides)
                self._recorded = True
                if not self._prepared:  # the optimizer state exists now
                    self.checkpointer.prepare(
                        self.model, self.optimizer, self.ema, saving.saves_left(self)
                    )
                    self._prepared = True
                self.hooks.after_step(self, self.step, result.loss, result.metrics)
        if self.stop_requested:
            log.warning("stop signal received: saving step %d and exiting", self.step)
            self.save_checkpoint()
            if self.is_main:
                (self.job_dir / PREEMPTED).write_text(f"{self.step}\n")
        self.hooks.after_train(self)
        self.checkpointer.finish()  # a background save is written (or its failure raised)
        self.sink.close()
        return not self.stop_requested

    def train_step(self) -> StepResult:
        """One optimizer step over train.grad_accum micro-batches (skipped if the loss is not
        finite on any rank)."""
        start = time.perf_counter()
        loss_sum, model_metrics, flops, data_wait = self._forward_backward()
        loss, nonfinite, sq_norm, norm_sq = self._reduce(loss_sum)
        if nonfinite:
            self.optimizer.zero_grad(set_to_none=True)
            return StepResult(loss=float("nan"), skipped=True)
        bad = 0.0
        if not math.isfinite(sq_norm):
            bad, sq_norm, norm_sq = self._zero_nonfinite_grads()
        lr = self.scheduler.get_last_lr()[0]
        self._update(norm_sq)
        self.counters["nonfinite_grads"] += int(bad / self.replicas)
        # Context-parallel ranks share their samples (and each computes the same loss, so the
        # mean over all ranks counts each sample once): count samples and FLOPs per
        # data-parallel replica.
        samples = self.batches.batch_size * self.accum * self.env.dp_world
        return StepResult(
            loss=loss / self.world_size,
            metrics={
                "loss": loss / self.world_size,
                "lr": lr,
                "grad_norm": math.sqrt(sq_norm / self.replicas),
                "step_time": time.perf_counter() - start,
                "data_wait": data_wait,
                "samples": samples,
                "flops": flops * self.env.dp_world,
                **{k: float(v) for k, v in model_metrics.items()},
                # What saves held the loop outside the steps (bench.step_times counts it).
                **self._pop_save_held(),
            },
        )

    def _forward_backward(self) -> tuple[Tensor, dict[str, Any], float, float]:
        """(summed loss, mean model metrics, FLOPs, seconds waiting for data) of the step's
        micro-batches, gradients accumulated."""
        data_wait, flops = 0.0, 0.0
        loss_sum = torch.zeros((), device=self.device)
        model_metrics: dict[str, Any] = {}
        for micro in range(self.accum):
            t = time.perf_counter()
            batch = to_device(next(self.batches), self.device)
            data_wait += time.perf_counter() - t
            flops += self._flops(batch)
            with self._no_sync(micro < self.accum - 1), self._autocast():
                loss, metrics = self.step_module(batch, self.step)
            (loss / self.accum).backward()
            loss_sum += loss.detach().float()
            for k, v in metrics.items():
                model_metrics[k] = model_metrics.get(k, 0.0) + v / self.accum
        return loss_sum, model_metrics, flops, data_wait

    def _reduce(self, loss_sum: Tensor) -> tuple[float, bool, float, Tensor]:
        """One all-reduce and one host sync: the mean loss, "loss not finite", the squared
        gradient norm (shared by the non-finite check and clipping), stop and save failures.
        Returns (loss, any rank non-finite, squared norm, squared norm as a tensor)."""
        flags = [float(self._signal is not None), float(self.checkpointer.failed)]
        values = [loss_sum / self.accum, (~loss_sum.isfinite()).float()]
        values.append(squared_grad_norm(self.params, self.device))
        totals = torch.cat([torch.stack(values), torch.tensor(flags, device=self.device)])
        totals = D.all_reduce_sum(totals)
        loss, nonfinite, sq_norm, stop, failed = totals.tolist()
        self.stop_requested |= stop > 0
        if failed > 0:
            self.checkpointer.finish()  # raises CheckpointWriteError on every rank
        return loss, nonfinite > 0, sq_norm, totals[2]

    def _zero_nonfinite_grads(self) -> tuple[float, float, Tensor]:
        """NaN/Inf gradient values with a finite loss: zero them, count, measure again."""
        again = torch.stack(
            [
                zero_nonfinite_grads_(self.params, self.device).float(),
                squared_grad_norm(self.params, self.device),
            ]
        )
        again = D.all_reduce_sum(again)
        bad, sq_norm = again.tolist()
        return bad, sq_norm, again[1]

    def _update(self, norm_sq: Tensor) -> None:
        """Clip, AdamW, schedule, EMA."""
        # Replicas (DDP, HSDP) hold the same gradients: each shard is counted once.
        self._clip((norm_sq / self.replicas).sqrt())
        self.checkpointer.wait_staged()  # a save in flight has copied the weights it writes
        self.optimizer.step()
        self.optimizer.grad_scale = None
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update(self.step)

    def _pop_save_held(self) -> dict[str, float]:
        """The metrics of the saves since the last step: `save_held` (the loop in save calls)
        and `save_waited` (of it, waiting for earlier saves' writes), and `save_write` /
        `save_write_gb`: seconds and GB of the background writes that finished meanwhile."""
        out = {"save_held": self._save_held} if self._save_held else {}
        if self._save_waited:
            out["save_waited"] = self._save_waited
        self._save_held = self._save_waited = 0.0
        seconds, nbytes = self.checkpointer.pop_written()
        if nbytes:  # background writes that finished since the last step (format=dcp)
            out.update(save_write=seconds, save_write_gb=nbytes / 1e9)
        return out

    # ---- pieces of a step ---------------------------------------------------------------------

    def _autocast(self):
        if self.autocast_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def _no_sync(self, skip_sync: bool):
        # DDP all-reduces only on the last micro-batch. FSDP2 reduce-scatters every micro-batch
        # on purpose: keeping unsharded gradients across micro-batches costs a full model copy.
        if skip_sync and isinstance(self.step_module, DistributedDataParallel):
            return self.step_module.no_sync()
        return nullcontext()

    def _clip(self, norm: Tensor) -> None:
        max_norm = float(self.cfg.train.grad_clip or 0)  # 0 = no clipping
        if max_norm > 0:
            clip_by_norm_(self.optimizer, self.params, norm, max_norm)

    def _flops(self, batch: dict) -> float:
        fn = getattr(self.model, "flops_per_sample", None)
        if fn is None:
            return 0.0
        return float(fn(batch)) * self.batches.batch_size

    def _count_nonfinite(self) -> None:
        self.counters["nonfinite_steps"] += 1
        self.counters["nonfinite_in_a_row"] += 1
        limit = int(self.cfg.train.get("max_nonfinite_steps") or 0)
        in_a_row = self.counters["nonfinite_in_a_row"]
        log.warning(
            "non-finite loss after step %d: step skipped (%d in a row)", self.step, in_a_row
        )
        if limit and in_a_row >= limit:
            last = self.checkpointer.named() or "none"
            raise NonFiniteLossError(
                f"the loss was NaN/Inf for {in_a_row} steps in a row after step {self.step} "
                f"(train.max_nonfinite_steps={limit}); the last checkpoint ({last}) is left as "
                "it was: lower optim.lr, check the data, or raise train.max_nonfinite_steps."
            )

    def _on_signal(self, signum: int) -> None:
        self._signal = signum

    # ---- checkpoints --------------------------------------------------------------------------

    def save_checkpoint(self) -> None:
        """Save the current step (once per step, however many hooks ask; saving.py)."""
        saving.save_step(self)

    def _lock_job_dir(self) -> JobLock | None:
        """Rank 0 locks the job folder; every rank stops when another run holds it."""
        lock, error = None, None
        if self.is_main:
            try:
                lock = JobLock(self.job_dir)
            except ConfigError as err:
                error = str(err)
        error = D.broadcast_object(error)
        if error:
            raise ConfigError(error)
        return lock

    def report(self) -> str:
        """The end-of-run summary (framework/trainer/report.py)."""
        return summary(self)

    @contextmanager
    def ema_weights(self) -> Iterator[None]:
        """The EMA weights in the model for the block (plain weights when EMA is off)."""
        self.checkpointer.wait_staged()  # a save in flight copies the weights being swapped
        with self.ema.swapped() if self.ema is not None else nullcontext():
            yield
