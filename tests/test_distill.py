"""DMD2 distillation (framework/diffusion/distill.py, framework/models/distill.py) on tiny nets:
schedule values from the spec, the DMD gradient's fixed point, which net each phase moves, and
loading for training and for generation."""

from __future__ import annotations

import math

import pytest
import torch
from omegaconf import OmegaConf
from torch import Tensor

from framework.config import ConfigError
from framework.diffusion.conditioning import Condition
from framework.diffusion.distill import (
    DMD2Objective,
    FewStepSampler,
    dmd_gradient,
    few_step_sample,
    shifted_rf_time,
    student_sigmas,
)
from framework.models.distill import DistillWorldModel, distill_adamw
from framework.models.tokenizers import PixelTokenizer
from tests.test_world_model import TEXT_LEN, make_batch, tiny_dit


def make_distill(guidance: float = 0.0, **kw) -> DistillWorldModel:
    tok = PixelTokenizer(spatial=2)
    torch.manual_seed(0)
    objective = DMD2Objective(guidance=guidance, max_num_conditional_frames=1, **kw)
    return DistillWorldModel(
        tiny_dit(tok.latent_channels), tok, objective, FewStepSampler(num_steps=4),
        state_t=3, family="cosmos2", max_text_tokens=TEXT_LEN,
    )  # fmt: skip


def test_student_schedule_is_the_shift_5_grid_of_the_spec():
    # spec §3.3: RF [1, .75, .5, .25] shifted by 5 = [1, .9375, .8333, .625]; the first level is
    # the teacher sampler's sigma_max (80) instead of pure noise.
    sigmas = student_sigmas(4, 5.0, 80.0)
    rf = [s / (1 + s) for s in sigmas[1:]]
    assert sigmas[0] == 80.0
    assert rf == pytest.approx([0.9375, 5 / 6, 0.625])
    assert sigmas[1:] == pytest.approx([15.0, 5.0, 5 / 3])
    assert shifted_rf_time(0.0, 5.0) == 0.0 and shifted_rf_time(1.0, 5.0) == 1.0
    assert FewStepSampler(num_steps=4).sigmas(2) == sigmas[:2]
    with pytest.raises(ValueError, match="distilled for 4 steps"):
        FewStepSampler(num_steps=4).sigmas(35)


def test_few_step_sampler_reuses_the_initial_noise():
    seen = []
    target = torch.full((1, 2, 3), 0.5, dtype=torch.float64)

    def x0_fn(x, sigma):
        seen.append((x.double().clone(), sigma))
        return target.float()

    out = few_step_sample(x0_fn, (1, 2, 3), [80.0, 15.0, 5.0], seed=3)
    eps = seen[0][0] / 80.0
    assert [s for _, s in seen] == [80.0, 15.0, 5.0]
    for x, sigma in seen[1:]:
        torch.testing.assert_close(x, target + sigma * eps, atol=1e-5, rtol=0)
    torch.testing.assert_close(out, target.float())


def test_dmd_gradient_is_zero_when_critic_matches_teacher_and_drops_a_nan_sample():
    g, t = torch.randn(2, 3, 4), torch.randn(2, 3, 4)
    assert dmd_gradient(g, t, t).abs().max() == 0
    fake = t + 1.0
    fake[0, 0, 0] = float("nan")
    grad = dmd_gradient(g, fake, t)
    assert grad.dtype == torch.float64
    assert (grad[0] == 0).all()  # the whole sample, as upstream drops its loss
    # Normalised by the per-sample mean |G - x0_teacher| (spec §3.3).
    weight = (g.double() - t.double()).abs().mean(dim=(1, 2))
    torch.testing.assert_close(grad[1], torch.full_like(grad[1], 1.0) / weight[1])


def upstream_dmd_loss(g: Tensor, fake: Tensor, teacher: Tensor) -> Tensor:
    """Upstream's `training_step_generator` (Predict2.5 distill, video2world_model_distill_dmd2
    .py), written from its lines: float64, a NaN sample's loss set to 0, mean per sample, then
    the batch mean the trainer takes."""
    dims = [1, 2, 3, 4]
    with torch.no_grad():
        w = (g.double() - teacher.double()).abs().mean(dim=dims, keepdim=True).clip(min=0.00001)
    grad = (fake.double() - teacher.double()) / w
    loss = (g.double() - (g.double() - grad).detach()) ** 2
    loss[torch.isnan(loss).flatten(start_dim=1).any(dim=1)] = 0
    return loss.mean(dim=(1, 2, 3, 4)).mean()


