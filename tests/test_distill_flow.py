"""DMD2 for a flow-matching (Predict2.5) teacher (framework/diffusion/distill_flow.py) on tiny
Predict2.5 nets: the student's levels and the net call against upstream's TrigFlow wrapper
(`RectifiedFlow_sCMWrapper`, restated from its code), the reused-noise sampler, the DMD fixed
point, which net each phase moves (the text projection frozen), the experiments' upstream
values, and the student generating through the stock video2world command."""

from __future__ import annotations

import math

import pytest
import torch

from experiments.distill import distill_flow
from framework.config import get, instantiate, load_all
from framework.diffusion.conditioning import Condition
from framework.diffusion.distill_flow import (
    FlowDMD2Objective,
    FlowFewStepSampler,
    flow_few_step_sample,
    flow_student_levels,
    renoise,
    rf_time,
    trigflow_time,
)
from framework.models.distill import distill_adamw
from tests.test_inference_fixtures import write_job
from tests.test_predict2_5_inference import tiny_p25_config

load_all()

# Upstream `selected_sampling_time` (video2world_model_distill_dmd2.py; experiments_dmd2.py).
UPSTREAM_TIMES = [math.pi / 2, math.atan(15), math.atan(5), math.atan(5 / 3)]


def test_student_levels_are_upstreams_trigflow_times():
    levels = flow_student_levels(4, 5.0)
    assert levels == pytest.approx([rf_time(t) for t in UPSTREAM_TIMES], abs=1e-12)
    assert levels == pytest.approx([1.0, 0.9375, 5 / 6, 0.625])
    assert [trigflow_time(s) for s in levels] == pytest.approx(UPSTREAM_TIMES)
    sampler = FlowFewStepSampler()
    assert sampler.sigmas(2) == levels[:2]
    with pytest.raises(ValueError, match="distilled for 4 steps"):
        sampler.sigmas(35)


