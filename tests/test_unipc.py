"""The Predict2.5 UniPC sampler against diffusers' UniPCMultistepScheduler configured as
docs/upstream/cosmos_predict2_5.md §4 says (the spec's §4.4 recipe), and its grids against the
documented formulas."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from framework.diffusion.unipc import UniPCSampler, flow_sigmas

schedulers = pytest.importorskip("diffusers.schedulers.scheduling_unipc_multistep")


def _x0_model(shape, seed=0):
    """A deterministic nonlinear data predictor that depends on x and s, and its velocity form
    v = (x - x0) / s, which is what diffusers' flow-prediction scheduler takes."""
    g = torch.Generator().manual_seed(seed)
    c = shape[1]
    w = torch.randn(c, c, generator=g, dtype=torch.float64) / c**0.5
    bias = torch.randn(*shape[1:], generator=g, dtype=torch.float64) * 0.3

    def x0_fn(x, s):
        xd = x.double()
        mixed = torch.einsum("dc,bc...->bd...", w, xd)
        return (torch.tanh(2.0 * mixed * (1.0 + 2.0 * s)) + bias * np.sin(3.0 * s)).float()

    def velocity(x, s):
        return (x - x0_fn(x, s)) / s

    return x0_fn, velocity


def _diffusers_run(sched, velocity, noise):
    sched.set_begin_index(0)
    x = noise.clone()
    for i, t in enumerate(sched.timesteps):
        s = float(sched.sigmas[i])
        x = sched.step(velocity(x, s), t, x).prev_sample
    return x


def _rel(a, b):
    return ((a - b).norm() / b.norm()).item()


# A wrong coefficient shows most at few steps: rho 0.6 for 0.5 in the first corrector gives
# 2e-3 at 6 steps, 8e-6 at 35.
@pytest.mark.parametrize("num_steps", [35, 6, 2])
def test_shift_grid_matches_diffusers(num_steps):
    shape = (3, 4, 2, 5, 6)
    x0_fn, velocity = _x0_model(shape)
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    sched = schedulers.UniPCMultistepScheduler(
        use_flow_sigmas=True,
        flow_shift=5.0,
        prediction_type="flow_prediction",
        solver_order=2,
        solver_type="bh2",
        predict_x0=True,
        lower_order_final=True,
        final_sigmas_type="zero",
    )
    # Upstream's grid: linspace(float32(0.999), 0, N + 1)[:-1]; diffusers applies the shift.
    sched.set_timesteps(sigmas=np.linspace(float(np.float32(0.999)), 0.0, num_steps + 1)[:-1])
    expected = _diffusers_run(sched, velocity, noise)
    sampler = UniPCSampler(num_steps=num_steps)
    assert sampler.sigmas() == pytest.approx(sched.sigmas.double().tolist(), abs=0)
    got = sampler(x0_fn, shape, noise=noise)
    assert _rel(got, expected) < 5e-6  # float32 state; measured 2e-6 at 35 steps


def test_karras_grid_matches_diffusers():
    """The post-trained 2B's grid: our N steps are diffusers' N + 1 (both evaluate N + 1 times)."""
    shape = (2, 4, 3, 4, 4)
    x0_fn, velocity = _x0_model(shape, seed=3)
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(4))
    sched = schedulers.UniPCMultistepScheduler(
        use_karras_sigmas=True,
        use_flow_sigmas=True,
        prediction_type="flow_prediction",
        sigma_max=200.0,
        sigma_min=0.01,
    )
    sched.set_timesteps(num_inference_steps=36)
    expected = _diffusers_run(sched, velocity, noise)
    sampler = UniPCSampler(num_steps=35, karras=True)
    assert np.allclose(sampler.sigmas(), sched.sigmas.double().numpy(), rtol=1e-6, atol=0)
    got = sampler(x0_fn, shape, noise=noise)
    assert _rel(got, expected) < 5e-6  # float32 state; measured 2e-6 at 35 steps


def test_grids_follow_the_documented_formulas():
    """§4 item 2: shift-5 grid from 0.99980 to 0.12809 for 35 steps; Karras 0.99502 to 0.00990."""
    s = flow_sigmas(35)
    assert len(s) == 36 and s[-1] == 0.0
    lin = 0.999 - np.arange(35) * 0.999 / 35
    assert np.allclose(s[:-1], 5 * lin / (1 + 4 * lin), rtol=1e-6)
    assert s[0] == pytest.approx(0.99980, abs=1e-5) and s[-2] == pytest.approx(0.12809, abs=1e-5)
    k = flow_sigmas(35, karras=True)
    assert len(k) == 37
    assert k[0] == pytest.approx(200 / 201, rel=1e-6) and k[-2] == pytest.approx(0.01 / 1.01, 1e-5)


def test_batch_is_stepped_whole():
    """Upstream steps only sample 0 of a batch (§8 item 1); each of ours equals its own run."""
    shape = (3, 4, 2, 4, 4)
    x0_fn, _ = _x0_model(shape, seed=5)
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(6))
    sampler = UniPCSampler(num_steps=5)
    batch = sampler(x0_fn, shape, noise=noise)
    for i in range(3):
        one = sampler(x0_fn, (1, *shape[1:]), noise=noise[i : i + 1])  # per-sample model
        assert torch.allclose(batch[i : i + 1], one, rtol=1e-6, atol=1e-6)
    assert not torch.allclose(batch[0], batch[1])


def test_constant_prediction_is_reproduced_exactly():
    """With x0_fn constant the flow ODE's solution is that constant at s = 0, whatever the grid."""
    target = torch.randn(2, 3, 1, 2, 2, generator=torch.Generator().manual_seed(7))
    out = UniPCSampler(num_steps=4)(lambda x, s: target, tuple(target.shape), seed=3)
    assert torch.equal(out, target)


def test_seeded_noise_is_numpy_normal():
    seen = {}

    def x0_fn(x, s):
        seen.setdefault("x", x.clone())
        return torch.zeros_like(x)

    UniPCSampler(num_steps=2)(x0_fn, (1, 2, 1, 2, 2), seed=11)
    expected = np.random.RandomState(11).standard_normal((1, 2, 1, 2, 2)).astype(np.float32)
    assert torch.equal(seen["x"], torch.from_numpy(expected))
