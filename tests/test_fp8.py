"""Opt-in FP8 linear layers for generation (framework/models/fp8.py); torch._scaled_mm also runs
on the CPU, so the real kernel call is checked here, the speed on a GPU (docs/performance.md)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from framework.models.fp8 import E4M3_MAX, Fp8Linear, check_fp8_device, to_fp8_


def _dequantized_reference(lin: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """The same row-wise quantization written out: what the FP8 matmul must compute."""

    def q(t):
        s = t.abs().amax(-1, keepdim=True).float() / E4M3_MAX
        return (t.float() / s).clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn).float() * s

    y = q(x.reshape(-1, x.shape[-1])) @ q(lin.weight.detach()).t()
    if lin.bias is not None:
        y = y + lin.bias.float()
    return y.reshape(*x.shape[:-1], -1)


@pytest.mark.parametrize("bias", [False, True])
def test_fp8_linear_computes_the_quantized_product_and_stays_near_bf16(bias):
    torch.manual_seed(0)
    lin = nn.Linear(1024, 2048, bias=bias).bfloat16()
    x = torch.randn(2, 50, 1024).bfloat16()
    y = Fp8Linear(lin)(x)
    assert y.shape == (2, 50, 2048) and y.dtype == torch.bfloat16
    ref = _dequantized_reference(lin, x)
    torch.testing.assert_close(y.float(), ref, rtol=2e-2, atol=2e-2)
    exact = lin(x).float()
    rel = float((y.float() - exact).norm() / exact.norm())
    assert 1e-3 < rel < 0.06  # e4m3 keeps 3 mantissa bits: a few percent, never zero


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            [nn.ModuleDict({"proj": nn.Linear(1024, 1024), "adaln": nn.Linear(1024, 256)})]
        )
        self.head = nn.Linear(1024, 1024)


def test_to_fp8_replaces_only_the_token_wise_layers_of_the_blocks():
    net = _Net()
    assert to_fp8_(net) == ["blocks.0.proj"]
    assert isinstance(net.blocks[0]["proj"], Fp8Linear)
    assert isinstance(net.blocks[0]["adaln"], nn.Linear)  # out 256 < 1024: stays
    assert isinstance(net.head, nn.Linear)  # outside blocks: stays


def test_fp8_refused_off_the_gpu_with_the_fix():
    with pytest.raises(ValueError, match="Drop --fp8"):
        check_fp8_device(torch.device("cpu"))
