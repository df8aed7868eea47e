"""DMD2 end to end on a 2-D mixture (spec/distillation.md §5 level 1): a small MLP teacher trained
with the Predict2 objective, then a 4-step student distilled with `DMD2Objective`, judged by the
energy distance of its samples to the data against the teacher's own samplers."""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from framework.diffusion.conditioning import Condition
from framework.diffusion.distill import DMD2Objective, FewStepSampler
from framework.diffusion.rectified_flow import RectifiedFlowObjective
from framework.diffusion.samplers import MultistepSampler

CENTERS = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]])


class MLP(nn.Module):
    """A velocity net with the DiT's call signature on [B, 2, 1, 1, 1] 'videos'."""

    def __init__(self, hidden: int = 128) -> None:
        super().__init__()
        self.f = nn.Sequential(
            nn.Linear(18, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
            nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, 2),
        )  # fmt: skip

    def forward(self, x, timesteps, emb, condition_video_input_mask_B_C_T_H_W=None, **_):
        b = x.shape[0]
        angle = timesteps.reshape(b, 1) * (2.0 ** torch.arange(8.0)) * math.pi
        h = torch.cat([x.reshape(b, 2), angle.sin(), angle.cos()], dim=1)
        return self.f(h).reshape(b, 2, 1, 1, 1)


def data(n: int, g: torch.Generator | None = None) -> torch.Tensor:
    idx = torch.randint(0, 4, (n,), generator=g)
    return (CENTERS[idx] + 0.1 * torch.randn(n, 2, generator=g)).reshape(n, 2, 1, 1, 1)


def cond_of(x0: torch.Tensor) -> Condition:  # T = 1: an image batch, no given frames
    b = x0.shape[0]
    return Condition(x0, torch.zeros(b, dtype=torch.long), torch.zeros(b, 1, 1))


def energy(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.reshape(-1, 2), b.reshape(-1, 2)
    return float(2 * torch.cdist(a, b).mean() - torch.cdist(a, a).mean() - torch.cdist(b, b).mean())


def sample(net, sampler, objective, num_steps: int, n: int = 2000) -> torch.Tensor:
    c = cond_of(torch.zeros(n, 2, 1, 1, 1))

    def x0_fn(x, sigma):
        return objective.x0(net, x, torch.full((n, 1), sigma), c)

    with torch.no_grad():
        return sampler(x0_fn, (n, 2, 1, 1, 1), seed=0, num_steps=num_steps)


def distill(dmd, teacher, levels, steps: int = 1000):
    """The student after `steps` DMD2 steps from the teacher (student and critic start as
    copies of it), Adam on batches of 256 fresh data points."""
    student, critic = copy.deepcopy(teacher).requires_grad_(True), copy.deepcopy(teacher)
    critic.requires_grad_(True)
    s_opt = torch.optim.Adam(student.parameters(), 1e-3, betas=(0.9, 0.999))
    c_opt = torch.optim.Adam(critic.parameters(), 1e-3, betas=(0.9, 0.999))
    for step in range(steps):
        loss, _ = dmd.loss(student, teacher, critic, cond_of(data(256)), step, levels)
        opt = s_opt if dmd.is_student_step(step) else c_opt
        opt.zero_grad()
        loss.backward()
        opt.step()
    return student


def test_dmd2_student_samples_the_data_in_4_steps_where_the_teacher_cannot():
    torch.manual_seed(0)
    rf = RectifiedFlowObjective(text_dropout=0.0)
    teacher = MLP()
    opt = torch.optim.Adam(teacher.parameters(), 2e-3)
    for _ in range(1500):
        x0 = data(256)
        loss, _ = rf.loss(teacher, x0, cond_of(x0))
        opt.zero_grad()
        loss.backward()
        opt.step()
    teacher.requires_grad_(False)
    ref = data(2000, torch.Generator().manual_seed(9))
    few = FewStepSampler(num_steps=4)
    teacher_35 = energy(sample(teacher, MultistepSampler(), rf, 35), ref)
    teacher_4 = energy(sample(teacher, MultistepSampler(), rf, 4), ref)
    teacher_few = energy(sample(teacher, few, rf, 4), ref)

    dmd = DMD2Objective(guidance=0.0, student_update_freq=5)
    student = distill(dmd, teacher, few.sigmas())
    samples = sample(student, few, dmd, 4)
    student_4 = energy(samples, ref)
    # The teacher's 35 steps sample the mixture; cut to 4 they do not; the student does in 4.
    assert teacher_35 < 0.02 and min(teacher_4, teacher_few) > 0.1, (teacher_35, teacher_4)
    assert student_4 < 0.25 * min(teacher_4, teacher_few), (student_4, teacher_4, teacher_few)
    # No mode collapse: each of the 4 modes keeps 25% +- 8% of the samples.
    share = torch.bincount(torch.cdist(samples.reshape(-1, 2), CENTERS).argmin(1), minlength=4)
    assert ((share / len(samples) - 0.25).abs() < 0.08).all(), share
