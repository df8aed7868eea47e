"""Opt-in FP8 matmuls for generation (`video2world --fp8`): the DiT's token-wise linear layers
run as float8 e4m3 matmuls through torch._scaled_mm, with one scale per weight row (set once)
and one per activation row (at every call). No extra dependency: torch's own kernel (cuBLASLt on
NVIDIA GPUs of compute capability 8.9+: H100, H200, L40S, RTX 4090).

Only inference: the weights are quantized once, there is no backward. Attention stays bf16 (it
holds two thirds of the 2B model's FLOPs at 480p, docs/performance.md), so FP8 can speed up at
most the other third.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

E4M3_MAX = 448.0  # largest finite float8_e4m3fn
MIN_FEATURES = 1024  # token-wise projections only; the small adaLN layers stay as they are


def _row_scales(x: Tensor) -> Tensor:
    """Per-row scale so the row's largest magnitude maps to the e4m3 maximum (fp32, [rows, 1])."""
    return x.abs().amax(dim=-1, keepdim=True).float().clamp(min=1e-12) / E4M3_MAX


def _to_e4m3(x: Tensor, scale: Tensor) -> Tensor:
    # Clamped because casting a value past 448 to e4m3 gives NaN, and rounding in the division
    # can land a hair above it.
    return (x.float() / scale).clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn)


class Fp8Linear(nn.Module):
    """A bias-free or biased nn.Linear computed as an FP8 matmul with row-wise scales."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        w = linear.weight.detach()
        scale = _row_scales(w)  # [out, 1]
        self.register_buffer("weight_e4m3", _to_e4m3(w, scale))  # [out, in], row-major
        self.register_buffer("weight_scale", scale.t().contiguous())  # [1, out]
        self.bias = linear.bias
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.out_dtype = w.dtype if w.dtype != torch.float32 else torch.bfloat16

    def forward(self, x: Tensor) -> Tensor:
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features)
        scale = _row_scales(x2)
        y = torch._scaled_mm(
            _to_e4m3(x2, scale),
            self.weight_e4m3.t(),  # column-major [in, out], as the kernel wants its second operand
            scale_a=scale,
            scale_b=self.weight_scale,
            out_dtype=self.out_dtype,
        )
        if self.bias is not None:
            y = y + self.bias.to(y.dtype)
        return y.reshape(*lead, self.out_features).to(x.dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, e4m3"


def check_fp8_device(device: torch.device) -> None:
    """Raise ValueError with the fix when `device` cannot run FP8 matmuls fast."""
    device = torch.device(device)
    if device.type != "cuda":
        raise ValueError(
            f"--fp8 needs an NVIDIA GPU of compute capability 8.9 or newer (H100, H200, L40S, "
            f"RTX 4090); this run is on {device.type}. Drop --fp8."
        )
    major, minor = torch.cuda.get_device_capability(device)
    if (major, minor) < (8, 9):
        name = torch.cuda.get_device_name(device)
        raise ValueError(
            f"--fp8 needs compute capability 8.9 or newer; {name} has {major}.{minor}. Drop --fp8."
        )


@torch.no_grad()
def to_fp8_(net: nn.Module, prefix: str = "blocks.") -> list[str]:
    """Replace the token-wise linear layers under `prefix` (both features >= 1024 and multiples
    of 16, as the kernel needs) by Fp8Linear; returns their names. Call after the weights are
    loaded and before compiling."""
    names = []
    for name, module in list(net.named_modules()):
        if not (isinstance(module, nn.Linear) and name.startswith(prefix)):
            continue
        dims = (module.in_features, module.out_features)
        if min(dims) < MIN_FEATURES or any(d % 16 for d in dims):
            continue
        parent_name, _, child = name.rpartition(".")
        setattr(net.get_submodule(parent_name), child, Fp8Linear(module))
        names.append(name)
    return names
