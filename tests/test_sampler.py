"""Sampler checks against hand computations from upstream/cosmos_predict2.md §4.3."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from framework.diffusion.conditioning import guided_x0
from framework.diffusion.samplers import (
    initial_noise,
    karras_sigmas,
    multistep_coefficients,
    sample,
)


def test_karras_table():
    s = karras_sigmas(35)
    assert s.dtype == torch.float64 and s.shape == (36,)
    assert s[0].item() == pytest.approx(80.0, rel=1e-12)
    assert s[-1].item() == pytest.approx(0.002, rel=1e-12)
    # i = 17: (80^(1/7) + 17/35 * (0.002^(1/7) - 80^(1/7)))^7
    hand = (80 ** (1 / 7) + 17 / 35 * (0.002 ** (1 / 7) - 80 ** (1 / 7))) ** 7
    assert s[17].item() == pytest.approx(hand, rel=1e-12)
    assert bool((s[1:] < s[:-1]).all())


def test_multistep_coefficients_by_hand():
    sp, sc, sn = 10.0, 5.0, 2.0
    h = math.log(sc / sn)  # lambda = -log sigma
    r = math.log(sc / sp) / h
    phi1 = (math.exp(-h) - 1) / (-h)
    phi2 = (phi1 - 1) / (-h)
    b2 = phi2 / r
    b1 = phi1 - b2
    decay, w_cur, w_prev = multistep_coefficients(sp, sc, sn)
    assert decay == pytest.approx(0.4)
    assert w_cur == pytest.approx(h * b1)
    assert w_prev == pytest.approx(h * b2)
    # the x0 weights sum to 1 - decay, so a constant x0 is a fixed point
    assert w_cur + w_prev == pytest.approx(0.6)


def test_one_multistep_update_matches_formula():
    # Two steps with a scripted x0_fn; step 1 must use the 2M update from x0_0 and x0_1.
    outputs = [torch.full((1, 2), 3.0), torch.full((1, 2), 5.0), torch.full((1, 2), 0.0)]
    seen: list[torch.Tensor] = []

    def x0_fn(x, sigma):
        seen.append(x.clone())
        return outputs[len(seen) - 1]

    noise = torch.ones(1, 2)
    sample(x0_fn, (1, 2), num_steps=2, noise=noise)
    s = karras_sigmas(2).tolist()
    x1 = (s[0] - s[1]) / s[0] * 3.0 + s[1] / s[0] * 1.0
    decay, w_cur, w_prev = multistep_coefficients(s[0], s[1], s[2])
    x2 = decay * x1 + w_cur * 5.0 + w_prev * 3.0
    assert seen[1][0, 0].item() == pytest.approx(x1, rel=1e-6)
    assert seen[2][0, 0].item() == pytest.approx(x2, rel=1e-5)


def test_constant_target_is_reached():
    target = torch.linspace(-1, 1, 12).view(1, 3, 4)
    out = sample(lambda x, s: target, (1, 3, 4), num_steps=10, seed=1)
    torch.testing.assert_close(out, target)


def _gaussian_denoiser(mu: float, std: float):
    # Exact posterior mean for data ~ N(mu, std^2) under x = x0 + sigma * eps.
    def x0_fn(x, sigma):
        return mu + std**2 / (std**2 + sigma**2) * (x - mu)

    return x0_fn


def _gaussian_errors(num_steps: int) -> tuple[float, float]:
    """Max error of the 2M sampler and of plain Euler against the exact Gaussian PF-ODE solution.

    For data ~ N(mu, std^2) the ODE gives
    x(sigma) = mu + (x_T - mu) sqrt(std^2+sigma^2)/sqrt(std^2+80^2);
    the final posterior mean at sigma_min then equals mu + (x_T - mu) std^2 / (sqrt(std^2+0.002^2)
    sqrt(std^2+80^2)).
    """
    mu, std, shape = 0.5, 0.7, (4, 64)
    f = _gaussian_denoiser(mu, std)
    x_t = initial_noise(shape, 0)
    exact = mu + (x_t - mu) * std**2 / (math.hypot(std, 0.002) * math.hypot(std, 80.0))
    out = sample(f, shape, num_steps=num_steps, seed=0).double()
    s = karras_sigmas(num_steps).tolist()
    x = x_t
    for i in range(num_steps):
        x = (s[i] - s[i + 1]) / s[i] * f(x, s[i]) + s[i + 1] / s[i] * x
    return (out - exact).abs().max().item(), (f(x, s[-1]) - exact).abs().max().item()


def test_solves_gaussian_probability_flow_ode_to_second_order():
    err35, euler35 = _gaussian_errors(35)
    err70, euler70 = _gaussian_errors(70)
    # Measured: 2M 0.031 -> 0.0071 (x1/4.4), Euler 0.133 -> 0.068 (x1/2) when steps double.
    assert err35 < 0.05
    assert err70 / err35 < 0.3
    assert 0.4 < euler70 / euler35 < 0.6
    assert err35 < euler35 / 3


def test_initial_noise_matches_numpy_and_is_seeded():
    a = initial_noise((2, 3), seed=7)
    ref = np.random.RandomState(7).standard_normal((2, 3)) * 80
    np.testing.assert_allclose(a.numpy(), ref)
    assert torch.equal(a, initial_noise((2, 3), seed=7))
    assert not torch.equal(a, initial_noise((2, 3), seed=8))
    out1 = sample(_gaussian_denoiser(0, 1), (2, 3), num_steps=5, seed=3)
    out2 = sample(_gaussian_denoiser(0, 1), (2, 3), num_steps=5, seed=3)
    assert torch.equal(out1, out2)


def test_cfg_formula():
    c, u = torch.tensor([1.0, 2.0]), torch.tensor([0.5, 3.0])
    # guidance 7: c + 7 (c - u)
    torch.testing.assert_close(guided_x0(c, u, 7.0), torch.tensor([4.5, -5.0]))
    torch.testing.assert_close(guided_x0(c, u, 0.0), c)
