"""The Predict2.5 flow-matching objective against docs/upstream/cosmos_predict2_5.md §3: the noise
level is looked up in diffusers' FlowMatchEulerDiscreteScheduler(shift=5) table as upstream does,
and the loss is recomputed from what the net was given with the documented formulas."""

from __future__ import annotations

import pytest
import torch

from framework.diffusion.conditioning import Condition, guided_x0
from framework.diffusion.flow_matching import (
    FlowMatchingObjective,
    sample_num_frames,
    sample_sigma,
)

schedulers = pytest.importorskip("diffusers.schedulers.scheduling_flow_match_euler_discrete")


class RecordingNet:
    """Returns a fixed function of its input and remembers what it was called with."""

    def __init__(self):
        self.calls = []

    def __call__(self, x, timesteps, text, condition_video_input_mask_B_C_T_H_W, padding_mask):
        self.calls.append(
            dict(
                x=x.clone(),
                t=timesteps.clone(),
                text=text,
                mask=condition_video_input_mask_B_C_T_H_W,
            )
        )
        return torch.sin(x) + 0.01 * timesteps.mean()


def test_sigma_is_upstreams_table_lookup():
    """§3 items 1-2: u = sigmoid(N(0,1)); upstream indexes the shift-5 scheduler's timesteps at
    floor(1000 u) and takes sigma = timestep / 1000."""
    sched = schedulers.FlowMatchEulerDiscreteScheduler(shift=5.0)
    g = torch.Generator().manual_seed(0)
    got = sample_sigma(4096, 5.0, generator=g)
    n = torch.randn(4096, 1, generator=torch.Generator().manual_seed(0))
    index = (torch.sigmoid(n) * 1000).long().squeeze(1)
    expected = sched.timesteps[index] / 1000.0
    assert torch.allclose(got.squeeze(1), expected.float(), rtol=1e-6, atol=0)
    assert got.min() >= 0.00498 and got.max() <= 1.0


def test_sigma_distribution_matches_the_measured_upstream_moments():
    """Spec §9.3 (upstream's code run): mean 0.795, median 0.833, 5th-95th percentile 0.49-0.963."""
    s = sample_sigma(400_000, 5.0, generator=torch.Generator().manual_seed(1)).squeeze(1)
    assert s.mean().item() == pytest.approx(0.795, abs=3e-3)
    assert s.median().item() == pytest.approx(0.833, abs=3e-3)
    q = torch.quantile(s[:100_000], torch.tensor([0.05, 0.95]))
    assert q[0].item() == pytest.approx(0.49, abs=0.01) and q[1].item() == pytest.approx(
        0.963, abs=3e-3
    )


def test_high_sigma_draws_stay_in_range():
    s = sample_sigma(
        2000, 5.0, high_sigma_ratio=1.0, generator=torch.Generator().manual_seed(2)
    ).squeeze(1)
    assert (s * 1000 >= 980).all() and (s * 1000 <= 1000).all()


def test_conditional_frame_probabilities():
    n = sample_num_frames(60_000, (0.5, 0.25, 0.25), generator=torch.Generator().manual_seed(3))
    freq = torch.bincount(n, minlength=3).float() / n.numel()
    assert torch.allclose(freq, torch.tensor([0.5, 0.25, 0.25]), atol=0.01)
    with pytest.raises(ValueError, match="conditional_frames_probs"):
        sample_num_frames(2, (0.0, 0.0))


def _batch(b=3, t=4, seed=4):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(b, 16, t, 4, 6, generator=g)
    text = torch.randn(b, 7, 32, generator=g)
    cond = Condition(x0, torch.zeros(b, dtype=torch.long), text)
    return x0, cond


@pytest.mark.parametrize("fixed", [None, 2])
def test_loss_is_uniform_velocity_mse_on_free_frames(fixed):
    """§3 items 3-6 from what the net saw: x_s = s eps + (1 - s) x0 on free frames, the clean
    latent on given frames, one timestep 1000 s per sample, loss = mean of (v_pred - (eps - x0))^2
    with zeros on given frames still counted in the mean."""
    x0, cond = _batch()
    net = RecordingNet()
    obj = FlowMatchingObjective(text_dropout=0.0)
    loss, metrics = obj.loss(net, x0, cond, num_conditional_frames=fixed)
    call = net.calls[0]
    b = x0.shape[0]
    assert call["t"].shape == (b, 1)
    s = (call["t"] / 1000.0).view(b, 1, 1, 1, 1)
    given = call["mask"][:, :1]  # [B,1,T,H,W]
    n = given[:, 0, :, 0, 0].sum(1)
    if fixed is not None:
        assert (n == fixed).all()
    assert torch.equal(call["x"] * given, x0 * given)
    eps = (call["x"] - (1 - s) * x0) / s  # recovered on free frames
    v_pred = torch.sin(call["x"]) + 0.01 * call["t"].mean()
    expected = (((v_pred - (eps - x0)) ** 2) * (1 - given)).sum() / x0.numel()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-4)
    assert metrics["flow_loss"] == pytest.approx(loss.item())


def test_image_batches_have_no_given_frames():
    x0, cond = _batch(t=1)
    net = RecordingNet()
    FlowMatchingObjective().loss(net, x0, cond)
    assert net.calls[0]["mask"].sum() == 0


def test_text_dropout_zeroes_whole_samples():
    x0, cond = _batch(b=64)
    net = RecordingNet()
    FlowMatchingObjective(text_dropout=0.5).loss(net, x0, cond, generator=torch.Generator())
    kept = net.calls[0]["text"].abs().sum(dim=(1, 2)) > 0
    assert 10 < int(kept.sum()) < 54
    assert torch.equal(net.calls[0]["text"][kept], cond.text[kept])


def test_x0_at_inference():
    """Data prediction x - s v on free frames, the given latent on given frames, net timestep
    floor(1000 s) (§4 item 3); with conditional_frame_timestep the given frames get that value."""
    x0, cond = _batch(b=2, t=3)
    cond = Condition(x0, torch.tensor([1, 2]), cond.text)
    x = torch.randn_like(x0)
    sigma = torch.full((2, 1), 0.12345)
    net = RecordingNet()
    out = FlowMatchingObjective().x0(net, x, sigma, cond)
    call = net.calls[0]
    assert torch.equal(call["t"], torch.full((2, 1), 123.0))
    v = torch.sin(call["x"]) + 0.01 * 123.0
    mask = cond.mask
    assert torch.allclose(out, x0 * mask + (x - 0.12345 * v) * (1 - mask), atol=1e-6)
    FlowMatchingObjective(conditional_frame_timestep=0.1).x0(net, x, sigma, cond)
    t = net.calls[1]["t"]
    assert t.shape == (2, 3)
    assert torch.allclose(t, torch.tensor([[0.1, 123.0, 123.0], [0.1, 0.1, 123.0]]))


def test_guidance_on_x0_is_upstreams_guidance_on_velocity():
    """§4 item 6: v = v_c + g (v_c - v_u); x0 = x - s v is affine in v: guiding x0 is the same."""
    g = torch.Generator().manual_seed(5)
    x, vc, vu = (torch.randn(2, 3, generator=g) for _ in range(3))
    s, w = 0.7, 7.0
    via_x0 = guided_x0(x - s * vc, x - s * vu, w)
    assert torch.allclose(via_x0, x - s * (vc + w * (vc - vu)), atol=1e-5)
