"""Few-step students distilled from a trained model with DMD2 (docs/distillation.md).

`distill(model)` turns any Predict2-family model node into the distillation model: the same net
as the student, the teacher and the critic (copies of it, initialised from the teacher file in
`checkpoint.load_path`), the DMD2 objective and the student's few-step sampler.
`distill_flow(model)` does the same for a flow-matching (Predict2.5-family) model.
"""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from experiments import blocks
from experiments.groot import groot_gr1_480
from experiments.predict2_5 import predict2_5_groot_gr1_480, tiny_predict2_5_gr1
from experiments.tiny import tiny_gr1
from framework.config import L, experiment

# The default job's last checkpoint (`make train`): tiny_gr1 runs 1000 steps.
TINY_TEACHER = (
    "${oc.env:OUTPUT_ROOT,checkpoints}/worldtune/tiny/tiny_gr1/checkpoints/model/iter_000001000.pt"  # noqa: E501
)
# The same for the tiny Predict2.5 job (`make train EXP=tiny_predict2_5_gr1`).
TINY_TEACHER_2_5 = TINY_TEACHER.replace("/tiny_gr1/", "/tiny_predict2_5_gr1/")


def distill(model: DictConfig, num_steps: int = 4, guidance: float = 3.0) -> DictConfig:
    """The distillation model around `model`'s net, tokenizer and text settings. The teacher's
    conditioning rules (clean-frame count, sigma_conditional) carry over to the student."""
    out = OmegaConf.create(OmegaConf.to_container(model))
    out._target_ = "framework.models.distill.DistillWorldModel"
    teacher = model.objective
    out.objective = L("framework.diffusion.distill.DMD2Objective").full(
        guidance=guidance,
        sigma_conditional=teacher.get("sigma_conditional", 1e-4),
        min_num_conditional_frames=teacher.get("min_num_conditional_frames", 1),
        max_num_conditional_frames=teacher.get("max_num_conditional_frames", 2),
    )
    out.sampler = L("framework.diffusion.distill.FewStepSampler").full(num_steps=num_steps)
    out.teacher = None  # null: the student's architecture (model.net)
    out.fake_score = None
    return out


def distill_flow(model: DictConfig, num_steps: int = 4, guidance: float = 3.0) -> DictConfig:
    """The distillation model around a Predict2.5 (flow-matching) model node: DMD2 in the flow's
    coordinates (framework/diffusion/distill_flow.py) with upstream's 2B values, the teacher's
    given-frame weights carried over, and the text projection frozen in student and critic
    (upstream `disable_proj_grad`)."""
    out = OmegaConf.create(OmegaConf.to_container(model))
    out._target_ = "framework.models.distill.DistillWorldModel"
    teacher = model.objective
    out.objective = L("framework.diffusion.distill_flow.FlowDMD2Objective").full(
        guidance=guidance,
        conditional_frames_probs=list(teacher.get("conditional_frames_probs", [0.5, 0.25, 0.25])),
    )
    out.sampler = L("framework.diffusion.distill_flow.FlowFewStepSampler").full(
        num_steps=num_steps, negative_prompt=model.sampler.get("negative_prompt")
    )
    out.teacher = None  # null: the student's architecture (model.net)
    out.fake_score = None
    out.frozen = ["crossattn_proj"]
    return out


def distill_optim(lr: float, critic_lr_scale: float = 0.2, weight_decay: float = 0.01):
    """Student and critic AdamW with Predict2.5's betas (spec §3.2)."""
    return L("framework.models.distill.distill_adamw")(
        lr=lr, weight_decay=weight_decay, betas=[0.9, 0.999], eps=1e-8,
        critic_lr_scale=critic_lr_scale, master_weights=False,
    )  # fmt: skip


def tiny_student_run(cfg: DictConfig, teacher: str) -> DictConfig:
    """The run settings both tiny 4-step students share: 200 steps from `teacher` at a flat
    rate, the hooks and `python -m framework.eval` at the student's own 4 steps."""
    # Upstream distills at ~1/40 of the post-training rate (1e-6 vs 2^-14.5); 2e-3 / 100 here.
    # At 6e-5 and 2e-4 the student drifted away from the teacher (performance.md).
    cfg.optim = distill_optim(lr=2e-5, critic_lr_scale=1.0, weight_decay=0.0)
    cfg.sched = blocks.lambda_linear(warm_up=0, cycle=10**6, f_start=1.0, f_max=1.0, f_min=1.0)
    cfg.train.max_steps = 200
    cfg.checkpoint.load_path = teacher
    cfg.checkpoint.save_iter = 100
    cfg.hooks.eval.num_steps = 4
    cfg.hooks.sample.num_steps = 4
    # `python -m framework.eval` on the student: its own steps, so its own frozen eval set name.
    cfg.eval.name = f"{cfg.eval.name}_4steps"
    cfg.eval.num_steps = 4
    cfg.hooks.sample.every = 200
    return cfg


