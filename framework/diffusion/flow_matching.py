"""Flow matching as Cosmos-Predict2.5 trains it (docs/upstream/cosmos_predict2_5.md §3).

Coordinates are the flow's: x_s = s * eps + (1 - s) * x0 with s in [0, 1], and the net predicts the
velocity eps - x0 directly (no preconditioning). The net's timestep input is 1000 * s on upstream's
0..1000 scale (the 2.5 net multiplies it by 0.001). `x0` is the sampler's entry: it returns the data
prediction x_s - s * v, which is what the UniPC sampler (framework/diffusion/unipc.py) steps on, and
which makes classifier-free guidance on x0 equal to upstream's guidance on v (same x_s and s in both
branches, so the map v -> x0 is affine with the same coefficients).

Every random draw takes an optional `torch.Generator`; with None the global RNG is used (the trainer
seeds and restores it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from framework.diffusion.conditioning import Condition, drop_text

# net(x [B,C,T,H,W], timesteps [B,1] or [B,T] on 0..1000, text, condition mask, padding mask)
NetFn = Callable[..., Tensor]

# Upstream's FlowMatchEulerDiscreteScheduler table has this many entries (§3 item 2).
NUM_TRAIN_TIMESTEPS = 1000


def shift_sigma(s: Tensor | float, shift: float) -> Tensor | float:
    """The timestep shift shift * s / (1 + (shift - 1) * s): more weight on high noise."""
    return shift * s / (1.0 + (shift - 1.0) * s)


def sample_sigma(
    batch_size: int,
    shift: float = 5.0,
    *,
    num_train_timesteps: int = NUM_TRAIN_TIMESTEPS,
    high_sigma_ratio: float = 0.0,
    high_sigma_timesteps: tuple[float, float] = (980.0, 1000.0),
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Noise levels s [B,1] (float32): u = sigmoid(N(0,1)) picks entry floor(N u) of the shifted
    N-step table, s = shift(1 - floor(N u) / N) (§3 items 1-2). With probability
    `high_sigma_ratio` the entry is instead uniform among those whose timestep 1000 s lies in
    `high_sigma_timesteps` (upstream's high-sigma strategy, off in the 2B recipes)."""
    n = num_train_timesteps
    kw = dict(generator=generator, device=device)
    u = torch.sigmoid(torch.randn(batch_size, 1, dtype=torch.float32, **kw))
    index = (u * n).long().clamp_(0, n - 1)
    if high_sigma_ratio > 0:
        tau = 1.0 - torch.arange(n, dtype=torch.float64) / n
        t_table = shift_sigma(tau, shift) * n
        lo, hi = high_sigma_timesteps
        candidates = torch.nonzero((t_table >= lo) & (t_table <= hi)).flatten()
        if candidates.numel() == 0:
            raise ValueError(
                f"no timestep of the shift-{shift} table lies in {high_sigma_timesteps}; widen "
                "model.objective.high_sigma_timesteps or set high_sigma_ratio=0."
            )
        pick = torch.randint(0, candidates.numel(), (batch_size, 1), **kw)
        high = candidates.to(index.device)[pick]
        use_high = torch.rand(batch_size, 1, **kw) < high_sigma_ratio
        index = torch.where(use_high, high, index)
    tau = 1.0 - index.double() / n
    return shift_sigma(tau, shift).float()


