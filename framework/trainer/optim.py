"""AdamW with weight-decay groups, and the LambdaLinear learning-rate factor
(upstream/cosmos_predict2.md §3.6)."""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterable, Sequence

import torch
from torch import nn

from framework.trainer.master_adamw import MasterAdamW


def adamw(
    params: Iterable[nn.Parameter],
    lr: float,
    weight_decay: float,
    betas: Sequence[float] = (0.9, 0.99),
    eps: float = 1e-8,
    fused: bool | None = None,
    master_weights: bool = False,
) -> torch.optim.Optimizer:
    """AdamW over `params` with two groups: matrices decay, 1-D tensors (norms, biases) do not.

    Upstream computes the same split but gives both groups the same decay
    (upstream/cosmos_predict2.md §3.6); decaying a norm gain towards zero only fights the
    normalisation, so the no-decay group really gets 0.

    Args:
        params: the trainable parameters (the trainer passes `model.trainable_parameters()`).
        fused: torch's fused kernel (replaces apex FusedAdam); None picks it when every parameter
            lives on CUDA.
        master_weights: the parameters are (or will be, by the trainer) bf16 and the optimizer
            keeps fp32 master weights and moments (framework/trainer/master_adamw.py).
    """
    params = [p for p in params if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters; check its requires_grad flags.")
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    groups = [
        {"params": group, "weight_decay": wd}
        for group, wd in ((decay, weight_decay), (no_decay, 0.0))
        if group
    ]
    if master_weights:
        return MasterAdamW(groups, lr=lr, betas=tuple(betas), eps=eps)
    if fused is None:
        fused = all(p.device.type == "cuda" for p in params)
    # foreach (one kernel per op over all tensors) where not fused: torch's CPU default is a
    # per-tensor loop, 6% of a CPU step of the default job.
    return torch.optim.AdamW(
        groups, lr=lr, betas=tuple(betas), eps=eps, fused=fused, foreach=None if fused else True
    )


class LambdaLinear:
    """Learning-rate factor per step: linear warm-up then linear decay, cycle by cycle.

    Within cycle c (step n counted from the cycle's start, length L, warm-up W):
    n < W: f_start + (f_max - f_start) * n / W;  else: f_min + (f_max - f_min) * (L - n) / (L - W).
    A step belongs to the first cycle whose cumulative end is >= it (upstream's boundary). Past the
    last cycle the last value (f_min of the last cycle) is held, where upstream crashes.
    """

    def __init__(
        self,
        warm_up_steps: Sequence[int],
        cycle_lengths: Sequence[int],
        f_start: Sequence[float],
        f_max: Sequence[float],
        f_min: Sequence[float],
    ) -> None:
        lists = {
            "warm_up_steps": warm_up_steps,
            "cycle_lengths": cycle_lengths,
            "f_start": f_start,
            "f_max": f_max,
            "f_min": f_min,
        }
        if len({len(v) for v in lists.values()}) != 1:
            lens = ", ".join(f"{k}={len(v)}" for k, v in lists.items())
            raise ValueError(
                f"LambdaLinear needs one value per cycle in every list ({lens}); "
                "fix the sched block."
            )
        for w, length in zip(warm_up_steps, cycle_lengths):
            if not 0 <= w < length:
                raise ValueError(
                    f"LambdaLinear: warm_up_steps={w} must be in [0, cycle length "
                    f"{length}); fix sched.warm_up_steps or sched.cycle_lengths."
                )
        self.warm_up_steps = [int(v) for v in warm_up_steps]
        self.cycle_lengths = [int(v) for v in cycle_lengths]
        self.f_start = [float(v) for v in f_start]
        self.f_max = [float(v) for v in f_max]
        self.f_min = [float(v) for v in f_min]
        self.cum = [0, *itertools.accumulate(self.cycle_lengths)]

    def __call__(self, step: int) -> float:
        if step > self.cum[-1]:
            return self.f_min[-1]
        c = max(bisect.bisect_left(self.cum, step, lo=1) - 1, 0)
        n = step - self.cum[c]
        w, length = self.warm_up_steps[c], self.cycle_lengths[c]
        if n < w:
            return self.f_start[c] + (self.f_max[c] - self.f_start[c]) * n / w
        return self.f_min[c] + (self.f_max[c] - self.f_min[c]) * (length - n) / (length - w)
