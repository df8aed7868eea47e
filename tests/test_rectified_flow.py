"""Rectified-flow objective formulas checked against hand-computed values from
upstream/cosmos_predict2.md §4.1."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from framework.diffusion.conditioning import Condition, condition_mask, drop_text
from framework.diffusion.rectified_flow import (
    RectifiedFlowObjective,
    denoise,
    loss_weight,
    rf_scaling,
    sample_num_conditional_frames,
    sample_sigma,
    video_noise_multiplier,
)


class RecordingNet(nn.Module):
    """Stand-in with the MiniTrainDiT forward signature; records its inputs."""

    def __init__(self, scale: float = 0.0):
        super().__init__()
        self.w = nn.Parameter(torch.tensor(scale))
        self.calls: list[dict] = []

    def forward(
        self,
        x,
        timesteps,
        crossattn_emb,
        condition_video_input_mask_B_C_T_H_W=None,
        padding_mask=None,
    ):
        self.calls.append(
            dict(x=x, t=timesteps, emb=crossattn_emb, mask=condition_video_input_mask_B_C_T_H_W)
        )
        return self.w * x


def text(x0: torch.Tensor) -> Condition:
    """The condition the model wrapper passes: all-ones text [B,5,8], nothing else given."""
    b = x0.shape[0]
    return Condition(x0, torch.zeros(b, dtype=torch.long), torch.ones(b, 5, 8))


def test_rf_scaling_hand_values():
    # sigma=1 -> t=1/2; sigma=4 -> t=4/5.
    c_skip, c_out, c_in, c_noise = rf_scaling(torch.tensor([1.0, 4.0]))
    torch.testing.assert_close(c_skip, torch.tensor([0.5, 0.2]))
    torch.testing.assert_close(c_out, torch.tensor([-0.5, -0.8]))
    torch.testing.assert_close(c_in, torch.tensor([0.5, 0.2]))
    torch.testing.assert_close(c_noise, torch.tensor([0.5, 0.8]))


def test_net_input_is_rf_interpolant_and_x0_from_velocity():
    x0, eps, sigma = torch.tensor(2.0), torch.tensor(-1.0), torch.tensor(4.0)
    c_skip, c_out, c_in, _ = rf_scaling(sigma)
    x_sigma = x0 + sigma * eps
    # (1-t) x0 + t eps with t = 0.8 -> 0.2*2 - 0.8 = -0.4
    torch.testing.assert_close(c_in * x_sigma, torch.tensor(-0.4))
    velocity = eps - x0
    torch.testing.assert_close(c_skip * x_sigma + c_out * velocity, x0)


def test_loss_weight():
    torch.testing.assert_close(loss_weight(torch.tensor([1.0, 4.0])), torch.tensor([4.0, 25 / 16]))


def test_video_noise_multiplier():
    assert video_noise_multiplier(24) == pytest.approx(4.898979, abs=1e-5)
    assert video_noise_multiplier(16) == 4.0
    assert video_noise_multiplier(24, adjust_video_noise=False) == 1.0


def test_sigma_lognormal_statistics_and_shape():
    g = torch.Generator().manual_seed(0)
    sigma = sample_sigma(200_000, multiplier=math.sqrt(24), high_sigma_ratio=0.0, generator=g)
    assert sigma.shape == (200_000, 1)
    log_s = sigma.log()
    # log sigma ~ N(ln sqrt(24), 1): ln 4.899 = 1.5890
    assert log_s.mean().item() == pytest.approx(1.5890, abs=0.01)
    assert log_s.std().item() == pytest.approx(1.0, abs=0.01)
    assert sigma.median().item() == pytest.approx(4.899, rel=0.02)


def test_high_sigma_fraction_and_range():
    g = torch.Generator().manual_seed(1)
    sigma = sample_sigma(100_000, multiplier=1.0, high_sigma_ratio=0.05, generator=g)
    # exp(N(0,1)) exceeds 200 with probability ~1e-7, so sigma >= 200 counts the high branch.
    high = sigma[sigma >= 200]
    assert high.numel() / sigma.numel() == pytest.approx(0.05, abs=0.003)
    assert high.max().item() <= 1e5 * (1 + 1e-5)
    # log-uniform on [ln 200, ln 1e5]: mean of log = (5.2983 + 11.5129)/2 = 8.4056
    assert high.log().mean().item() == pytest.approx(8.4056, abs=0.05)


def test_sigma_generator_reproducible():
    a = sample_sigma(8, generator=torch.Generator().manual_seed(3))
    b = sample_sigma(8, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_num_conditional_frames_uniform():
    n = sample_num_conditional_frames(10_000, 1, 2, generator=torch.Generator().manual_seed(0))
    assert set(n.tolist()) == {1, 2}
    assert (n == 2).float().mean().item() == pytest.approx(0.5, abs=0.02)
    with pytest.raises(ValueError, match="min_num_conditional_frames"):
        sample_num_conditional_frames(2, 3, 1)


def test_condition_mask():
    mask = condition_mask(torch.tensor([1, 2]), (2, 16, 4, 3, 5))
    assert mask.shape == (2, 1, 4, 3, 5)
    assert mask[0, 0, :, 0, 0].tolist() == [1, 0, 0, 0]
    assert mask[1, 0, :, 2, 4].tolist() == [1, 1, 0, 0]


def test_text_dropout_zeroes_whole_embeddings_at_rate():
    emb = torch.rand(20_000, 4, 3) + 0.1
    out = drop_text(emb, 0.2, torch.Generator().manual_seed(0))
    zeroed = (out == 0).all(dim=(1, 2))
    untouched = (out == emb).all(dim=(1, 2))
    assert bool((zeroed | untouched).all())  # no partial zeroing
    assert zeroed.float().mean().item() == pytest.approx(0.2, abs=0.01)
    assert drop_text(emb, 0.0) is emb


def test_denoise_conditional_frames_get_clean_input_and_small_timestep():
    net = RecordingNet(scale=0.3)
    b, t = 2, 4
    gt = torch.randn(b, 3, t, 2, 2)
    sigma = torch.tensor([[1.0], [4.0]])
    x_sigma = gt + sigma.view(b, 1, 1, 1, 1) * torch.randn_like(gt)
    mask = condition_mask(torch.tensor([1, 2]), gt.shape)
    x0_pred = denoise(net, x_sigma, sigma, gt, mask, torch.zeros(b, 5, 8))
    call = net.calls[-1]
    assert call["t"].shape == (b, t)
    t_cond = 1e-4 / 1.0001
    assert call["t"][0].tolist() == pytest.approx([t_cond, 0.5, 0.5, 0.5], rel=1e-6)
    assert call["t"][1].tolist() == pytest.approx([t_cond, t_cond, 0.8, 0.8], rel=1e-6)
    # clean latent in masked frames, RF interpolant elsewhere
    torch.testing.assert_close(call["x"][1, :, :2], gt[1, :, :2])
    torch.testing.assert_close(call["x"][1, :, 2:], 0.2 * x_sigma[1, :, 2:])
    # x0 of masked frames is the ground truth; others follow c_skip x + c_out F
    torch.testing.assert_close(x0_pred[1, :, :2], gt[1, :, :2])
    f = 0.3 * call["x"][0, :, 1:]
    torch.testing.assert_close(x0_pred[0, :, 1:], 0.5 * x_sigma[0, :, 1:] - 0.5 * f)


def test_loss_masked_frames_zero_and_denominator_counts_them():
    torch.manual_seed(0)
    net = RecordingNet(scale=0.1)
    obj = RectifiedFlowObjective(text_dropout=0.0, loss_scale=10.0)
    x0 = torch.randn(3, 2, 4, 2, 2)
    g = torch.Generator().manual_seed(5)
    loss, metrics = obj.loss(net, x0, text(x0), num_conditional_frames=2, generator=g)
    # Recompute from the recorded net input: weighted error only on frames 2..3, mean over all.
    call = net.calls[-1]
    t = call["t"][:, -1].view(3, 1, 1, 1, 1)  # t of noisy frames
    sigma = t / (1 - t)
    x_sigma = call["x"] / (1 - t)
    x0_pred = (1 - t) * x_sigma - t * (0.1 * call["x"])
    err = (x0 - x0_pred) ** 2 * ((1 + sigma) ** 2 / sigma**2)
    err[:, :, :2] = 0
    torch.testing.assert_close(loss, 10.0 * err.mean(), rtol=1e-4, atol=1e-6)
    assert metrics["edm_loss"] == pytest.approx(loss.item() / 10.0, rel=1e-5)
    assert metrics["mse_loss"] > 0


def test_perfect_velocity_gives_zero_loss():
    # A net that knows eps: F = eps - x0 exactly -> zero loss (weighted x0-MSE == velocity MSE).
    obj = RectifiedFlowObjective(text_dropout=0.0)
    x0 = torch.randn(2, 2, 3, 2, 2)
    g = torch.Generator().manual_seed(0)
    sigma = sample_sigma(2, multiplier=math.sqrt(3), generator=g)
    eps = torch.randn(x0.shape, generator=g)
    g = torch.Generator().manual_seed(0)

    def oracle(x, timesteps, emb, condition_video_input_mask_B_C_T_H_W=None, padding_mask=None):
        return eps - x0

    loss, metrics = obj.loss(oracle, x0, text(x0), generator=g, num_conditional_frames=1)
    assert sigma.shape == (2, 1)
    assert metrics["edm_loss"] < 1e-8
    assert loss.item() < 1e-7


def test_image_batch_has_no_conditional_frames_and_no_multiplier():
    net = RecordingNet()
    obj = RectifiedFlowObjective(text_dropout=0.0, high_sigma_ratio=1.0)
    x0 = torch.randn(4, 2, 1, 2, 2)
    obj.loss(net, x0, text(x0), generator=torch.Generator().manual_seed(0))
    call = net.calls[-1]
    assert call["mask"].sum().item() == 0
    # high_sigma_ratio is ignored for images, so every t = sigma/(1+sigma) < 200/201
    assert call["t"].max().item() < 200 / 201


def test_text_dropout_applied_in_objective():
    net = RecordingNet()
    obj = RectifiedFlowObjective(text_dropout=1.0)
    x0 = torch.randn(2, 2, 2, 2, 2)
    obj.loss(net, x0, text(x0))
    assert net.calls[-1]["emb"].abs().sum().item() == 0