class Recorder(torch.nn.Module):
    """A net that records what it is called with and returns a fixed function of its input."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = []

    def forward(self, x, timesteps, text, condition_video_input_mask_B_C_T_H_W=None, **kw):
        self.calls.append((x.detach().clone(), timesteps.detach().clone()))
        return 0.3 * x + timesteps[:, None, :1, None, None] / 1000.0


def upstream_x0(net_out_fn, x0, eps, t, gt, mask, sigma_conditional=1e-4):
    """`denoise_edm` with `RectifiedFlow_sCMWrapper` (sigma_data 1), restated from upstream:
    x_t = cos t x0 + sin t eps; net input x_t c_in with the given frames' latent in place;
    c_noise = sin t / (cos t + sin t), the given frames' that of atan(sigma_conditional);
    x0 = c_skip x_t + c_out F, given frames replaced by the latent. The distillation net's
    timestep scale is 1 where ours is 0.001 on a 0..1000 input, hence the 1000."""
    c = math.cos(t) + math.sin(t)
    c_skip, c_out, c_in, c_noise = 1 / c, -math.sin(t) / c, 1 / c, math.sin(t) / c
    x_t = math.cos(t) * x0 + math.sin(t) * eps
    net_in = gt * mask + x_t * c_in * (1 - mask)
    t_c = math.atan(sigma_conditional)
    c_noise_cond = math.sin(t_c) / (math.cos(t_c) + math.sin(t_c))
    frame_mask = mask[:, 0, :, 0, 0]
    noise = c_noise_cond * frame_mask + c_noise * (1 - frame_mask)
    out = net_out_fn(net_in, noise * 1000.0)
    return net_in, noise * 1000.0, gt * mask + (c_skip * x_t + c_out * out) * (1 - mask)


@pytest.mark.parametrize("replace", [True, False])
def test_net_call_and_x0_equal_upstreams_trigflow_wrapper(replace):
    torch.manual_seed(0)
    x0, eps = torch.randn(2, 4, 3, 2, 2, dtype=torch.float64), torch.randn(2, 4, 3, 2, 2)
    eps = eps.double()
    cond = Condition(x0.float(), torch.tensor([1, 0]), torch.randn(2, 5, 8))
    t = math.atan(5)  # one of the student's times
    s = rf_time(t)
    net = Recorder()
    obj = FlowDMD2Objective(replace_gt_timesteps=replace)
    ours = obj.x0(net, renoise(x0, eps, s).float(), torch.full((2, 1), s), cond)
    mask = cond.mask.double()

    def fn(x, timesteps):
        return 0.3 * x + timesteps[:, None, :1, None, None] / 1000.0

    sigma_cond = 1e-4 if replace else math.tan(t)  # off: the given frames share the time
    net_in, timesteps, theirs = upstream_x0(fn, x0, eps, t, x0, mask, sigma_cond)
    seen_x, seen_t = net.calls[0]
    torch.testing.assert_close(seen_x.double(), net_in, atol=1e-5, rtol=0)
    torch.testing.assert_close(seen_t.double().expand_as(timesteps), timesteps, atol=1e-3, rtol=0)
    torch.testing.assert_close(ours.double(), theirs, atol=1e-5, rtol=0)


def test_sampler_starts_from_noise_and_reuses_it():
    seen = []
    target = torch.full((1, 2, 3), 0.5)

    def x0_fn(x, s):
        seen.append((x.double().clone(), s))
        return target

    eps = torch.randn(1, 2, 3, dtype=torch.float64)
    levels = flow_student_levels(4, 5.0)
    out = flow_few_step_sample(x0_fn, levels, eps)
    assert [s for _, s in seen] == levels
    torch.testing.assert_close(seen[0][0], eps)  # s = 1 (upstream pi/2): the noise itself
    for x, s in seen[1:]:
        torch.testing.assert_close(x, (1 - s) * 0.5 + s * eps)
    torch.testing.assert_close(out, target)


def tiny_distill_model(guidance: float = 0.0, tmp_path_factory=None):
    cfg = tiny_p25_config(tmp_path_factory)
    cfg.model = distill_flow(cfg.model, num_steps=4, guidance=guidance)
    cfg.model.text_encoder = None
    torch.manual_seed(0)
    return cfg, instantiate(cfg.model)


def p25_batch(b: int = 2, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {
        "video": torch.randint(0, 256, (b, 3, 3, 32, 32), generator=g, dtype=torch.uint8),
        "t5_text_embeddings": torch.randn(b, 512, 1024, generator=g),
    }


def test_student_gets_no_gradient_when_critic_equals_teacher(tmp_path_factory):
    _, model = tiny_distill_model(0.0, tmp_path_factory)
    model.load_weights({f"net.{k}": v for k, v in model.net.state_dict().items()})
    loss, metrics = model.training_step(p25_batch(), step=0)
    assert metrics["student_step"] == 1.0
    loss.backward()
    assert all(p.grad is None or p.grad.abs().max() == 0 for p in model.net.parameters())


def test_each_phase_moves_only_its_net_and_the_text_projection_stays(tmp_path_factory):
    _, model = tiny_distill_model(2.0, tmp_path_factory)
    with torch.no_grad():  # adaLN gates on, a critic unlike the teacher
        for name, p in model.net.named_parameters():
            if "adaln_modulation" in name:
                p.normal_(0, 0.05)
        model.load_weights({f"net.{k}": v for k, v in model.net.state_dict().items()})
        for p in model.fake_score.parameters():
            p.add_(0.05 * torch.randn_like(p))
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert frozen and all(n.startswith("teacher.") for n in frozen)
    opt = distill_adamw(model.trainable_parameters(), lr=1e-3, critic_lr_scale=0.2)
    snap = {k: v.clone() for k, v in model.state_dict().items()}
    for step, moved in ((0, "net."), (1, "fake_score.")):
        before = {k: v.clone() for k, v in model.state_dict().items()}
        loss, metrics = model.training_step(p25_batch(seed=step), step=step)
        assert math.isfinite(float(loss.detach())) and metrics["student_step"] == (step == 0)
        loss.backward()
        # The text projection is frozen (upstream disable_proj_grad): no gradient reaches it.
        proj = [p.grad for n, p in model.named_parameters() if "crossattn_proj" in n]
        assert len(proj) == 6 and all(g is None for g in proj)
        opt.step()
        opt.zero_grad(set_to_none=True)
        after = model.state_dict()
        changed = {k for k in after if not torch.equal(after[k], before[k])}
        assert {k.split(".")[0] + "." for k in changed} == {moved}, (step, changed)
    assert all(torch.equal(model.state_dict()[k], snap[k]) for k in snap if "crossattn_proj" in k)
    assert all(torch.equal(model.state_dict()[k], snap[k]) for k in snap if "teacher." in k)


def test_experiments_carry_upstreams_values():
    cfg = get("predict2_5_groot_gr1_480_distill")
    obj, sampler = cfg.model.objective, cfg.model.sampler
    assert obj._target_.endswith("FlowDMD2Objective")
    assert (obj.guidance, obj.student_update_freq, obj.timestep_shift) == (3.0, 5, 5.0)
    assert (obj.replace_gt_timesteps, obj.sigma_conditional) == (True, 1e-4)
    assert (sampler.num_steps, sampler.shift, sampler.guidance) == (4, 5.0, 0.0)
    # Guidance asked of the student uses the teacher's (upstream's 2.5) negative prompt.
    teacher_sampler = get("predict2_5_groot_gr1_480").model.sampler
    assert sampler.negative_prompt == teacher_sampler.negative_prompt is not None
    assert (cfg.optim.lr, cfg.optim.lr * cfg.optim.critic_lr_scale) == (1e-6, pytest.approx(2e-7))
    assert list(cfg.optim.betas) == [0.9, 0.999] and cfg.optim.weight_decay == 0.01
    assert cfg.train.grad_clip == 1.0 and list(cfg.model.frozen) == ["crossattn_proj"]
    assert cfg.model.net._target_.endswith("Predict25DiT")
    tiny = get("tiny_predict2_5_gr1_distill")
    assert tiny.model.net._target_.endswith("Predict25DiT")
    assert tiny.checkpoint.load_path.endswith(
        "tiny_predict2_5_gr1/checkpoints/model/iter_000001000.pt"
    )
    # The teacher's given-frame weights carry over (tiny: always one frame).
    assert list(tiny.model.objective.conditional_frames_probs) == [0.0, 1.0]


def test_student_generates_through_video2world_with_its_own_steps(tmp_path_factory, monkeypatch):
    from framework.inference import video2world
    from framework.models.cosmos2_5.net import Predict25DiT

    cfg = tiny_p25_config(tmp_path_factory)
    cfg.model = distill_flow(cfg.model, num_steps=4, guidance=3.0)
    cfg.job.name = "tiny_p25_distill"
    ckpt = write_job(cfg, ema=False)
    calls, forward = [], Predict25DiT.forward

    def counted(self, x, timesteps, *args, **kw):
        calls.append((x.shape[0], timesteps.reshape(x.shape[0], -1)[0, -1].item()))
        return forward(self, x, timesteps, *args, **kw)

    monkeypatch.setattr(Predict25DiT, "forward", counted)
    out = tmp_path_factory.mktemp("out") / "student.mp4"
    assert video2world.main(["--checkpoint", str(ckpt), "--save_path", str(out)]) == 0
    assert out.is_file() and out.stat().st_size > 0
    # Four unguided calls (batch 1) at the student's continuous times 1000 s.
    assert [b for b, _ in calls] == [1, 1, 1, 1]
    assert [t for _, t in calls] == pytest.approx([1000 * s for s in flow_student_levels()])
    calls.clear()
    argv = ["--checkpoint", str(ckpt), "--save_path", str(out), "--steps", "35"]
    assert video2world.main(argv) == 1
    assert calls == []  # more steps than distilled for: refused before any net call


def test_tiny_predict2_5_distill_trains_and_its_student_file_generates(tmp_path, monkeypatch):
    """Through the stock trainer: the written student file is a complete Predict2.5 model (the
    frozen text projection included) that video2world runs with its 4 steps."""
    from framework.inference import video2world
    from framework.io import read_checkpoint
    from framework.jobs import job_dir_of
    from launch import train
    from tests.test_distill_train import STEPS_OFF, teacher_file

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATASETS", str(tmp_path / "datasets"))
    monkeypatch.setenv("OUTPUT_ROOT", str(tmp_path / "runs"))
    load_all()
    teacher_file(get("tiny_predict2_5_gr1"))
    args = ["tiny_predict2_5_gr1_distill", "data.batch_size=1", "checkpoint.save_iter=2"]
    assert train.main([*args, *STEPS_OFF, "train.max_steps=2"]) == 0
    job = job_dir_of(get("tiny_predict2_5_gr1_distill"))
    ckpt = job / "checkpoints/model/iter_000000002.pt"
    saved = read_checkpoint(ckpt)
    teacher = read_checkpoint(
        job_dir_of(get("tiny_predict2_5_gr1")) / "checkpoints/model/iter_000001000.pt"
    )
    assert {k for k in saved if k.startswith("net.")} == set(teacher)
    for key in ("net.crossattn_proj.0.weight", "fake_score.crossattn_proj.0.weight"):
        torch.testing.assert_close(saved[key], teacher["net.crossattn_proj.0.weight"])
    # Step 1 trained the critic away from the teacher.
    assert any(not torch.equal(saved[f"fake_score.{k[4:]}"], v) for k, v in teacher.items())
    out = tmp_path / "student.mp4"
    assert video2world.main(["--checkpoint", str(ckpt), "--save_path", str(out)]) == 0
    assert out.is_file() and out.stat().st_size > 0


def test_gpu_bench_smoke_runs_the_predict2_5_pair(tmp_path):
    """bench/bench_distill.py --family predict2_5 (the 2B speed rows) on tiny CPU shapes."""
    import json

    from bench import bench_distill

    out = tmp_path / "bench.json"
    argv = ["--smoke", "--family", "predict2_5", "--iters", "1", "--thresholds", ""]
    assert bench_distill.main([*argv, "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert set(rows) == {"teacher 35 steps CFG", "student 4 steps, guidance 0"}
    assert rows["student 4 steps, guidance 0"]["s"] > 0
