"""Predict1's samplers: the official inference Euler sampler against Appendix A's grid and
diffusers' EDMEulerScheduler, and the training-side RES 2ab grid
(docs/upstream/cosmos_predict1.md §3.8, Appendix A)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from framework.diffusion.edm import edm_scaling
from framework.diffusion.samplers import (
    EulerEDMSampler,
    MultistepSampler,
    edm_euler_sigmas,
    euler_edm_sample,
    karras_sigmas,
)


def test_euler_grid_matches_appendix_a():
    s = edm_euler_sigmas(35)
    assert s.dtype == torch.float64 and s.shape == (36,)  # 35 Karras points, then 0
    head = [80, 67.13, 56.07, 46.61, 38.56]
    tail = [0.00599, 0.00295, 0.00134, 0.00055, 0.0002, 0.0]
    assert s[:5].tolist() == pytest.approx(head, rel=2e-4)
    assert s[-6:].tolist() == pytest.approx(tail, rel=1e-2, abs=1e-12)
    # Negative control: 0.002 (diffusers' converter) gives another grid.
    assert edm_euler_sigmas(35, sigma_min=0.002)[-2].item() == pytest.approx(0.002)
    assert edm_euler_sigmas(1).tolist() == [80.0, 0.0]


def test_res_grid_matches_appendix_a_and_multistep_defaults():
    s = karras_sigmas(35)  # MultistepSampler's grid: 36 points, 80 -> 0.002
    assert s[:3].tolist() == pytest.approx([80, 68.33, 58.14], rel=2e-4)
    assert s[-3:].tolist() == pytest.approx([0.00727, 0.00393, 0.002], rel=2e-3)
    res = MultistepSampler()
    assert (res.num_steps, res.sigma_max, res.sigma_min, res.rho) == (35, 80.0, 0.002, 7.0)


def test_res_sampler_ends_with_a_clean_denoise_at_sigma_min():
    # Upstream's `sample_clean`: after 35 steps one more x0 call at sigma_min (§3.8).
    seen = []
    MultistepSampler()(lambda x, s: seen.append(s) or torch.zeros_like(x), (1, 2), seed=0)
    assert len(seen) == 36 and seen[-1] == pytest.approx(0.002) and seen[0] == 80.0


def test_euler_step_by_hand_and_last_step_lands_on_x0():
    outputs = [torch.full((1, 2), 3.0), torch.full((1, 2), -1.0)]
    seen = []

    def x0_fn(x, sigma):
        seen.append((x.clone(), sigma))
        return outputs[len(seen) - 1]

    out = euler_edm_sample(x0_fn, (1, 2), num_steps=2, noise=torch.ones(1, 2))
    s = edm_euler_sigmas(2).tolist()  # [80, 0.0002, 0]
    x1 = 1.0 + (1.0 - 3.0) / s[0] * (s[1] - s[0])  # x + d (s_next - s), d = (x - x0) / s
    assert seen[1][0][0, 0].item() == pytest.approx(x1, rel=1e-6)
    assert [v for _, v in seen] == pytest.approx(s[:2])
    torch.testing.assert_close(out, outputs[1])  # sigma 0: the last x0 estimate


def test_initial_noise_is_seeded_numpy_times_diffusers_init_sigma():
    first = []
    EulerEDMSampler(num_steps=1)(lambda x, s: first.append(x) or torch.zeros_like(x), (2, 3), 5)
    want = np.random.RandomState(5).standard_normal((2, 3)) * math.sqrt(80.0**2 + 1)
    torch.testing.assert_close(first[0], torch.from_numpy(want).float())


def test_constant_target_is_reached():
    target = torch.linspace(-1, 1, 12).view(1, 3, 4)
    out = EulerEDMSampler(num_steps=6)(lambda x, s: target, (1, 3, 4), seed=1)
    torch.testing.assert_close(out, target)


def test_matches_diffusers_edm_euler_scheduler_with_upstream_settings():
    """The official pipeline's loop (model_v2w.py) with the scheduler upstream builds:
    EDMEulerScheduler(sigma_max=80, sigma_min=0.0002, sigma_data=0.5), 35 steps."""
    from diffusers import EDMEulerScheduler

    torch.manual_seed(0)
    target = torch.randn(1, 4, 3, 2, 2)
    w = 0.7

    def raw_net(x_scaled, c_noise):  # an arbitrary smooth F of the scaled input and timestep
        return torch.tanh(w * x_scaled + c_noise) - target

    def x0_fn(x, sigma):
        c_skip, c_out, c_in, c_noise = edm_scaling(torch.tensor(sigma, dtype=torch.float64))
        return (c_skip * x + c_out * raw_net(c_in * x, c_noise)).float()

    noise = torch.randn(1, 4, 3, 2, 2, dtype=torch.float64)
    sched = EDMEulerScheduler(sigma_max=80, sigma_min=0.0002, sigma_data=0.5)
    sched.set_timesteps(35)
    x = (noise * sched.init_noise_sigma).float()
    for t in sched.timesteps:
        scaled = sched.scale_model_input(x, t)
        x = sched.step(raw_net(scaled, t), t, x).prev_sample
    assert sched.sigmas.tolist() == pytest.approx(edm_euler_sigmas(35).tolist(), rel=1e-6)
    ours = euler_edm_sample(x0_fn, x.shape, 35, noise=noise * math.sqrt(80.0**2 + 1))
    torch.testing.assert_close(ours, x, rtol=1e-4, atol=1e-4)
    # Negative control: the converter's 0.002 with a final sigma_min step is another sampler.
    other = EDMEulerScheduler(sigma_max=80, sigma_min=0.002, final_sigmas_type="sigma_min")
    other.set_timesteps(35)
    assert other.sigmas[-1].item() == pytest.approx(0.002)
