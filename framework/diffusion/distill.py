"""Few-step distillation of a rectified-flow teacher: DMD2 as in Cosmos-Predict2.5's
`predict2/distill` (spec/distillation.md §3), written in our EDM coordinates.

Why DMD2 and not rCM: both NVIDIA recipes share the same student/critic/teacher code and
Predict2.5's release runs with rCM's consistency term off (§0.2); DMD2 needs only ordinary
forward and backward passes of the existing DiT, so FSDP2, activation checkpointing, SDPA and
context parallel work unchanged, where rCM needs a forward-mode (JVP) variant of every block and
of attention (§4). docs/distillation.md has the whole argument.

Coordinates: x_sigma = x0 + sigma * eps as everywhere here (RF time s = sigma / (1 + sigma), so
the TrigFlow recipe's times map one to one, §1 and §4.2). Three nets of one architecture take
part: the student (`net`, the few-step generator), the frozen teacher, and the critic ("fake
score") that learns the student's own distribution. Every x0 prediction goes through
`rectified_flow.denoise`, so given latent frames are replaced by the clean latent everywhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from framework.diffusion.conditioning import Condition, guided_x0
from framework.diffusion.rectified_flow import denoise, sample_num_conditional_frames
from framework.diffusion.samplers import X0Fn, initial_noise


def shifted_rf_time(u: Tensor | float, shift: float) -> Tensor | float:
    """RF time s = shift * u / (1 + (shift - 1) u): the timestep shift (spec §1 UniformShift)."""
    return shift * u / (1.0 + (shift - 1.0) * u)


def sigma_of_rf(s: Tensor | float) -> Tensor | float:
    """EDM sigma of RF time s (sigma = s / (1 - s))."""
    return s / (1.0 - s)


def student_sigmas(num_steps: int = 4, shift: float = 5.0, sigma_max: float = 80.0) -> list[float]:
    """The student's noise levels: sigma_max, then RF times shifted from the uniform grid
    1 - k/num_steps (spec §3.3: with shift 5 and 4 steps, RF .9375, .8333, .625 = sigma 15, 5,
    5/3). sigma_max (80, RF .988) replaces upstream's pure-noise start so the first step sees
    the level the teacher's own sampler starts from."""
    if num_steps < 1:
        raise ValueError(f"the student needs at least 1 step, got num_steps={num_steps}.")
    grid = [1.0 - k / num_steps for k in range(1, num_steps)]
    return [float(sigma_max)] + [float(sigma_of_rf(shifted_rf_time(u, shift))) for u in grid]


def few_step_sample(
    x0_fn: X0Fn,
    shape: Sequence[int],
    sigmas: Sequence[float],
    seed: int = 0,
    *,
    device: torch.device | str = "cpu",
    noise: Tensor | None = None,
) -> Tensor:
    """The student's sampler: x0 = f(x, sigma_i), then x = x0 + sigma_{i+1} * eps0 with the
    initial noise eps0 reused at every step (Predict2.5's DMD2 inference, spec §3.5); the last
    x0 is the sample. One net call per step."""
    if noise is None:
        eps = initial_noise(shape, seed, 1.0, device)
    else:
        eps = noise.to(device=device, dtype=torch.float64)
    x = eps * sigmas[0]
    x0 = x
    for i, sigma in enumerate(sigmas):
        x0 = x0_fn(x.float(), float(sigma)).double()
        if i + 1 < len(sigmas):
            x = x0 + sigmas[i + 1] * eps
    return x0.float()


def first_levels(levels: list[float], num_steps: int | None) -> list[float]:
    """The first `num_steps` of a student's levels (all of them for None): both samplers allow
    fewer steps than distilled for (training rolls out 1..n), never more."""
    n = num_steps or len(levels)
    if n > len(levels):
        raise ValueError(
            f"the student was distilled for {len(levels)} steps, not {n}; pass "
            f"--num_steps {len(levels)} or fewer."
        )
    return levels[:n]


@dataclass
class FewStepSampler:
    """The distilled student's sampler as a config node. `num_steps` is what the student was
    distilled for (its checkpoint's config records it); a call may ask for fewer (the first n
    levels: training rolls out 1..num_steps steps). `guidance` is the default for generation:
    guidance is distilled in, so the student runs one unguided forward per step."""

    num_steps: int = 4
    shift: float = 5.0
    sigma_max: float = 80.0
    guidance: float = 0.0

    def sigmas(self, num_steps: int | None = None) -> list[float]:
        return first_levels(student_sigmas(self.num_steps, self.shift, self.sigma_max), num_steps)

    def __call__(
        self,
        x0_fn: X0Fn,
        shape: Sequence[int],
        seed: int = 0,
        *,
        num_steps: int | None = None,
        device: torch.device | str = "cpu",
    ) -> Tensor:
        return few_step_sample(x0_fn, shape, self.sigmas(num_steps), seed, device=device)


