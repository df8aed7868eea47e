"""Power EMA of the trained weights, kept in fp32 (EDM2 style, upstream/cosmos_predict2.md §3.7)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from torch import Tensor, nn

# Wrapper segments that torch inserts into parameter names (activation checkpointing, compile,
# FSDP1); checkpoints use the clean names, as get_model_state_dict does.
_WRAPPER_SEGMENTS = ("_checkpoint_wrapped_module.", "_orig_mod.", "_fsdp_wrapped_module.")


def clean_name(name: str) -> str:
    for seg in _WRAPPER_SEGMENTS:
        name = name.replace(seg, "")
    return name


def ema_key(key: str) -> str:
    """`net.x` -> `net_ema.x`: a top-level module's key in the EMA copy (checkpoint layout)."""
    head, _, rest = key.partition(".")
    return f"{head}_ema.{rest}"


def is_ema_key(key: str) -> bool:
    return key.partition(".")[0].endswith("_ema")


def plain_key(key: str) -> str:
    head, _, rest = key.partition(".")
    return f"{head.removesuffix('_ema')}.{rest}"


def relative_std(gamma: float) -> float:
    """EDM2's relative width of the power EMA with exponent gamma (Karras et al. 2024, eq. 3):
    sqrt(gamma + 1) / ((gamma + 2) sqrt(gamma + 3)). It falls from 1/sqrt(12) at gamma = 0 as
    gamma grows; a wider average needs gamma < 0, which weights the first steps most."""
    return math.sqrt(gamma + 1) / ((gamma + 2) * math.sqrt(gamma + 3))


MAX_RATE = relative_std(0.0)  # 1/sqrt(12) = 0.2887


def power_ema_gamma(rate: float) -> float:
    """The power-EMA exponent for relative std `rate` in (0, MAX_RATE]: the largest real root of
    x^3 + 7x^2 + (16 - s^-2) x + (12 - s^-2) (EDM2, Karras et al. 2024); s = 0.1 gives 6.9372."""
    if not 0 < float(rate) <= MAX_RATE:
        raise ValueError(f"the power EMA's relative std must be in (0, {MAX_RATE:.4f}], not {rate}")
    s2 = float(rate) ** -2
    roots = np.roots([1.0, 7.0, 16.0 - s2, 12.0 - s2])
    return float(max(r.real for r in roots if abs(r.imag) < 1e-9))


def power_ema_beta(step: int, gamma: float) -> float:
    """Decay used at optimizer step `step` (counted before the increment, as upstream)."""
    return 0.0 if step < 1 else (1.0 - 1.0 / (step + 1)) ** (gamma + 1.0)


class PowerEMA:
    """fp32 shadow copies of a model's trainable parameters (local shards under FSDP2), named as
    in the model's state dict (`net.x`, `logvar.y`)."""

    def __init__(self, model: nn.Module, rate: float) -> None:
        self.rate = float(rate)
        self.gamma = power_ema_gamma(rate)
        named = [(clean_name(n), p) for n, p in model.named_parameters() if p.requires_grad]
        self.names = [n for n, _ in named]
        self.params = [p for _, p in named]
        with torch.no_grad():
            self.shadow = [p.detach().to(torch.float32, copy=True) for p in self.params]

    @torch.no_grad()
    def update(self, step: int) -> None:
        beta = power_ema_beta(step, self.gamma)
        current = [p.detach().to(torch.float32) for p in self.params]
        torch._foreach_lerp_(self.shadow, current, 1.0 - beta)

    @torch.no_grad()
    def copy_from_params(self) -> None:
        """Reset the shadow to the current weights (after loading EMA values into the net)."""
        for s, p in zip(self.shadow, self.params):
            s.copy_(p.detach())

    @contextmanager
    def swapped(self) -> Iterator[None]:
        """Run the block with the EMA weights in the net (e.g. to sample), then restore."""
        with torch.no_grad():
            backup = [p.detach().clone() for p in self.params]
            for p, s in zip(self.params, self.shadow):
                p.copy_(s)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, b in zip(self.params, backup):
                    p.copy_(b)

    @torch.no_grad()
    def nonfinite(self, device: torch.device) -> torch.Tensor:
        """1.0 when this rank's shadow holds a NaN/Inf value, else 0.0 (one fused norm per
        tensor; no host sync)."""
        local = [s.to_local() if hasattr(s, "to_local") else s for s in self.shadow]
        if not local:
            return torch.zeros((), device=device)
        norms = torch.stack(torch._foreach_norm(local))
        return (~norms.isfinite().all()).float().to(device)

    def full_tensors(self) -> Iterator[tuple[str, Tensor]]:
        """(name, full fp32 CPU tensor) per parameter; every rank must iterate (gathers shards)."""
        for name, s in zip(self.names, self.shadow):
            full = s.full_tensor() if hasattr(s, "full_tensor") else s
            yield name, full.detach().cpu()
