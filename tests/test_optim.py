"""AdamW groups, the LambdaLinear schedule and the power EMA against hand computation."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from framework.trainer.ema import PowerEMA, power_ema_beta, power_ema_gamma
from framework.trainer.optim import LambdaLinear, adamw


def test_lambda_linear_single_cycle_by_hand():
    s = LambdaLinear(
        warm_up_steps=[1000], cycle_lengths=[100000], f_start=[1e-6], f_max=[0.2], f_min=[0.1]
    )
    assert s(0) == pytest.approx(1e-6)
    assert s(500) == pytest.approx(1e-6 + (0.2 - 1e-6) * 0.5)
    assert s(1000) == pytest.approx(0.2)  # end of warm-up: the peak
    # Halfway through the decay: (L - n) / (L - W) = 0.5.
    assert s(50500) == pytest.approx(0.1 + 0.1 * 0.5)
    assert s(100000) == pytest.approx(0.1)
    # Past the last cycle the last value holds (upstream raises TypeError here).
    assert s(100001) == pytest.approx(0.1)
    assert s(10**9) == pytest.approx(0.1)


def test_lambda_linear_second_cycle_starts_after_boundary():
    s = LambdaLinear(
        warm_up_steps=[2, 4],
        cycle_lengths=[10, 20],
        f_start=[0.0, 0.5],
        f_max=[1.0, 2.0],
        f_min=[0.2, 1.0],
    )
    assert s(10) == pytest.approx(0.2)  # n <= cum_len: step 10 still belongs to cycle 0
    assert s(11) == pytest.approx(0.5 + 1.5 * 1 / 4)  # cycle 1, n = 1, warming up
    assert s(14) == pytest.approx(2.0)
    assert s(22) == pytest.approx(1.0 + 1.0 * (20 - 12) / 16)
    assert s(30) == pytest.approx(1.0)
    assert s(31) == pytest.approx(1.0)


def test_lambda_linear_rejects_mismatched_lists():
    with pytest.raises(ValueError, match="one value per cycle"):
        LambdaLinear([1], [10, 20], [0.0], [1.0], [0.5])
    with pytest.raises(ValueError, match="warm_up_steps"):
        LambdaLinear([10], [10], [0.0], [1.0], [0.5])


def test_adamw_groups_skip_decay_for_norms_and_biases():
    net = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Linear(8, 2))
    net[2].bias.requires_grad_(False)
    opt = adamw(net.parameters(), lr=1e-3, weight_decay=0.1, betas=[0.9, 0.99], eps=1e-8)
    decay, no_decay = opt.param_groups
    assert {id(p) for p in decay["params"]} == {id(net[0].weight), id(net[2].weight)}
    assert {id(p) for p in no_decay["params"]} == {
        id(net[0].bias),
        id(net[1].weight),
        id(net[1].bias),
    }
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert decay["betas"] == (0.9, 0.99)
    assert not decay["fused"]  # CPU parameters: the fused kernel is CUDA-only here


def test_adamw_without_trainable_parameters_says_so():
    p = nn.Parameter(torch.zeros(2), requires_grad=False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        adamw([p], lr=1e-3, weight_decay=0.0)


def test_power_ema_gamma_and_beta_match_spec():
    gamma = power_ema_gamma(0.1)
    assert gamma == pytest.approx(6.9372, abs=1e-4)
    s2 = 0.1**-2
    assert gamma**3 + 7 * gamma**2 + (16 - s2) * gamma + (12 - s2) == pytest.approx(0, abs=1e-6)
    assert power_ema_beta(0, gamma) == 0.0
    assert power_ema_beta(100, gamma) == pytest.approx(0.924, abs=5e-4)
    assert power_ema_beta(1000, gamma) == pytest.approx(0.9921, abs=5e-5)
    assert power_ema_beta(10000, gamma) == pytest.approx(0.99921, abs=5e-6)


def test_power_ema_update_and_swap():
    torch.manual_seed(0)
    net = nn.Linear(3, 3).to(torch.float64)  # any dtype: the shadow is fp32
    ema = PowerEMA(net, rate=0.1)
    assert all(s.dtype == torch.float32 for s in ema.shadow)
    expected = [p.detach().float().clone() for p in net.parameters()]
    for step in range(5):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(1.0)
        ema.update(step)
        beta = power_ema_beta(step, ema.gamma)
        expected = [
            beta * e + (1 - beta) * p.detach().float() for e, p in zip(expected, net.parameters())
        ]
    for s, e in zip(ema.shadow, expected):
        torch.testing.assert_close(s, e)
    trained = [p.detach().clone() for p in net.parameters()]
    with ema.swapped():
        for p, s in zip(net.parameters(), ema.shadow):
            torch.testing.assert_close(p.detach().float(), s)
    for p, t in zip(net.parameters(), trained):
        assert torch.equal(p.detach(), t)
    assert not math.isclose(float(ema.shadow[0].sum()), float(trained[0].sum()))
