"""DMD2 for a flow-matching teacher (Predict2.5): the recipe of framework/diffusion/distill.py in
the flow's own coordinates, as Cosmos-Predict2.5's `Video2WorldModelDistillDMD2TrigFlow` runs it
(spec/distillation.md §1, §3; upstream `predict2/distill/models/video2world_model_distill_dmd2.py`
and `distillation_base_mixin.py`).

Upstream draws TrigFlow times t (x_t = cos t x0 + sin t eps) and wraps the unchanged RF net with
`RectifiedFlow_sCMWrapper`: the net sees x_t / (cos t + sin t), which is the flow interpolant
x_s = (1 - s) x0 + s eps at s = sin t / (cos t + sin t), with timestep s (`c_noise`), and returns
x0 = x_s - s v. Every step below is that map written in s directly: the same net inputs, the
same x0, no trigonometry except the critic's loss weight 1 / sin^2 t, which is upstream's.

What is Predict2.5's and not Predict2's here: the student's first level is pure noise (s = 1,
upstream's pi/2), the time the net sees is continuous (the flow teacher's sampler floors
1000 s; the distillation wrapper does not), and with `replace_gt_timesteps` (upstream's 2B
value) the given frames enter every net at the timestep of sigma_conditional = 1e-4.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from framework.diffusion.conditioning import Condition
from framework.diffusion.distill import DMD2Base, first_levels, shifted_rf_time
from framework.diffusion.flow_matching import (
    NUM_TRAIN_TIMESTEPS,
    FlowMatchingObjective,
    sample_num_frames,
)
from framework.diffusion.samplers import GenerationDefaults, X0Fn, initial_noise


def trigflow_time(s: Tensor | float) -> Tensor | float:
    """TrigFlow time t = atan(s / (1 - s)) of RF time s (spec §1)."""
    if isinstance(s, Tensor):
        return torch.atan2(s, 1.0 - s)
    return math.atan2(s, 1.0 - s)


def rf_time(t: Tensor | float) -> Tensor | float:
    """RF time s = sin t / (cos t + sin t) of TrigFlow time t (= tan t / (1 + tan t), spec §1)."""
    if isinstance(t, Tensor):
        return torch.sin(t) / (torch.cos(t) + torch.sin(t))
    return math.sin(t) / (math.cos(t) + math.sin(t))


def flow_student_levels(num_steps: int = 4, shift: float = 5.0) -> list[float]:
    """The student's RF times: the uniform grid 1, 1 - 1/n, ..., 1/n shifted by `shift`.
    Upstream's `selected_sampling_time` [pi/2, atan 15, atan 5, atan 5/3] is this grid for 4
    steps and shift 5: RF [1, .9375, .8333, .625] (its comment: "uniformly-spaced 4-step t in RF:
    [1.0, 0.75, 0.5, 0.25] with a shift of 5")."""
    if num_steps < 1:
        raise ValueError(f"the student needs at least 1 step, got num_steps={num_steps}.")
    return [float(shifted_rf_time(1.0 - k / num_steps, shift)) for k in range(num_steps)]


def renoise(x0: Tensor, eps: Tensor, s: float | Tensor) -> Tensor:
    """The flow state at RF time s: (1 - s) x0 + s eps (upstream: cos t x0 + sin t eps, which
    the wrapper divides by cos t + sin t)."""
    return (1.0 - s) * x0 + s * eps


def flow_few_step_sample(x0_fn: X0Fn, levels: Sequence[float], eps: Tensor) -> Tensor:
    """The student's sampler (upstream `generate_samples_from_batch`): x0 = f(x, s_i), then
    x = (1 - s_{i+1}) x0 + s_{i+1} eps with the initial noise eps reused at every step; the last
    x0 is the sample. The state starts as upstream's: the noise itself at TrigFlow time t_0,
    i.e. eps / (cos t_0 + sin t_0) in flow coordinates (eps for s_0 = 1)."""
    eps = eps.double()
    t0 = trigflow_time(float(levels[0]))
    x = eps / (math.cos(t0) + math.sin(t0))
    x0 = x
    for i, s in enumerate(levels):
        x0 = x0_fn(x.float(), float(s)).double()
        if i + 1 < len(levels):
            x = renoise(x0, eps, float(levels[i + 1]))
    return x0.float()


@dataclass
class FlowFewStepSampler(GenerationDefaults):
    """A distilled Predict2.5 student's sampler as a config node: `num_steps` levels on the
    shift grid of `flow_student_levels`, one unguided net call each (guidance is distilled in;
    `guidance` is the generation commands' default, `negative_prompt` the teacher's, used only
    when guidance is asked for). A call may ask for fewer steps (the first n levels, as training
    rolls out 1..num_steps), never more. Initial noise: numpy RandomState(seed), as the
    teacher's samplers here, so a seed means the same noise for both."""

    num_steps: int = 4
    shift: float = 5.0
    guidance: float | None = 0.0

    def sigmas(self, num_steps: int | None = None) -> list[float]:
        return first_levels(flow_student_levels(self.num_steps, self.shift), num_steps)

    def __call__(
        self,
        x0_fn: X0Fn,
        shape: Sequence[int],
        seed: int = 0,
        *,
        num_steps: int | None = None,
        device: torch.device | str = "cpu",
        noise: Tensor | None = None,
    ) -> Tensor:
        eps = initial_noise(shape, seed, 1.0, device) if noise is None else noise.to(device)
        return flow_few_step_sample(x0_fn, self.sigmas(num_steps), eps)


@dataclass
class FlowDMD2Objective(DMD2Base):
    """DMD2 student and critic losses around a flow-matching teacher (spec §3.3-3.4).

    guidance: the teacher's CFG in the Cosmos form cond + g (cond - uncond), distilled in
    (upstream 2B: 3). timestep_shift: the critic/DMD time draw s = shift u / (1 + (shift-1) u),
    u ~ U(0,1) (`draw_training_time_D`). conditional_frames_probs: weights of 0, 1, 2, ... given
    latent frames per sample (the teacher's). replace_gt_timesteps / sigma_conditional: given
    frames enter every net at the RF time of sigma 1e-4 (upstream's 2B experiments); off, they
    share the noisy frames' time as the teacher trained. min_tau: floor of the drawn time, so
    the critic's 1 / sin^2 weight stays finite.
    """

    guidance: float = 3.0
    student_update_freq: int = 5
    timestep_shift: float = 5.0
    loss_scale_dmd: float = 1.0
    loss_scale_critic: float = 1.0
    conditional_frames_probs: tuple[float, ...] = (0.5, 0.25, 0.25)
    replace_gt_timesteps: bool = True
    sigma_conditional: float = 1e-4
    min_tau: float = 1e-5

    @property
    def _flow(self) -> FlowMatchingObjective:
        """The teacher's net call (frame_replace, mask channel) with continuous time and the
        given frames' time of this objective."""
        s_cond = self.sigma_conditional / (1.0 + self.sigma_conditional)
        cond_t = s_cond * NUM_TRAIN_TIMESTEPS if self.replace_gt_timesteps else -1.0
        return FlowMatchingObjective(
            conditional_frame_timestep=cond_t, inference_timestep_floor=False
        )

    def x0(self, net, x_s: Tensor, s: Tensor, cond: Condition) -> Tensor:
        """x0 = x_s - s v of any of the three nets at RF time s [B,1]; given frames are the clean
        latent (generation calls this with the student)."""
        b = x_s.shape[0]
        v = self._flow.velocity(net, x_s, s, cond)
        x0 = x_s.float() - s.reshape(b, 1, 1, 1, 1).float() * v
        mask = cond.mask
        return cond.gt.float() * mask + x0 * (1.0 - mask)

    def draw_conditional_frames(self, b: int, t: int, device) -> Tensor:
        n = sample_num_frames(b, self.conditional_frames_probs, device=device)
        return n.clamp(max=t)

    def sample_tau(self, b: int, device) -> Tensor:
        """Critic/DMD RF times [B,1] (float64): the shifted uniform draw."""
        u = torch.rand(b, 1, device=device, dtype=torch.float64)
        return shifted_rf_time(u, self.timestep_shift).clamp(self.min_tau, 1.0)

    def initial_state(self, eps: Tensor, s0: float) -> Tensor:
        """Upstream's start (`backward_simulation`): the noise at TrigFlow time t_0, i.e.
        eps / (cos t_0 + sin t_0) in flow coordinates (as `flow_few_step_sample`)."""
        t0 = trigflow_time(s0)
        return eps / (math.cos(t0) + math.sin(t0))

    def renoise(self, x0: Tensor, eps: Tensor, s: float | Tensor) -> Tensor:
        return renoise(x0, eps, s)

    def trig_time(self, s: Tensor) -> Tensor:
        return torch.atan2(s, 1.0 - s)  # trigflow_time, typed for tensors

    def critic_error(self, g: Tensor, x0_fake: Tensor, s: Tensor) -> Tensor:
        # Upstream's weight: 1 / sin^2 t of the TrigFlow time (x0 error -> TrigFlow velocity),
        # from the float64 draw.
        sin2 = torch.sin(trigflow_time(s)) ** 2
        return (g - x0_fake) ** 2 / sin2.float().view(g.shape[0], 1, 1, 1, 1)