@pytest.mark.parametrize("family", ["sigma", "flow"])
def test_dmd_loss_is_upstreams_in_float64_and_a_nan_sample_adds_nothing(family):
    from framework.diffusion.distill_flow import FlowDMD2Objective

    objective = DMD2Objective() if family == "sigma" else FlowDMD2Objective()
    torch.manual_seed(0)
    # A student sample near 1e4 (a diverged one), the nets' x0 near 0: grad = (fake - teacher)
    # / mean|G - teacher| is near 1e-4, below float32's spacing at 1e4 (1e-3), so in float32
    # G - (G - grad) is 0; upstream computes it in float64, and so must the loss.
    base = 1e4 + torch.randn(3, 2, 2, 3, 3)
    teacher = torch.randn_like(base)
    fake = teacher + torch.randn_like(base)
    for nan in (False, True):
        if nan:
            fake[0, 1, 0, 2, 1] = float("nan")
        ours_g = base.clone().requires_grad_(True)
        theirs_g = base.clone().double().requires_grad_(True)
        ours = objective.dmd_loss(ours_g, fake, teacher)
        theirs = upstream_dmd_loss(theirs_g, fake, teacher)
        assert float(theirs.detach()) > 0
        torch.testing.assert_close(ours.double(), theirs, rtol=1e-6, atol=0)
        ours.backward()
        theirs.backward()
        assert torch.isfinite(ours_g.grad).all()
        keep = slice(1, None) if nan else slice(None)
        torch.testing.assert_close(
            ours_g.grad[keep].double(), theirs_g.grad[keep], rtol=1e-5, atol=0
        )
        if nan:
            # Upstream's masked loss back-propagates 0 * NaN into that sample; ours gives 0.
            assert (ours_g.grad[0] == 0).all()


def test_phases_and_rollout_lengths_follow_the_step_counter():
    obj = DMD2Objective(student_update_freq=5)
    assert [obj.is_student_step(s) for s in range(6)] == [True, False, False, False, False, True]
    student = [obj.rollout_length(s, 4) for s in range(0, 40, 5)]
    assert student == [1, 2, 3, 4, 1, 2, 3, 4]
    assert sorted(obj.rollout_length(s, 4) for s in (1, 2, 3, 4)) == [1, 2, 3, 4]


def test_student_gets_no_gradient_when_critic_equals_teacher():
    # The spec's fixed point: critic == teacher and no guidance -> the DMD direction is 0.
    model = make_distill()
    model.load_weights({f"net.{k}": v for k, v in model.net.state_dict().items()})
    loss, metrics = model.training_step(make_batch(), step=0)
    assert metrics["student_step"] == 1.0
    assert 0.0 <= metrics["tau_trig_mean"] <= math.pi / 2  # TrigFlow time, not a sigma
    loss.backward()
    assert all(p.grad is None or p.grad.abs().max() == 0 for p in model.net.parameters())
    assert all(p.grad is None for p in model.fake_score.parameters())


def test_each_phase_moves_only_its_net_and_the_teacher_never():
    model = make_distill(guidance=2.0)
    with torch.no_grad():  # a critic unlike the teacher, so the student step has a direction
        for p in model.fake_score.parameters():
            p.add_(0.05 * torch.randn_like(p))
    opt = distill_adamw(model.trainable_parameters(), lr=1e-3, critic_lr_scale=0.5)
    assert sorted({g["lr"] for g in opt.param_groups}) == [5e-4, 1e-3]
    snap = {k: v.clone() for k, v in model.state_dict().items()}
    for step, moved in ((0, "net."), (1, "fake_score.")):
        before = {k: v.clone() for k, v in model.state_dict().items()}
        loss, _ = model.training_step(make_batch(seed=step), step=step)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        after = model.state_dict()
        changed = {k.split(".")[0] + "." for k in after if not torch.equal(after[k], before[k])}
        assert changed == {moved}, (step, changed)
    assert all(torch.equal(model.state_dict()[k], snap[k]) for k in snap if "teacher." in k)


def test_rollout_backpropagates_through_the_last_student_call_only():
    model = make_distill()
    calls = []
    hook = model.net.register_forward_hook(lambda m, i, o: calls.append(o.requires_grad))
    try:
        cond = Condition(
            torch.randn(1, 12, 3, 4, 4), torch.ones(1, dtype=torch.long), torch.randn(1, 8, 32)
        )
        model.objective.rollout(model.net, cond, model.sampler.sigmas(), 3, grad=True)
    finally:
        hook.remove()
    assert calls == [False, False, True]


