"""EDM objective of Cosmos-Predict1 checked against hand computations from
docs/upstream/cosmos_predict1.md §3 (preconditioning, logvar head, video conditioning, loss)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from framework.diffusion.conditioning import Condition
from framework.diffusion.edm import (
    EDMObjective,
    FourierFeatures,
    edm_scaling,
    fixed_noise,
    frame_indicator,
    logvar_head,
    loss_weight,
    sample_lognormal,
)


class RecordingNet(nn.Module):
    """Stand-in with the GeneralDIT forward signature: F = k * x, inputs recorded."""

    def __init__(self, k: float = 0.0):
        super().__init__()
        self.k = nn.Parameter(torch.tensor(k))
        self.calls: list[dict] = []

    def forward(
        self,
        x,
        timesteps_B,
        crossattn_emb,
        fps=None,
        padding_mask=None,
        condition_video_input_mask_B_C_T_H_W=None,
    ):
        self.calls.append(
            dict(
                x=x.detach().clone(),
                t=timesteps_B,
                emb=crossattn_emb,
                fps=fps,
                pad=padding_mask,
                mask=condition_video_input_mask_B_C_T_H_W,
            )
        )
        return self.k * x


def cond_of(x0: torch.Tensor, fps: float = 4.0) -> Condition:
    b = x0.shape[0]
    return Condition(
        x0,
        torch.zeros(b, dtype=torch.long),
        torch.ones(b, 5, 8),
        torch.zeros(b, 1, 16, 16),
        torch.full((b,), fps),
    )


def fixed_sigmas(sigma: float, aug: float, **kw) -> EDMObjective:
    """Training sigma and augmentation sigma made deterministic (p_std 0)."""
    return EDMObjective(
        p_mean=math.log(sigma),
        p_std=0.0,
        augment_p_mean=0.0,
        augment_p_std=0.0,
        augment_multiplier=aug,
        text_dropout=0.0,
        video_cond_dropout=0.0,
        **kw,
    )


def test_scaling_hand_values():
    # sigma = 0.5: var 0.5; sigma = 2: var 4.25 (sigma_data 0.5, §3.4).
    c_skip, c_out, c_in, c_noise = edm_scaling(torch.tensor([0.5, 2.0]))
    torch.testing.assert_close(c_skip, torch.tensor([0.5, 0.25 / 4.25]))
    torch.testing.assert_close(c_out, torch.tensor([0.25 / math.sqrt(0.5), 1 / math.sqrt(4.25)]))
    torch.testing.assert_close(c_in, torch.tensor([1 / math.sqrt(0.5), 1 / math.sqrt(4.25)]))
    torch.testing.assert_close(c_noise, torch.tensor([0.25 * math.log(0.5), 0.25 * math.log(2)]))
    # Appendix A: c_noise over [0.0002, 80] is [-2.129, 1.096].
    lo, hi = edm_scaling(torch.tensor([0.0002, 80.0], dtype=torch.float64))[3].tolist()
    assert lo == pytest.approx(-2.129, abs=1e-3) and hi == pytest.approx(1.096, abs=1e-3)


def test_loss_weight_is_4_plus_inverse_sigma_squared():
    torch.testing.assert_close(loss_weight(torch.tensor([0.5, 2.0])), torch.tensor([8.0, 4.25]))


def test_lognormal_noise_and_augmentation_levels():
    g = torch.Generator().manual_seed(0)
    sigma = sample_lognormal(200_000, 0.0, 1.0, generator=g)
    assert sigma.log().mean().item() == pytest.approx(0.0, abs=0.01)
    assert sigma.log().std().item() == pytest.approx(1.0, abs=0.01)
    aug = sample_lognormal(200_000, 0.0, 1.0, 4.0, generator=g)
    # §3.5 item 4: median 4, 5-95 % range 0.77-20.7 (4 exp(-+1.645)).
    assert aug.median().item() == pytest.approx(4.0, rel=0.02)
    q = torch.quantile(aug[:100_000], torch.tensor([0.05, 0.95])).tolist()
    assert q[0] == pytest.approx(0.772, rel=0.03) and q[1] == pytest.approx(20.7, rel=0.03)


def test_fourier_features_by_hand_in_fp32():
    ff = FourierFeatures(3)
    ff.freqs.copy_(torch.tensor([1.0, -2.0, 0.5]))
    ff.phases.copy_(torch.tensor([0.0, 1.0, 3.0]))
    x = torch.tensor([0.25, -1.0])
    want = [
        [math.sqrt(2) * math.cos(xi * f + p) for f, p in ((1, 0), (-2, 1), (0.5, 3))] for xi in x
    ]
    torch.testing.assert_close(ff(x), torch.tensor(want))
    out = ff(x.to(torch.bfloat16))  # computed in fp32, returned in the input's dtype
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), torch.tensor(want), atol=1e-2, rtol=1e-2)


def test_logvar_head_keys_and_init_distribution():
    torch.manual_seed(0)
    head = logvar_head(128)
    sd = head.state_dict()
    assert list(sd) == ["0.freqs", "0.phases", "1.weight"]
    assert sd["1.weight"].shape == (1, 128)
    big = FourierFeatures(100_000)
    assert big.freqs.std().item() == pytest.approx(2 * math.pi, rel=0.02)  # 2 pi N(0, 1)
    assert 0 <= big.phases.min().item() and big.phases.max().item() < 2 * math.pi
    assert big.phases.mean().item() == pytest.approx(math.pi, rel=0.02)  # 2 pi U(0, 1)
    assert {n for n, _ in head.named_buffers(recurse=True)} == {"0.freqs", "0.phases"}
    obj = EDMObjective()
    assert list(obj.extra_modules()) == ["logvar"]


def test_denoise_training_composition_and_kendall_loss_by_hand():
    """sigma = 2, sigma_aug = 4 (fixed), one given frame: recompute the loss from the recorded
    net input (§3.5 items 3-6, §3.7)."""
    torch.manual_seed(0)
    net = RecordingNet(k=0.3)
    obj = fixed_sigmas(2.0, 4.0)
    with torch.no_grad():
        obj.extra_modules()["logvar"][1].weight.normal_(std=0.05)
    x0 = torch.randn(2, 3, 4, 4, 4)
    loss, metrics = obj.loss(net, x0, cond_of(x0), num_conditional_frames=1)
    call = net.calls[-1]
    c_skip, c_out, c_in, c_noise = (float(v) for v in edm_scaling(torch.tensor(2.0)))
    c_in_aug = float(edm_scaling(torch.tensor(4.0))[2])
    assert call["t"].tolist() == pytest.approx([c_noise, c_noise])
    # Mask channel: frame 0 of every sample; fps and padding mask passed through.
    assert call["mask"].shape == (2, 1, 4, 4, 4)
    assert call["mask"][:, 0, :, 0, 0].tolist() == [[1, 0, 0, 0], [1, 0, 0, 0]]
    assert call["fps"].tolist() == [4.0, 4.0] and call["pad"].shape == (2, 1, 16, 16)
    # Given frame: c_in(sigma_aug) (gt + 4 n) with n ~ N(0, 1); generated frames: c_in x_sigma.
    n = (call["x"][:, :, :1] / c_in_aug - x0[:, :, :1]) / 4.0
    assert n.std().item() == pytest.approx(1.0, abs=0.25)
    x_tilde = call["x"] / c_in
    d = c_skip * x_tilde + c_out * 0.3 * call["x"]
    d[:, :, :1] = x0[:, :, :1]  # output replacement: zero error on the given frame
    edm = 4.25 * (x0 - d) ** 2
    head = obj.extra_modules()["logvar"]
    pairs = zip(head[0].freqs.tolist(), head[0].phases.tolist())
    feats = [math.sqrt(2) * math.cos(c_noise * f + p) for f, p in pairs]
    u = float(sum(w * v for w, v in zip(head[1].weight[0].tolist(), feats)))
    want = (edm * math.exp(-u) + u).mean()
    torch.testing.assert_close(loss, want, rtol=1e-5, atol=1e-6)
    assert metrics["edm_loss"] == pytest.approx(edm.mean().item(), rel=1e-5)
    assert metrics["mse_loss"] == pytest.approx(((x0 - d) ** 2).mean().item(), rel=1e-5)
    assert metrics["logvar"] == pytest.approx(u, rel=1e-5)
    # Negative controls: without the uncertainty weighting, or with the weight of another
    # sigma, the hand value no longer matches.
    assert not torch.allclose(loss, edm.mean(), rtol=1e-3)
    wrong_weight = (8.0 * (x0 - d) ** 2 * math.exp(-u) + u).mean()
    assert not torch.allclose(loss, wrong_weight, rtol=1e-3)


def test_tiny_augmentation_gives_clean_condition_at_input_scale():
    # sigma_aug -> 0: the given frame enters as c_in(0) gt = gt / sigma_data.
    net = RecordingNet()
    obj = fixed_sigmas(3.0, 1e-8)
    x0 = torch.randn(1, 2, 3, 2, 2)
    obj.loss(net, x0, cond_of(x0), num_conditional_frames=1)
    torch.testing.assert_close(net.calls[-1]["x"][:, :, :1], x0[:, :, :1] / 0.5)


def test_video_condition_dropout_zeroes_input_and_mask_channel():
    net = RecordingNet()
    obj = fixed_sigmas(1.0, 4.0)
    obj.video_cond_dropout = 1.0
    x0 = torch.randn(2, 2, 3, 2, 2)
    obj.loss(net, x0, cond_of(x0), num_conditional_frames=1)
    call = net.calls[-1]
    assert call["mask"].abs().sum().item() == 0
    assert call["x"][:, :, :1].abs().sum().item() == 0  # zero_condition_region_condition_mask
    assert call["x"][:, :, 1:].abs().sum().item() > 0


def test_first_random_n_is_one_draw_per_batch_half_and_half():
    net = RecordingNet()
    obj = EDMObjective(text_dropout=0.0, video_cond_dropout=0.0)
    x0 = torch.randn(4, 2, 3, 2, 2)
    g = torch.Generator().manual_seed(0)
    counts = []
    for _ in range(400):
        obj.loss(net, x0, cond_of(x0), generator=g)
        per_sample = net.calls[-1]["mask"][:, 0, :, 0, 0].sum(1)
        assert len(set(per_sample.tolist())) == 1  # the whole batch shares n
        counts.append(int(per_sample[0]))
    assert set(counts) == {0, 1}
    assert np.mean(counts) == pytest.approx(0.5, abs=0.08)


def test_video_cond_and_text_dropout_rates():
    net = RecordingNet()
    obj = EDMObjective(min_num_conditional_frames=1)  # upstream's dropout rates, 0.2 each
    x0 = torch.randn(8, 2, 3, 2, 2)
    g = torch.Generator().manual_seed(1)
    kept, texts = [], []
    for _ in range(500):
        obj.loss(net, x0, cond_of(x0), generator=g)
        call = net.calls[-1]
        kept.append(bool(call["mask"].sum() > 0))  # one Bernoulli per batch
        texts += (call["emb"].abs().sum((1, 2)) > 0).tolist()  # one per sample
    assert np.mean(kept) == pytest.approx(0.8, abs=0.05)
    assert np.mean(texts) == pytest.approx(0.8, abs=0.03)


def test_perfect_denoiser_leaves_only_the_logvar_term():
    x0 = torch.randn(2, 2, 3, 2, 2)
    obj = fixed_sigmas(1.5, 4.0)
    c_skip, c_out, c_in, _ = (float(v) for v in edm_scaling(torch.tensor(1.5)))

    def oracle(x, t, emb, fps=None, padding_mask=None, condition_video_input_mask_B_C_T_H_W=None):
        return (x0 - c_skip * x / c_in) / c_out  # D(x) = x0 exactly

    loss, metrics = obj.loss(oracle, x0, cond_of(x0), num_conditional_frames=1)
    assert metrics["edm_loss"] < 1e-9
    assert loss.item() == pytest.approx(metrics["logvar"], abs=1e-6)


def test_inference_x0_fixed_augmentation_and_indicator_switch():
    """noise_with_sigma_fixed (§3.5 item 4): the given frame is gt + 0.001 n with n from
    RandomState(seed), and stops being given once sigma <= 0.001; the mask channel stays on."""
    net = RecordingNet(k=0.5)
    obj = EDMObjective(inference_augment_seed=7)
    gt = torch.randn(2, 3, 4, 2, 2)
    cond = Condition(gt, torch.tensor([1, 2]), torch.ones(2, 5, 8), None, torch.tensor([4.0, 4.0]))
    x = torch.randn_like(gt) * 3
    out = obj.x0(net, x, torch.tensor([[3.0], [3.0]]), cond)
    call = net.calls[-1]
    n = torch.from_numpy(np.random.RandomState(7).standard_normal((3, 4, 2, 2))).float()
    torch.testing.assert_close(n, fixed_noise((3, 4, 2, 2), 7, torch.device("cpu")))
    c_in_aug = 1 / math.sqrt(0.001**2 + 0.25)
    torch.testing.assert_close(call["x"][0, :, :1], c_in_aug * (gt[0, :, :1] + 0.001 * n[:, :1]))
    torch.testing.assert_close(call["x"][1, :, :2], c_in_aug * (gt[1, :, :2] + 0.001 * n[:, :2]))
    torch.testing.assert_close(out[0, :, :1], gt[0, :, :1])
    torch.testing.assert_close(out[1, :, :2], gt[1, :, :2])
    assert call["mask"][:, 0, :, 0, 0].tolist() == [[1, 0, 0, 0], [1, 1, 0, 0]]
    # At sigma = 0.001 (= sigma_aug) the given frames are denoised like the rest.
    small = torch.full((2, 1), 0.001)
    out = obj.x0(net, x, small, cond)
    call = net.calls[-1]
    c_skip, c_out, c_in, _ = (float(v) for v in edm_scaling(torch.tensor(0.001)))
    torch.testing.assert_close(call["x"], c_in * x)
    torch.testing.assert_close(out, c_skip * x + c_out * 0.5 * c_in * x)
    assert call["mask"][:, 0, :, 0, 0].tolist() == [[1, 0, 0, 0], [1, 1, 0, 0]]


def test_frame_indicator_and_bad_range():
    ind = frame_indicator(torch.tensor([0, 2]), 3)
    assert ind.shape == (2, 1, 3, 1, 1) and ind.flatten().tolist() == [0, 0, 0, 1, 1, 0]
    with pytest.raises(ValueError, match="min_num_conditional_frames"):
        EDMObjective(min_num_conditional_frames=2, max_num_conditional_frames=1)


def test_no_logvar_option_is_plain_edm_loss():
    net = RecordingNet(k=0.2)
    obj = fixed_sigmas(1.0, 4.0, loss_add_logvar=False)
    x0 = torch.randn(2, 2, 3, 2, 2)
    loss, metrics = obj.loss(net, x0, cond_of(x0), num_conditional_frames=1)
    assert loss.item() == pytest.approx(metrics["edm_loss"], rel=1e-6)
