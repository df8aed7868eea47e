"""Video2World training objective: noise levels, RF-in-EDM preconditioning, frame-replace
conditioning and the weighted x0 loss (spec §4.1).

Coordinates are EDM's (x_sigma = x0 + sigma * eps) while the net is a rectified-flow velocity
model; `rf_scaling` converts between the two. Every random draw takes an optional
`torch.Generator`; with None the global RNG is used (the trainer seeds and restores it).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

# A net call: (x [B,C,T,H,W], timesteps [B,T], crossattn_emb, condition mask, padding mask) -> F.
NetFn = Callable[..., Tensor]


def rf_scaling(sigma: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(c_skip, c_out, c_in, c_noise) for sigma_data = 1 (spec §4.1 step 4)."""
    t = sigma / (1.0 + sigma)
    return 1.0 - t, -t, 1.0 - t, t


def loss_weight(sigma: Tensor) -> Tensor:
    """(1 + sigma)^2 / sigma^2 = 1 / t^2: turns x0-MSE into velocity MSE (spec §4.1 step 5)."""
    return (1.0 + sigma) ** 2 / sigma**2


def video_noise_multiplier(state_t: int, adjust_video_noise: bool = True) -> float:
    """sqrt(state_t) (4.899 for 24 latent frames) when enabled, else 1."""
    return math.sqrt(state_t) if adjust_video_noise else 1.0


