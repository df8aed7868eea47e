"""A toy model, dataset and experiment for the trainer tests (CPU, seconds per run).

Subprocess tests load it with WORLDTUNE_EXPERIMENTS=tests.toy_experiments, or run it directly:
`python -c "from tests.toy_experiments import main; main()" toy_regression key=value ...`
(under torchrun: `torchrun ... --no-python python -c "..." toy_regression ...`).
"""

from __future__ import annotations

import os
import signal
import sys

import torch
from omegaconf import OmegaConf
from torch import Tensor, nn
from torch.utils.data import Dataset

from framework.config import L, apply_overrides, experiment, get
from framework.hooks import Hook, default_hooks
from framework.trainer.optim import LambdaLinear, adamw


class ToyDataset(Dataset):
    """y = x @ w + 0.01 noise, fixed by `seed`; items are dicts like real datasets yield."""

    def __init__(
        self, size: int = 64, dim: int = 8, seed: int = 0, kill_worker_after: int = -1
    ) -> None:
        """`kill_worker_after`: a loader worker SIGKILLs itself at its item after that many
        (as the out-of-memory killer would), while TOY_SIGNAL_ARMED is set."""
        self.kill_worker_after, self.served = kill_worker_after, 0
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(size, dim, generator=g)
        w = torch.randn(dim, 1, generator=g)
        self.y = self.x @ w + 0.01 * torch.randn(size, 1, generator=g)
        self.bad_samples = 0

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        in_worker = torch.utils.data.get_worker_info() is not None
        if in_worker and os.environ.get("TOY_SIGNAL_ARMED") and self.kill_worker_after >= 0:
            if self.served >= self.kill_worker_after:
                os.kill(os.getpid(), signal.SIGKILL)
            self.served += 1
        return {"x": self.x[i], "y": self.y[i], "index": torch.tensor(i)}


class ToyModel(nn.Module):
    """An MLP regressor with the trainer's model protocol.

    `input_noise` draws from the torch RNG every step, so exact resume needs the RNG restored.
    Calls listed in `nan_calls` (0-based training_step calls), and every call from `nan_from`,
    return a NaN loss (by call, not step: a skipped step is retried at the same step number).
    """

    def __init__(
        self,
        dim: int = 8,
        hidden: int = 16,
        input_noise: float = 0.0,
        nan_calls: tuple[int, ...] = (),
        nan_from: int = -1,
    ) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim, hidden), nn.LayerNorm(hidden), nn.GELU(), nn.Linear(hidden, 1)
        )
        self.input_noise = input_noise
        self.nan_calls, self.nan_from = set(nan_calls), nan_from
        self.seen: list[Tensor] = []  # sample indices per micro-batch, for data-order tests

    def training_step(self, batch: dict, step: int) -> tuple[Tensor, dict[str, float]]:
        self.seen.append(batch["index"].clone())
        x = batch["x"]
        if self.input_noise:
            x = x + self.input_noise * torch.randn_like(x)
        loss = nn.functional.mse_loss(self.net(x), batch["y"])
        call = len(self.seen) - 1
        if call in self.nan_calls or 0 <= self.nan_from <= call:
            loss = loss * float("nan")
        return loss, {"mse": loss.detach()}

    def trainable_parameters(self) -> list[nn.Parameter]:
        return list(self.net.parameters())

    def parallelize(self, mesh, parallel) -> None:
        if parallel.strategy == "fsdp":
            from torch.distributed.fsdp import fully_shard

            for layer in self.net:
                if isinstance(layer, nn.Linear):
                    fully_shard(layer, mesh=mesh)
            fully_shard(self.net, mesh=mesh)

    def flops_per_sample(self, batch: dict) -> float:
        return 6.0 * sum(p.numel() for p in self.net.parameters())


class SignalAtStep(Hook):
    """Sends `sig` to this process after `step` (SIGKILL simulates a crash, SIGTERM a
    preemption); only when the env var TOY_SIGNAL_ARMED is set, so a restart runs through."""

    def __init__(self, step: int, sig: str = "SIGKILL") -> None:
        self.step, self.sig = step, getattr(signal, sig)

    def after_step(self, trainer, step: int, loss: float, metrics: dict) -> None:
        if step == self.step and os.environ.get("TOY_SIGNAL_ARMED") and trainer.rank == 0:
            os.kill(os.getpid(), self.sig)


@experiment
def toy_regression():
    """An 8-d MLP regression on 64 in-memory samples; 8 steps in about a second on a CPU."""
    return OmegaConf.create(
        {
            "job": {
                "project": "worldtune_tests",
                "group": "toy",
                "name": None,
                "output_root": "${oc.env:OUTPUT_ROOT,checkpoints}",
            },
            "model": L(ToyModel)(dim=8, hidden=16, input_noise=0.0, nan_calls=[], nan_from=-1),
            "data": {
                "dataset": L(ToyDataset)(size=64, dim=8),
                "batch_size": 4,
                "num_workers": 0,
                "pin_memory": False,
                "persistent_workers": False,
                "prefetch_factor": None,
                "drop_last": True,
                "max_bad_fraction": 0.0,
            },
            "optim": L(adamw)(lr=1e-2, weight_decay=0.01, betas=[0.9, 0.99], eps=1e-8),
            "sched": L(LambdaLinear)(
                warm_up_steps=[2], cycle_lengths=[100], f_start=[0.1], f_max=[1.0], f_min=[0.5]
            ),
            "train": {
                "max_steps": 8,
                "grad_accum": 1,
                "grad_clip": 1.0,
                "precision": "fp32",
                "seed": 0,
                "deterministic": True,
                "ema": {"enabled": False, "rate": 0.1},
                "max_nonfinite_steps": 3,
            },
            "parallel": {
                "strategy": "none",
                "shard_size": -1,
                "activation_checkpointing": "none",
                "compile": False,
            },
            "checkpoint": {
                "save_iter": 4,
                "keep_last": 0,
                "load_path": "",
                "ignore_keys": [],
                "load_ema": False,
            },
            "logging": {"every": 1, "wandb": {"mode": "disabled", "project": None, "entity": None}},
            "hooks": {**default_hooks(), "progress": None},
        }
    )


def main(argv: list[str] | None = None) -> int:
    """`toy_regression key=value ...` -> the trainer's exit code (the launch/train.py stand-in)."""
    from framework.trainer import run

    argv = sys.argv[1:] if argv is None else argv
    cfg = apply_overrides(get(argv[0]), argv[1:])
    code = run(cfg, argv[1:])
    sys.exit(code)