def dmd_gradient(g: Tensor, x0_fake: Tensor, x0_teacher: Tensor) -> Tensor:
    """The distribution-matching direction (spec §3.3), in float64 as upstream: (x0_fake -
    x0_teacher) divided by the per-sample mean |G - x0_teacher| (clipped at 1e-5). A sample with
    a NaN or Inf entry is all zeros: upstream drops such a sample's loss; zeroing its direction
    also keeps its gradient finite (a masked loss still back-propagates 0 * NaN = NaN)."""
    g, x0_fake, x0_teacher = g.double(), x0_fake.double(), x0_teacher.double()
    dims = tuple(range(1, g.dim()))
    weight = (g - x0_teacher).abs().mean(dim=dims, keepdim=True).clamp_min(1e-5)
    grad = (x0_fake - x0_teacher) / weight
    bad = ~torch.isfinite(grad).flatten(1).all(dim=1)
    return torch.where(bad.view(-1, *[1] * len(dims)), torch.zeros_like(grad), grad)


class DMD2Base:
    """What the two DMD2 objectives share: the step phases, the student rollout, the guided
    teacher and the loss of either phase. They run the same recipe in different coordinates
    (this file's EDM sigma for Predict2 students, distill_flow.py's RF time s for Predict2.5),
    so a subclass supplies only what depends on them: `x0` (the net call), `sample_tau`,
    `initial_state` and `renoise` (the noisy state at a level), `trig_time` (a level as TrigFlow
    time, for the metrics), `draw_conditional_frames`, and `critic_error` (the critic's loss
    weight in its coordinates). The DMD loss is the same in both: it lives in x0 space."""

    guidance: float
    student_update_freq: int
    loss_scale_dmd: float
    loss_scale_critic: float

    def is_student_step(self, step: int) -> bool:
        return step % max(int(self.student_update_freq), 1) == 0

    def rollout_length(self, step: int, num_steps: int) -> int:
        """Student steps in this step's rollout, 1..num_steps, cycled from the step counter
        (rCM's rule; Predict2.5 draws it and broadcasts rank 0's): every rank of an FSDP group
        must run the same number of net calls."""
        freq = max(int(self.student_update_freq), 1)
        k = step // freq if self.is_student_step(step) else step
        return k % num_steps + 1

    def extra_modules(self) -> dict[str, nn.Module]:
        return {}  # the critic and the teacher are the distillation model's own modules

    def num_conditional_frames(self, b: int, t: int, device, fixed: int | None) -> Tensor:
        if t == 1:
            return torch.zeros(b, dtype=torch.long, device=device)
        if fixed is not None:
            return torch.full((b,), int(fixed), dtype=torch.long, device=device)
        return self.draw_conditional_frames(b, t, device)

    def rollout(
        self, student, cond: Condition, levels: Sequence[float], n: int, grad: bool
    ) -> Tensor:
        """The student's n-step sample from fresh noise (as the sampler node's: the initial
        noise reused at every step, spec §3.3); with `grad` the gradient flows through the last
        student call only."""
        b, dev = cond.gt.shape[0], cond.gt.device
        eps = torch.randn(cond.gt.shape, device=dev)
        x = self.initial_state(eps, float(levels[0]))
        for i in range(n):
            level = torch.full((b, 1), float(levels[i]), device=dev)
            last = i == n - 1
            with torch.set_grad_enabled(grad and last):
                x0 = self.x0(student, x, level, cond)
            if not last:
                x = self.renoise(x0.detach(), eps, float(levels[i + 1]))
        return x0

    def dmd_loss(self, g: Tensor, x0_fake: Tensor, x0_teacher: Tensor) -> Tensor:
        """Upstream's student loss (spec §3.3, `training_step_generator`), in float64: per sample
        the mean of (G - sg(G - grad))^2, whose gradient is 2 grad / numel; a sample whose loss
        is NaN (a NaN in G itself) counts 0, then the mean over the batch."""
        with torch.no_grad():
            grad = dmd_gradient(g.detach(), x0_fake, x0_teacher)
        gd = g.double()
        per = ((gd - (gd.detach() - grad)) ** 2).flatten(1).mean(dim=1)
        return torch.where(per.isnan(), torch.zeros_like(per), per).mean().float()

    def teacher_x0(self, teacher, x: Tensor, level: Tensor, cond: Condition) -> Tensor:
        if self.guidance == 0:
            return self.x0(teacher, x, level, cond)
        both = self.x0(
            teacher, torch.cat([x, x]), torch.cat([level, level]),
            cond.doubled(torch.zeros_like(cond.text)),
        )  # fmt: skip
        return guided_x0(*both.chunk(2), self.guidance)

    def loss(
        self, student, teacher, critic, cond: Condition, step: int, levels: Sequence[float]
    ) -> tuple[Tensor, dict[str, float]]:
        """(loss, metrics) of step `step`: the student's DMD loss or the critic's loss."""
        n = self.rollout_length(step, len(levels))
        b, dev = cond.gt.shape[0], cond.gt.device
        tau = self.sample_tau(b, dev)
        eps = torch.randn(cond.gt.shape, device=dev)
        view = (b, 1, 1, 1, 1)
        tau_f = tau.float()  # the nets' precision (both draws are float64)
        if self.is_student_step(step):
            g = self.rollout(student, cond, levels, n, grad=True)
            x_tau = self.renoise(g.detach(), eps, tau_f.view(view))
            with torch.no_grad():
                x0_fake = self.x0(critic, x_tau, tau_f, cond)
                x0_teacher = self.teacher_x0(teacher, x_tau, tau_f, cond)
            loss = self.dmd_loss(g, x0_fake, x0_teacher) * self.loss_scale_dmd
            metrics = {"dmd_loss": float(loss.detach()), "student_step": 1.0}
        else:
            with torch.no_grad():
                g = self.rollout(student, cond, levels, n, grad=False)
            x_tau = self.renoise(g, eps, tau_f.view(view))
            x0_fake = self.x0(critic, x_tau, tau_f, cond)
            loss = self.critic_error(g, x0_fake, tau).mean() * self.loss_scale_critic
            metrics = {"critic_loss": float(loss.detach()), "student_step": 0.0}
        # In TrigFlow time (radians in [0, pi/2]), the one scale of both families: a sigma drawn
        # up to 1e5 would swamp a mean of sigmas.
        metrics.update(rollout_steps=float(n), tau_trig_mean=float(self.trig_time(tau).mean()))
        return loss, metrics


