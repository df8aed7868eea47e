"""DMD2 for a flow-matching teacher end to end on a 2-D mixture (spec/distillation.md §5
level 1): a small MLP teacher trained with the Predict2.5 objective (flow matching), then a
4-step student distilled with `FlowDMD2Objective`, judged by the energy distance of its samples
to the data against the teacher's own UniPC sampler and the student's sampler on the teacher."""

from __future__ import annotations

import torch

from framework.diffusion.distill_flow import FlowDMD2Objective, FlowFewStepSampler
from framework.diffusion.flow_matching import FlowMatchingObjective
from framework.diffusion.unipc import UniPCSampler
from tests.test_distill_toy import CENTERS, MLP, cond_of, data, distill, energy, sample


class FlowMLP(MLP):
    """The toy net on the flow's 0..1000 timestep scale (the 2.5 net multiplies by 0.001)."""

    def forward(self, x, timesteps, emb, condition_video_input_mask_B_C_T_H_W=None, **_):
        return super().forward(x, timesteps * 1e-3, emb)


def test_flow_dmd2_student_samples_the_data_in_4_steps():
    torch.manual_seed(0)
    fm = FlowMatchingObjective(text_dropout=0.0)
    teacher = FlowMLP()
    opt = torch.optim.Adam(teacher.parameters(), 2e-3)
    for _ in range(1500):
        x0 = data(256)
        loss, _ = fm.loss(teacher, x0, cond_of(x0))
        opt.zero_grad()
        loss.backward()
        opt.step()
    teacher.requires_grad_(False)
    ref = data(2000, torch.Generator().manual_seed(9))
    few = FlowFewStepSampler(num_steps=4)
    dmd = FlowDMD2Objective(guidance=0.0, student_update_freq=5)
    teacher_35 = energy(sample(teacher, UniPCSampler(), fm, 35), ref)
    teacher_4 = energy(sample(teacher, UniPCSampler(), fm, 4), ref)
    teacher_few = energy(sample(teacher, few, dmd, 4), ref)

    student = distill(dmd, teacher, few.sigmas())
    samples = sample(student, few, dmd, 4)
    student_4 = energy(samples, ref)
    # Measured (2026-12-07, this CPU): teacher UniPC 35 steps 0.056 (its shift-5 grid ends at
    # s = 0.128), cut to 4 steps 0.355, the student's sampler on the teacher 0.364, the student
    # after 1000 DMD2 steps 0.061. The teacher's 4 steps miss the mixture, the student's do not.
    assert teacher_35 < 0.1 and min(teacher_4, teacher_few) > 0.2, (teacher_35, teacher_4)
    assert student_4 < 0.25 * min(teacher_4, teacher_few), (student_4, teacher_4, teacher_few)
    assert student_4 < 2 * teacher_35, (student_4, teacher_35)
    # No mode collapse: each of the 4 modes keeps 25% +- 8% of the samples.
    share = torch.bincount(torch.cdist(samples.reshape(-1, 2), CENTERS).argmin(1), minlength=4)
    assert ((share / len(samples) - 0.25).abs() < 0.08).all(), share