def sample_sigma(
    batch_size: int,
    *,
    multiplier: float = 1.0,
    high_sigma_ratio: float = 0.05,
    high_sigma_range: tuple[float, float] = (200.0, 1e5),
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Noise levels [B,1]: exp(N(0,1)) * multiplier, with probability `high_sigma_ratio`
    replaced by a log-uniform draw on `high_sigma_range` (spec §4.1 step 2)."""
    kw = dict(generator=generator, device=device, dtype=torch.float32)
    sigma = torch.randn(batch_size, 1, **kw).exp() * multiplier
    lo, hi = math.log(high_sigma_range[0]), math.log(high_sigma_range[1])
    high = (torch.rand(batch_size, 1, **kw) * (hi - lo) + lo).exp()
    use_high = torch.rand(batch_size, 1, **kw) < high_sigma_ratio
    return torch.where(use_high, high, sigma)


def sample_num_conditional_frames(
    batch_size: int,
    min_frames: int,
    max_frames: int,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Per-sample count of clean leading latent frames, uniform on {min..max} (int64 [B])."""
    if not 0 <= min_frames <= max_frames:
        raise ValueError(
            f"Conditional frame range [{min_frames}, {max_frames}] is empty; "
            "set min_num_conditional_frames <= max_num_conditional_frames."
        )
    return torch.randint(
        min_frames, max_frames + 1, (batch_size,), generator=generator, device=device
    )


def condition_mask(num_frames: Tensor, shape: torch.Size | tuple[int, ...]) -> Tensor:
    """Float mask [B,1,T,H,W] that is 1 on the first `num_frames[b]` latent frames."""
    b, _, t, h, w = shape
    frame = torch.arange(t, device=num_frames.device)
    mask = (frame[None, :] < num_frames[:, None]).float()  # [B,T]
    return mask[:, None, :, None, None].expand(b, 1, t, h, w)


def drop_text(emb: Tensor, rate: float, generator: torch.Generator | None = None) -> Tensor:
    """Zero each sample's whole embedding with probability `rate` (spec §4.1 step 8)."""
    if rate <= 0:
        return emb
    keep = torch.rand(emb.shape[0], generator=generator, device=emb.device) >= rate
    return emb * keep.view(-1, *([1] * (emb.dim() - 1))).to(emb.dtype)


def denoise(
    net: NetFn,
    x_sigma: Tensor,
    sigma: Tensor,
    gt: Tensor,
    mask: Tensor,
    crossattn_emb: Tensor,
    padding_mask: Tensor | None = None,
    sigma_conditional: float = 1e-4,
) -> Tensor:
    """x0 prediction with frame replacement (spec §4.1 step 7).

    sigma is [B,1] (one level per sample). Masked frames enter the net as the clean latent with
    timestep c_noise(sigma_conditional) and leave as gt, so they carry no loss and are never guided.
    """
    b = x_sigma.shape[0]
    s = sigma.reshape(b, 1, 1, 1, 1).to(torch.float32)
    c_skip, c_out, c_in, c_noise = rf_scaling(s)
    frame_mask = mask[:, :1, :, :1, :1]  # [B,1,T,1,1]; the mask is constant over space
    net_in = gt * mask + (c_in * x_sigma) * (1.0 - mask)
    _, _, _, c_noise_cond = rf_scaling(torch.tensor(sigma_conditional, dtype=torch.float64))
    timesteps = c_noise_cond.item() * frame_mask + c_noise * (1.0 - frame_mask)
    velocity = net(
        net_in,
        timesteps.reshape(b, -1),
        crossattn_emb,
        condition_video_input_mask_B_C_T_H_W=mask,
        padding_mask=padding_mask,
    ).float()
    x0_pred = c_skip * x_sigma + c_out * velocity
    return gt * mask + x0_pred * (1.0 - mask)


@dataclass
class Video2WorldObjective:
    """The training loss of Video2World (spec §4.1); defaults are the upstream values."""

    state_t: int = 24
    high_sigma_ratio: float = 0.05
    loss_scale: float = 10.0
    sigma_conditional: float = 1e-4
    min_num_conditional_frames: int = 1
    max_num_conditional_frames: int = 2
    text_dropout: float = 0.2
    adjust_video_noise: bool = True

    def __call__(
        self,
        net: NetFn,
        x0: Tensor,
        crossattn_emb: Tensor,
        padding_mask: Tensor | None = None,
        num_conditional_frames: int | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, dict[str, float]]:
        """Return (loss * loss_scale, metrics) for clean latents x0 [B,C,T,H,W]."""
        b, t = x0.shape[0], x0.shape[2]
        x0 = x0.float()
        dev = x0.device
        # Image batches (T == 1): no multiplier, no high-sigma tail, no conditional frames.
        is_video = t > 1
        mult = video_noise_multiplier(self.state_t, self.adjust_video_noise) if is_video else 1.0
        ratio = self.high_sigma_ratio if is_video else 0.0
        sigma = sample_sigma(
            b, multiplier=mult, high_sigma_ratio=ratio, generator=generator, device=dev
        )
        eps = torch.randn(x0.shape, generator=generator, device=dev, dtype=torch.float32)
        if not is_video:
            n = torch.zeros(b, dtype=torch.long, device=dev)
        elif num_conditional_frames is not None:
            n = torch.full((b,), int(num_conditional_frames), dtype=torch.long, device=dev)
        else:
            n = sample_num_conditional_frames(
                b,
                self.min_num_conditional_frames,
                self.max_num_conditional_frames,
                generator=generator,
                device=dev,
            )
        mask = condition_mask(n, x0.shape)
        emb = drop_text(crossattn_emb, self.text_dropout, generator)
        x_sigma = x0 + sigma.view(b, 1, 1, 1, 1) * eps
        x0_pred = denoise(net, x_sigma, sigma, x0, mask, emb, padding_mask, self.sigma_conditional)
        sq_err = (x0 - x0_pred) ** 2
        # Mean over all of B,C,T,H,W: masked frames add zeros to the numerator but count in the
        # denominator, as upstream does (spec §4.1 step 7).
        edm_loss = (loss_weight(sigma).view(b, 1, 1, 1, 1) * sq_err).mean()
        metrics = {
            "edm_loss": float(edm_loss.detach()),
            "mse_loss": float(sq_err.detach().mean()),
            "sigma_mean": float(sigma.mean()),
        }
        return edm_loss * self.loss_scale, metrics