@dataclass
class DMD2Objective(DMD2Base):
    """DMD2 losses for the student and the critic (spec §3.3-3.4, §4). Step `step` trains the
    student when step % student_update_freq == 0, else the critic (1:4 upstream); the trainer's
    one optimizer holds both nets and a step only moves the net that received gradients.

    guidance: teacher CFG in the Cosmos form cond + g (cond - uncond) (Predict2.5's 2B recipe:
    3, = classic 4), baked into the student. timestep_shift: the shift of the critic/DMD noise
    level draw; sigma_min / sigma_max: the clamp of that draw (`sample_tau`). The student's own
    noise levels are the sampler node's (`FewStepSampler`), so training and generation cannot
    disagree.
    """

    guidance: float = 3.0
    student_update_freq: int = 5
    timestep_shift: float = 5.0
    sigma_min: float = 0.002
    sigma_max: float = 1e5
    loss_scale_dmd: float = 1.0
    loss_scale_critic: float = 1.0
    sigma_conditional: float = 1e-4
    min_num_conditional_frames: int = 1
    max_num_conditional_frames: int = 2

    def x0(self, net, x_sigma: Tensor, sigma: Tensor, cond: Condition) -> Tensor:
        """x0 prediction of any of the three nets (generation calls it with the student)."""
        return denoise(
            net, x_sigma, sigma, cond.gt, cond.mask, cond.text, cond.padding_mask,
            self.sigma_conditional,
        )  # fmt: skip

    def draw_conditional_frames(self, b: int, t: int, device) -> Tensor:
        lo, hi = self.min_num_conditional_frames, self.max_num_conditional_frames
        return sample_num_conditional_frames(b, lo, hi, device=device)

    def sample_tau(self, b: int, device) -> Tensor:
        """Critic/DMD noise levels [B,1] (float64, as upstream's draw): the shifted uniform RF
        time of spec §3.2 as sigma = tan t. The clamp to [sigma_min, sigma_max] keeps sigma
        finite and inside the levels the Predict2 teacher trained at (its high-sigma tail
        reaches 1e5, cosmos_predict2.md §4.1); with shift 5 it moves ~4e-4 of the draws up and
        ~5e-5 down (a cap at the sampler's 80 moved 6%, spread over t in (atan 80, pi/2))."""
        u = torch.rand(b, 1, device=device, dtype=torch.float64)
        s = shifted_rf_time(u, self.timestep_shift).clamp(max=1 - 1e-12)
        return sigma_of_rf(s).clamp(self.sigma_min, self.sigma_max)

    def initial_state(self, eps: Tensor, sigma: float) -> Tensor:
        return eps * sigma

    def renoise(self, x0: Tensor, eps: Tensor, sigma: float | Tensor) -> Tensor:
        return x0 + sigma * eps

    def trig_time(self, sigma: Tensor) -> Tensor:
        """TrigFlow time of a noise level: sigma = tan t (spec §1)."""
        return torch.atan(sigma)

    def critic_error(self, g: Tensor, x0_fake: Tensor, sigma: Tensor) -> Tensor:
        """The recipe's critic loss (spec §2.4, §3.4): the x0 error over sin^2 of the TrigFlow
        time. x_sigma is x_t / cos t with sigma = tan t, so 1 / sin^2 t = (1 + sigma^2) / sigma^2;
        not the teacher's own weight (1 + sigma)^2 / sigma^2 (RF velocity), up to 2x larger."""
        weight = (1.0 + sigma.double() ** 2) / sigma.double() ** 2
        return weight.float().view(g.shape[0], 1, 1, 1, 1) * (g - x0_fake) ** 2
