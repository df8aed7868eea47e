"""AdamW over bf16 weights with fp32 master weights and moments, one fused kernel per tensor.

Upstream trains Predict1 this way (apex FusedAdam with master_weights, upstream/cosmos_predict1.md
§6.2-6.3): the net holds bf16 weights and gets bf16 gradients, the optimizer keeps the fp32 copy.
Against fp32 weights under autocast it drops the per-step weight casts and halves the gradient
writes, and the update reads bf16 gradients: on a 7B model on one H200 this is the difference
between 0.38 s and about 0.33 s per step (docs/performance.md). One GPU or DDP only: FSDP's
mixed-precision policy already keeps sharded fp32 weights and computes in bf16.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

MASTER_KEYS = ("master", "exp_avg", "exp_avg_sq")


def adamw_master_update_(
    param: Tensor, grad: Tensor, master: Tensor, exp_avg: Tensor, exp_avg_sq: Tensor, hp: Tensor
) -> None:
    """One AdamW update in place, as torch.optim.AdamW computes it, on fp32 `master`.

    hp (fp32, on the device): lr, beta1, beta2, eps, weight_decay, 1 - beta1^t,
    sqrt(1 - beta2^t), 1 / grad_scale. Tensors, not Python floats, so a compiled kernel is not
    rebuilt when the learning rate or the step changes.
    """
    lr, beta1, beta2, eps, wd, bc1, bc2_sqrt, inv_scale = hp.unbind()
    g = grad.float() * inv_scale
    master.mul_(1 - lr * wd)
    exp_avg.lerp_(g, 1 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(g, g, value=1 - beta2)
    denom = exp_avg_sq.sqrt() / bc2_sqrt + eps
    master.sub_(lr / bc1 * exp_avg / denom)
    param.copy_(master)


_compiled = None


def _fused_update():
    """The update compiled once for any length (inputs are flattened): Inductor makes it one
    kernel that reads the bf16 gradient and the three fp32 states and writes them and the bf16
    weight (28 bytes per parameter), where eager PyTorch would take about 70."""
    global _compiled
    if _compiled is None:
        _compiled = torch.compile(adamw_master_update_, dynamic=True, fullgraph=True)
    return _compiled


class MasterAdamW(torch.optim.Optimizer):
    """AdamW whose parameters are bf16 (or any low precision) and whose state holds fp32
    `master` weights and moments; after each step the parameters are the master rounded.

    Like torch's fused AdamW it reads an optional `grad_scale` tensor (gradients are divided by
    it as they are read): the trainer folds gradient clipping into it.

    Args:
        params: parameters or groups (each group may set its own weight_decay).
        compile: fuse the update with torch.compile; None means on CUDA only (CPU runs are tiny
            and compiling there costs more than it saves).
    """

    _step_supports_amp_scaling = True

    def __init__(
        self,
        params: Iterable[Any],
        lr: float,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        compile: bool | None = None,
    ) -> None:
        defaults = {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay}
        super().__init__(params, defaults)
        # FSDP has imported torch.distributed.tensor by the time its parameters arrive here
        dtensor = getattr(getattr(torch.distributed, "tensor", None), "DTensor", ())
        for group in self.param_groups:
            for p in group["params"]:
                if isinstance(p, dtensor):
                    raise ValueError(
                        "optim.master_weights=true does not work with FSDP (its "
                        "mixed-precision policy already keeps fp32 weights); drop "
                        "optim.master_weights or use parallel.strategy=none or ddp."
                    )
        self.compile = compile
        self.grad_scale: Tensor | None = None
        self._flat: dict[Tensor, tuple[Tensor, ...]] = {}  # master, then flat views of the state

    def _update_fn(self, device: torch.device):
        use = self.compile if self.compile is not None else device.type == "cuda"
        return _fused_update() if use else adamw_master_update_

    def _init_state(self, p: Tensor) -> dict:
        state = self.state[p]
        if not state:
            state["step"] = torch.zeros((), dtype=torch.float32)
            state["master"] = p.detach().to(torch.float32, copy=True)
            state["exp_avg"] = torch.zeros_like(state["master"])
            state["exp_avg_sq"] = torch.zeros_like(state["master"])
        return state

    def _hyper(self, group: dict, t: float, device: torch.device) -> Tensor:
        beta1, beta2 = group["betas"]
        values = [group["lr"], beta1, beta2, group["eps"], group["weight_decay"]]
        values += [1 - beta1**t, math.sqrt(1 - beta2**t)]
        hp = torch.tensor(values, dtype=torch.float32).to(device, non_blocking=True)
        if self.grad_scale is None:
            return torch.cat([hp, torch.ones(1, device=device)])
        return torch.cat([hp, self.grad_scale.to(device, torch.float32).reshape(1).reciprocal()])

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        # Per tensor only what must be: this loop runs for every tensor of a 7B net (about 700)
        # while the GPU waits on it, so the step counters move in one foreach call and the
        # flat views of the state are made once. Flat inputs keep the compiled graphs to two
        # (length 1 and any length): shapes as they are hit dynamo's recompile limit on the 7B
        # net (ranks 1 to 5, dimensions of size 1).
        for group in self.param_groups:
            live = [p for p in group["params"] if p.grad is not None]
            if not live:
                continue
            states = [self._init_state(p) for p in live]
            torch._foreach_add_([s["step"] for s in states], 1.0)
            fn = self._update_fn(live[0].device)
            hps: dict[tuple[float, torch.device], Tensor] = {}
            for p, s in zip(live, states):
                key = (s["step"].item(), p.device)
                hp = hps.get(key)
                if hp is None:
                    hp = hps[key] = self._hyper(group, key[0], p.device)
                flat = self._flat.get(p)
                if flat is None or flat[0] is not s["master"]:  # new or replaced state
                    flat = self._flat[p] = (s["master"], *(s[k].view(-1) for k in MASTER_KEYS))
                fn(p.view(-1), p.grad.reshape(-1), *flat[1:], hp)
        return loss

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """torch's loader casts every floating state tensor to its parameter's dtype, which
        would round the fp32 master weights and moments to bf16: keep them fp32."""
        kept = {
            pid: {k: v for k, v in s.items() if k in MASTER_KEYS}
            for pid, s in state_dict["state"].items()
        }
        super().load_state_dict(state_dict)
        self._flat.clear()
        ids = [pid for g in state_dict["param_groups"] for pid in g["params"]]
        params = [p for g in self.param_groups for p in g["params"]]
        for pid, p in zip(ids, params):
            for k, v in kept.get(pid, {}).items():
                self.state[p][k] = v.to(device=p.device, dtype=torch.float32)


@torch.no_grad()
def params_to_(params: Iterable[Tensor], dtype: torch.dtype) -> None:
    """Store `params` in `dtype` (before the optimizer is built, which copies them to fp32)."""
    for p in params:
        if p.is_floating_point() and p.dtype != dtype:
            p.data = p.data.to(dtype)