@experiment
def tiny_gr1_distill():
    """4-step DMD2 student of the CPU default job (teacher: its step-1000 checkpoint)."""
    cfg = tiny_gr1()
    # The tiny teacher trained without caption dropout, so it has no unconditional prediction
    # to guide with: the student learns the unguided teacher.
    cfg.model = distill(cfg.model, num_steps=4, guidance=0.0)
    # Noise levels scale with the data: sigma = shift * u / (1 - u), and these pixels have std
    # ~0.27 where upstream's latents have ~1, so shift 5 * 0.27 = 1.35 gives upstream's
    # signal-to-noise schedule (the student at step 0 scores 34.2 dB against the teacher's
    # videos with it, 31.4 dB with shift 5; docs/performance.md).
    cfg.model.sampler.shift = 1.35
    cfg.model.objective.timestep_shift = 1.35
    return tiny_student_run(cfg, TINY_TEACHER)


@experiment(job_name="2b_groot_gr1_480_distill")
def groot_gr1_480_distill():
    """Predict2 2B GR1 model -> 4-step student with guidance 3 distilled in (Predict2.5's DMD2
    2B values); teacher = checkpoint.load_path (set it to your post-trained model file)."""
    cfg = groot_gr1_480()
    cfg.model = distill(cfg.model, num_steps=4, guidance=3.0)
    cfg.optim = distill_optim(lr=1e-6, critic_lr_scale=0.2)
    cfg.sched = blocks.lambda_linear(
        warm_up=100, cycle=400_000, f_start=1e-6, f_max=0.99, f_min=0.4
    )
    cfg.train.max_steps = 30_000
    cfg.checkpoint.save_iter = 500
    return cfg


@experiment
def tiny_predict2_5_gr1_distill():
    """4-step DMD2 student of the tiny Predict2.5 job (teacher: its step-1000 checkpoint)."""
    cfg = tiny_predict2_5_gr1()
    # Trained without caption dropout (as tiny_gr1): no unconditional prediction to guide with.
    cfg.model = distill_flow(cfg.model, num_steps=4, guidance=0.0)
    # The teacher trained with given frames at the noisy frames' time (2.5's
    # conditional_frame_timestep -1); upstream's 2B distillation feeds them sigma 1e-4 instead,
    # a time this small teacher never saw next to noisy frames: its weights under the student's
    # sampler score 18.6 dB against the truth with that, 26.8 dB without (docs/performance.md).
    # Upstream's shift 5 stays (1.35, the Predict2 tiny student's value, scores 26.5 dB).
    cfg.model.objective.replace_gt_timesteps = False
    return tiny_student_run(cfg, TINY_TEACHER_2_5)


@experiment(job_name="2b_groot_gr1_480_distill")
def predict2_5_groot_gr1_480_distill():
    """Predict2.5 2B GR1 model -> 4-step student with guidance 3 distilled in (upstream's
    `dmd2_trigflow_distill_cosmos_predict2_2B_bidirectional_TnI2V` values, spec §3.2); teacher =
    checkpoint.load_path (set it to your post-trained model file)."""
    cfg = predict2_5_groot_gr1_480()
    cfg.model = distill_flow(cfg.model, num_steps=4, guidance=3.0)
    cfg.optim = distill_optim(lr=1e-6, critic_lr_scale=0.2)
    cfg.sched = blocks.lambda_linear(
        warm_up=100, cycle=400_000, f_start=1e-6, f_max=0.99, f_min=0.4
    )
    cfg.train.max_steps = 30_000
    cfg.train.grad_clip = 1.0  # upstream clip_norm 1.0 (grad_clip=True)
    # The trainer's EMA would average the critic too and step on critic steps; upstream's EMA
    # of the student alone (updated on student steps) is not built here.
    cfg.train.ema.enabled = False
    cfg.checkpoint.save_iter = 500
    return cfg
