"""Small process-level helpers of the trainer: seeds and RNG state, determinism, signals, the job
folder's run files, batch placement and gradient sanitising. The job folder's layout and lock
are framework/jobs.py's."""

from __future__ import annotations

import logging
import os
import random
import signal
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from framework import jobs
from framework.config import ConfigError
from framework.io import atomic_write_text
from framework.trainer.metrics import plain_config

# Signals that mean "finish the step, save, exit": SLURM's --signal=USR1@<secs> warning and the
# SIGTERM that schedulers and torchrun send before killing.
PREEMPTION_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)

log = logging.getLogger(__name__)


def write_run_files(job_dir: Path, cfg: DictConfig, overrides: Iterable[str]) -> None:
    """config.yaml (resolved, secrets masked) and overrides.txt (appended on each start)."""
    job_dir.mkdir(parents=True, exist_ok=True)
    text = OmegaConf.to_yaml(OmegaConf.create(plain_config(cfg)), sort_keys=False)
    atomic_write_text(job_dir / jobs.CONFIG, text)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    with open(job_dir / jobs.OVERRIDES, "a") as f:
        f.write(f"# started {stamp}\n" + "".join(f"{o}\n" for o in overrides))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def set_determinism(deterministic: bool) -> None:
    if deterministic:
        # cuBLAS needs a fixed workspace to be deterministic (CUDA docs, "Reproducibility").
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    else:
        # Upstream's speed settings (upstream/cosmos_predict2.md §3.1): TF32 for fp32 matmuls, cuDNN
        # autotuning.
        torch.set_float32_matmul_precision("high")
        torch.backends.cudnn.benchmark = True


def rng_state() -> dict[str, Any]:
    """This process's random streams, in types torch.load(weights_only=True) accepts."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def local_grads(params: Iterable[torch.nn.Parameter]) -> list[torch.Tensor]:
    """This rank's gradient tensors (the local shard of a DTensor gradient)."""
    return [
        p.grad.to_local() if hasattr(p.grad, "to_local") else p.grad
        for p in params
        if p.grad is not None
    ]


@torch.no_grad()
def squared_grad_norm(params: Iterable[torch.nn.Parameter], device: torch.device) -> torch.Tensor:
    """Sum of squares of this rank's gradient values (one fused norm per tensor), NaN/Inf if any
    value is. Summed over ranks and divided by the replicas it is the squared global norm: one
    number serves the non-finite check, clipping and the log."""
    grads = local_grads(params)
    if not grads:
        return torch.zeros((), device=device)
    return torch.stack(torch._foreach_norm(grads, dtype=torch.float32)).square().sum()


@torch.no_grad()
def clip_by_norm_(
    optimizer: torch.optim.Optimizer,
    params: list[torch.nn.Parameter],
    norm: torch.Tensor,
    max_norm: float,
) -> None:
    """Clip by the global `norm` as clip_grad_norm_ does (factor max_norm / (norm + 1e-6), at
    most 1), with no host sync. A fused Adam/AdamW divides each gradient by `grad_scale` as it
    reads it (the hook GradScaler uses), so there the clip costs no pass over the gradients (6 ms
    of a 0.388 s Predict1 7B step on an H200, docs/performance.md); the trainer resets it after
    the step. Other optimizers get the gradients scaled in place."""
    if getattr(optimizer, "_step_supports_amp_scaling", False):
        optimizer.grad_scale = ((norm + 1e-6) / max_norm).clamp(min=1.0)
    else:
        torch._foreach_mul_(local_grads(params), (max_norm / (norm + 1e-6)).clamp(max=1.0))


@torch.no_grad()
def frozen_to_(model: torch.nn.Module, dtype: torch.dtype) -> int:
    """Store the parameters that do not train (a LoRA base) in `dtype`; returns the bytes saved.

    Under bf16 autocast they need no fp32 master copy: autocast casts them to bf16 at every use
    anyway, so the forward is unchanged while their memory halves (14B: 57.6 -> 28.8 GB), and
    the official checkpoints they come from are bf16, so nothing is rounded."""
    saved = 0
    for p in model.parameters():
        if not p.requires_grad and p.is_floating_point() and p.dtype != dtype:
            before = p.numel() * p.element_size()
            p.data = p.data.to(dtype)
            saved += before - p.numel() * p.element_size()
    return saved


@torch.no_grad()
def zero_nonfinite_grads_(
    params: Iterable[torch.nn.Parameter], device: torch.device
) -> torch.Tensor:
    """Set NaN/Inf gradient values to 0 (local shards) and return how many there were.

    Upstream uses nan_to_num, which turns Inf into the largest float and lets clipping shrink the
    whole update to nothing; zero drops only the broken values.
    """
    grads = local_grads(params)
    count = torch.zeros((), dtype=torch.long, device=device)
    # Fast path: one fused norm per tensor; all finite means nothing to zero. The per-element scan
    # below cost ~8% of a CPU step of the default job. A norm that overflows with finite values
    # only sends us to the exact scan.
    if not grads or bool(torch.stack(torch._foreach_norm(grads)).isfinite().all()):
        return count
    for g in grads:
        bad = ~torch.isfinite(g)
        count += bad.sum()
        g.masked_fill_(bad, 0.0)
    return count


@contextmanager
def preemption_signals(on_signal: Callable[[int], None]) -> Iterator[None]:
    """Route SIGTERM/SIGUSR1 to `on_signal` inside the block (main thread only)."""
    previous = {}
    try:
        for sig in PREEMPTION_SIGNALS:
            previous[sig] = signal.signal(sig, lambda signum, frame: on_signal(signum))
    except ValueError:  # not the main thread: leave signals to whoever owns them
        pass
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def autocast_dtype(
    precision: str, device: torch.device, master_weights: bool
) -> torch.dtype | None:
    """The autocast dtype of train.precision on this device (None: no autocast)."""
    if precision not in ("bf16", "fp32"):
        raise ConfigError(f"train.precision={precision!r} must be bf16 or fp32; fix it.")
    if precision == "bf16" and device.type != "cuda" and not master_weights:
        log.warning("train.precision=bf16 needs CUDA; this CPU run computes in fp32.")
        return None
    return torch.bfloat16 if precision == "bf16" else None