def test_teacher_file_initialises_all_three_nets_and_checkpoints_restore_the_critic():
    teacher = make_distill()
    with torch.no_grad():
        for p in teacher.net.parameters():
            p.add_(torch.randn_like(p))
    file = {f"net.{k}": v for k, v in teacher.net.state_dict().items()}
    model = make_distill()
    model.load_weights(file)
    for part in (model.net, model.teacher, model.fake_score):
        for k, v in part.state_dict().items():
            torch.testing.assert_close(v, file[f"net.{k}"])
    # A distillation checkpoint: the critic comes back from fake_score.*.
    with torch.no_grad():
        for p in model.fake_score.parameters():
            p.mul_(0.5)
    saved = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("teacher.")}
    again = make_distill()
    again.load_weights(file)
    again.load_weights(saved)
    torch.testing.assert_close(again.fake_score.state_dict(), model.fake_score.state_dict())


def test_built_for_generation_the_student_alone_is_loaded_and_generates():
    src = make_distill()
    sd = {k: v for k, v in src.state_dict().items() if not k.startswith("teacher.")}
    tok = PixelTokenizer(spatial=2)
    with torch.device("meta"):
        net = tiny_dit(tok.latent_channels)
    model = DistillWorldModel(
        net, tok, DMD2Objective(), FewStepSampler(), state_t=3, family="cosmos2",
        max_text_tokens=TEXT_LEN,
    )  # fmt: skip
    model.load_weights(sd, assign=True)
    assert not hasattr(model, "teacher") and not hasattr(model, "fake_score")
    model.to("cpu").eval()
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in net.parameters())
    calls = []
    model.net.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    video = model.generate(
        torch.zeros(1, 3, 1, 16, 16, dtype=torch.uint8), torch.randn(1, TEXT_LEN, 32),
        guidance=0.0,
    )  # fmt: skip
    assert video.shape == (1, 3, 3, 16, 16) and video.dtype == torch.uint8
    assert calls == [1, 1, 1, 1]  # four unguided student calls
    with pytest.raises(ValueError, match="generation only"):
        model.training_step(make_batch(), 0)


def test_ddp_and_lora_are_refused_with_the_fix():
    model = make_distill()
    with pytest.raises(ConfigError, match="parallel.strategy=fsdp"):
        model.parallelize(None, OmegaConf.create({"strategy": "ddp"}))
    with pytest.raises(ConfigError, match="model.lora=null"):
        DistillWorldModel(
            tiny_dit(12), PixelTokenizer(spatial=2), DMD2Objective(), FewStepSampler(),
            family="cosmos2", lora={"rank": 4, "alpha": 4},
        )  # fmt: skip


class Recorder(torch.nn.Module):
    """A velocity net with the DiT's call signature that keeps its last input, timesteps and
    output, so a test can rebuild x0 from them with the spec's formulas."""

    def forward(self, x, timesteps, emb, condition_video_input_mask_B_C_T_H_W=None, **_):
        b = x.shape[0]
        out = 0.6 * x - 0.4 * timesteps.reshape(b, 1, -1, 1, 1) + 0.1
        self.seen = (x.detach().double(), timesteps.detach().double(), out.detach().double())
        return out