def sample_num_frames(
    batch_size: int,
    probs: Sequence[float],
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Per-sample count of given latent frames (int64 [B]); probs[k] is the weight of k frames
    (upstream's `conditional_frames_probs` {k: p}, §3 item 4)."""
    weights = torch.as_tensor(list(probs), dtype=torch.float64)
    if weights.ndim != 1 or len(weights) == 0 or (weights < 0).any() or weights.sum() <= 0:
        raise ValueError(
            f"conditional_frames_probs={list(probs)} is not a list of non-negative weights with a "
            "positive sum; set model.objective.conditional_frames_probs to e.g. [0.5, 0.25, 0.25]."
        )
    gen_device = generator.device if generator is not None else "cpu"
    n = torch.multinomial(weights.to(gen_device), batch_size, replacement=True, generator=generator)
    return n.to(device)


@dataclass
class FlowMatchingObjective:
    """The Predict2.5 training loss and data prediction (docs/upstream/cosmos_predict2_5.md §3).
    Defaults are the upstream values of the 2B pre-training experiment that the GR00T recipe
    inherits, here and nowhere else: experiments change fields of the config node.

    - `shift`: timestep shift of the training table (and nothing else; the sampler has its own).
    - `conditional_frames_probs`: weight of 0, 1, 2, ... given latent frames per sample.
    - `conditional_frame_timestep`: the net timestep of given frames on the 0..1000 scale; negative
      means the sample's own timestep (all 2.5 training configs; 0.1 in the post-trained 2B's
      inference config).
    - `inference_timestep_floor`: at sampling time the net sees floor(1000 s), as upstream's
      sampler passes int64 timesteps (§4 item 3); training always uses the float value.
    """

    shift: float = 5.0
    conditional_frames_probs: tuple[float, ...] = (0.5, 0.25, 0.25)
    conditional_frame_timestep: float = -1.0
    text_dropout: float = 0.2
    high_sigma_ratio: float = 0.0
    high_sigma_timesteps: tuple[float, float] = (980.0, 1000.0)
    inference_timestep_floor: bool = True

    def extra_modules(self) -> dict[str, nn.Module]:
        return {}  # all trainable state is in the net

    def velocity(
        self, net: NetFn, x_s: Tensor, sigma: Tensor, cond: Condition, floor: bool = False
    ) -> Tensor:
        """The net's velocity [B,C,T,H,W] (float32) at noise level sigma [B,1], with the first
        `cond.num_frames` latent frames given: they enter as the clean latent with the mask
        channel on (`frame_replace`, §3 item 4)."""
        b, _, t = x_s.shape[:3]
        mask = cond.mask
        net_in = cond.gt * mask + x_s * (1.0 - mask)
        timesteps = sigma.reshape(b, 1).float() * NUM_TRAIN_TIMESTEPS
        if floor:
            timesteps = timesteps.floor()
        if self.conditional_frame_timestep >= 0:
            given = mask[:, 0, :, 0, 0]  # [B,T]
            timesteps = given * self.conditional_frame_timestep + (1.0 - given) * timesteps
        return net(
            net_in.to(x_s.dtype),
            timesteps,
            cond.text,
            condition_video_input_mask_B_C_T_H_W=mask,
            padding_mask=cond.padding_mask,
        ).float()

    def x0(self, net: NetFn, x_s: Tensor, sigma: Tensor, cond: Condition) -> Tensor:
        """Data prediction x_s - s * v [B,C,T,H,W] at noise level sigma [B,1]; given frames are
        returned as the clean latent. (Upstream replaces their velocity by initial noise - x0, so
        its x0 there is off by (1 - s_0) (noise - x0) = 2e-4 (noise - x0) at the first step; we
        return the given latent exactly.)"""
        b = x_s.shape[0]
        v = self.velocity(net, x_s, sigma, cond, floor=self.inference_timestep_floor)
        x0 = x_s.float() - sigma.reshape(b, 1, 1, 1, 1).float() * v
        mask = cond.mask
        return cond.gt.float() * mask + x0 * (1.0 - mask)

    def loss(
        self,
        net: NetFn,
        x0: Tensor,
        cond: Condition,
        num_conditional_frames: int | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, dict[str, float]]:
        """(Uniform velocity MSE, metrics) for clean latents x0 [B,C,T,H,W] (§3 items 3-6).
        `cond.gt` is x0; the given frames are drawn here unless `num_conditional_frames` fixes
        them; image batches (T == 1) have none."""
        b, _, t = x0.shape[:3]
        x0 = x0.float()
        dev = x0.device
        sigma = sample_sigma(
            b,
            self.shift,
            high_sigma_ratio=self.high_sigma_ratio,
            high_sigma_timesteps=tuple(self.high_sigma_timesteps),
            generator=generator,
            device=dev,
        )
        eps = torch.randn(x0.shape, generator=generator, device=dev, dtype=torch.float32)
        if t == 1:
            n = torch.zeros(b, dtype=torch.long, device=dev)
        elif num_conditional_frames is not None:
            n = torch.full((b,), int(num_conditional_frames), dtype=torch.long, device=dev)
        else:
            n = sample_num_frames(b, self.conditional_frames_probs, generator=generator, device=dev)
        n = n.clamp(max=t)
        text = drop_text(cond.text, self.text_dropout, generator)
        cond = Condition(x0, n, text, cond.padding_mask, cond.fps)
        s = sigma.view(b, 1, 1, 1, 1)
        x_s = s * eps + (1.0 - s) * x0
        target = eps - x0
        v_pred = self.velocity(net, x_s, sigma, cond)
        # Given frames carry the exact target (`denoise_replace_gt_frames`): zeros in the
        # numerator, still counted in the mean's denominator (§3 item 5).
        mask = cond.mask
        v_pred = target * mask + v_pred * (1.0 - mask)
        loss = ((v_pred - target) ** 2).mean()
        metrics = {
            "flow_loss": float(loss.detach()),
            "sigma_mean": float(sigma.mean()),
            "given_frames_mean": float(n.float().mean()),
        }
        return loss, metrics
