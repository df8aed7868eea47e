"""Rectified flow in EDM coordinates, the objective of Cosmos-Predict2 (upstream/cosmos_predict2.md
§4.1): noise levels, RF preconditioning, frame-replace conditioning and the weighted x0 loss.

Coordinates are EDM's (x_sigma = x0 + sigma * eps) while the net is a rectified-flow velocity
model; `rf_scaling` converts between the two. Every random draw takes an optional
`torch.Generator`; with None the global RNG is used (the trainer seeds and restores it).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from framework.diffusion.conditioning import Condition, drop_text

# A net call: (x [B,C,T,H,W], timesteps [B,T], crossattn_emb, condition mask, padding mask) -> F.
NetFn = Callable[..., Tensor]


def rf_scaling(sigma: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(c_skip, c_out, c_in, c_noise) for sigma_data = 1 (upstream/cosmos_predict2.md §4.1 step
    4)."""
    t = sigma / (1.0 + sigma)
    return 1.0 - t, -t, 1.0 - t, t


def loss_weight(sigma: Tensor) -> Tensor:
    """(1 + sigma)^2 / sigma^2 = 1 / t^2: turns x0-MSE into velocity MSE
    (upstream/cosmos_predict2.md §4.1 step 5)."""
    return (1.0 + sigma) ** 2 / sigma**2


def video_noise_multiplier(latent_frames: int, adjust_video_noise: bool = True) -> float:
    """sqrt(latent frames) (4.899 for 24, upstream's state_t) when enabled, else 1."""
    return math.sqrt(latent_frames) if adjust_video_noise else 1.0


def sample_sigma(
    batch_size: int,
    *,
    multiplier: float = 1.0,
    high_sigma_ratio: float = 0.05,
    high_sigma_range: tuple[float, float] = (200.0, 1e5),
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Noise levels [B,1]: exp(N(0,1)) * multiplier, with probability `high_sigma_ratio` replaced by
    a log-uniform draw on `high_sigma_range` (upstream/cosmos_predict2.md §4.1 step 2)."""
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
    """x0 prediction with frame replacement (upstream/cosmos_predict2.md §4.1 step 7).

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
class RectifiedFlowObjective:
    """The Predict2 training loss and x0 prediction (upstream/cosmos_predict2.md §4.1). Defaults are
    the upstream values, here and nowhere else: experiments change fields of the config node."""

    high_sigma_ratio: float = 0.05
    loss_scale: float = 10.0
    sigma_conditional: float = 1e-4
    min_num_conditional_frames: int = 1
    max_num_conditional_frames: int = 2
    text_dropout: float = 0.2
    adjust_video_noise: bool = True

    def extra_modules(self) -> dict[str, nn.Module]:
        return {}  # all trainable state is in the net

    def x0(self, net: NetFn, x_sigma: Tensor, sigma: Tensor, cond: Condition) -> Tensor:
        """x0 prediction [B,C,T,H,W] at noise level sigma [B,1], conditioned frames replaced."""
        return denoise(
            net,
            x_sigma,
            sigma,
            cond.gt,
            cond.mask,
            cond.text,
            cond.padding_mask,
            self.sigma_conditional,
        )

    def loss(
        self,
        net: NetFn,
        x0: Tensor,
        cond: Condition,
        num_conditional_frames: int | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, dict[str, float]]:
        """Return (loss * loss_scale, metrics) for clean latents x0 [B,C,T,H,W]; `cond.gt` is x0
        and `cond.num_frames` is drawn here (or fixed by `num_conditional_frames`)."""
        b, t = x0.shape[0], x0.shape[2]
        x0 = x0.float()
        dev = x0.device
        # Image batches (T == 1): no multiplier, no high-sigma tail, no conditional frames.
        is_video = t > 1
        mult = video_noise_multiplier(t, self.adjust_video_noise) if is_video else 1.0
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
        text = drop_text(cond.text, self.text_dropout, generator)
        cond = Condition(x0, n, text, cond.padding_mask, cond.fps)
        x_sigma = x0 + sigma.view(b, 1, 1, 1, 1) * eps
        x0_pred = self.x0(net, x_sigma, sigma, cond)
        sq_err = (x0 - x0_pred) ** 2
        # Mean over all of B,C,T,H,W: masked frames add zeros to the numerator but count in the
        # denominator, as upstream does (upstream/cosmos_predict2.md §4.1 step 7).
        edm_loss = (loss_weight(sigma).view(b, 1, 1, 1, 1) * sq_err).mean()
        metrics = {
            "edm_loss": float(edm_loss.detach()),
            "mse_loss": float(sq_err.detach().mean()),
            "sigma_mean": float(sigma.mean()),
        }
        return edm_loss * self.loss_scale, metrics