def spec_x0(net_in: Tensor, timesteps: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    """(x0, TrigFlow time t) from one net call, by spec/distillation.md §1: the net's timestep
    is the RF time s (factor 1 for Predict2), t = atan(s / (1 - s)); with c = cos t + sin t the
    net input is x_t / c and x0 = x_t / c - (sin t / c) v."""
    s = timesteps.reshape(-1, 1, timesteps.shape[1], 1, 1)
    t = torch.atan2(s, 1.0 - s)
    c = torch.cos(t) + torch.sin(t)
    x_t = net_in * c
    return x_t / c - torch.sin(t) / c * v, t


def image_cond(b: int) -> Condition:  # T = 1: no given frames, every entry is generated
    return Condition(
        torch.zeros(b, 2, 1, 3, 3), torch.zeros(b, dtype=torch.long), torch.zeros(b, 1, 4)
    )


def test_critic_loss_is_the_specs_x0_error_over_sin2_of_the_trigflow_time(monkeypatch):
    # spec §2.4/§3.4: loss = mean (G - x0_fake(x_tau))^2 / sin^2 tau, x_tau = cos tau G + sin tau
    # eps. Rebuilt here in TrigFlow coordinates from the critic's own call; the teacher's loss
    # weight (1 + sigma)^2 / sigma^2, which this objective used before, differs by up to 2x.
    torch.manual_seed(0)
    b = 64
    obj = DMD2Objective(guidance=0.0)
    g = torch.randn(b, 2, 1, 3, 3)
    monkeypatch.setattr(obj, "rollout", lambda *a, **k: g)
    critic = Recorder()
    loss, metrics = obj.loss(None, None, critic, image_cond(b), step=1, levels=[80.0, 15.0])
    assert metrics["student_step"] == 0.0
    net_in, timesteps, v = critic.seen
    x0_fake, t = spec_x0(net_in, timesteps, v)
    err = (g.double() - x0_fake) ** 2
    torch.testing.assert_close(loss.double(), (err / torch.sin(t) ** 2).mean(), rtol=2e-5, atol=0)
    # The input is the spec's x_tau: what is left after cos tau G is unit Gaussian noise.
    eps = (net_in * (torch.cos(t) + torch.sin(t)) - torch.cos(t) * g.double()) / torch.sin(t)
    assert abs(float(eps.mean())) < 0.15 and abs(float(eps.std()) - 1.0) < 0.1
    # The draws are spread enough that the old weight gives a clearly different loss.
    sigma = torch.tan(t)
    teacher_weighted = ((1 + sigma) ** 2 / sigma**2 * err).mean()
    assert float(teacher_weighted / loss) > 1.05


def test_student_dmd_step_pulls_g_along_the_specs_normalised_direction(monkeypatch):
    # spec §3.3: weight = mean |G - x0_T| per sample (clipped at 1e-5), grad = (x0_fake - x0_T) /
    # weight, loss = mean (G - sg(G - grad))^2, so dloss/dG = 2 grad / numel.
    torch.manual_seed(1)
    b = 4
    obj = DMD2Objective(guidance=0.0)
    g = torch.randn(b, 2, 1, 3, 3, requires_grad=True)
    monkeypatch.setattr(obj, "rollout", lambda *a, **k: g)
    critic, teacher = Recorder(), Recorder()
    with torch.no_grad():  # a teacher unlike the critic: its output moved by a fixed field
        teacher.register_forward_hook(lambda m, i, o: o + 0.05 * torch.arange(o.numel()).view_as(o))
    loss, metrics = obj.loss(None, teacher, critic, image_cond(b), step=0, levels=[80.0, 15.0])
    assert metrics["student_step"] == 1.0
    loss.backward()
    x0_fake, _ = spec_x0(*critic.seen)
    net_in, timesteps, _ = teacher.seen
    v_teacher = teacher.seen[2] + 0.05 * torch.arange(g.numel()).view(g.shape).double()
    x0_teacher, _ = spec_x0(net_in, timesteps, v_teacher)
    weight = (g.detach().double() - x0_teacher).abs().mean(dim=(1, 2, 3, 4), keepdim=True)
    grad = (x0_fake - x0_teacher) / weight.clamp_min(1e-5)
    torch.testing.assert_close(g.grad.double(), 2 * grad / g.numel(), rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(loss.double(), (grad**2).mean(), rtol=1e-4, atol=0)


def test_critic_times_follow_the_specs_shift_5_draw():
    # spec §3.2: u ~ U(0,1), s = 5u / (1 + 4u), t = atan(s / (1 - s)) on all of [0, pi/2); here
    # sigma = tan t. The CDF at t_q is u(t_q) = s / (5 - 4s), s = tan t_q / (1 + tan t_q).
    torch.manual_seed(0)
    t = torch.atan(DMD2Objective(timestep_shift=5.0).sample_tau(20000, "cpu").double())
    for t_q in (0.3, 0.8, 1.2, 1.5, math.atan(200.0)):
        s = math.tan(t_q) / (1 + math.tan(t_q))
        assert abs(float((t <= t_q).double().mean()) - s / (5 - 4 * s)) < 0.012, t_q


def test_both_families_log_the_critic_level_as_the_same_trigflow_time():
    """sigma (Predict2) and RF time s (Predict2.5) of one level, sigma = s / (1 - s), are one
    TrigFlow time t with tan t = sigma (spec §1)."""
    from framework.diffusion.distill_flow import FlowDMD2Objective

    s = torch.tensor([[0.0], [0.1], [0.5], [0.9], [0.999]], dtype=torch.float64)
    t = DMD2Objective.trig_time(None, s / (1 - s))
    torch.testing.assert_close(t, FlowDMD2Objective.trig_time(None, s))
    torch.testing.assert_close(torch.tan(t[:-1]), (s / (1 - s))[:-1])
