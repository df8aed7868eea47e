"""EDM with a learned uncertainty weight and video conditioning: the objective of Cosmos-Predict1
Video2World (docs/upstream/cosmos_predict1.md §3).

Coordinates are EDM's: x_sigma = x0 + sigma * eps on latents that are already scaled to the data
standard deviation the preconditioning assumes. Upstream multiplies the tokenizer's normalised
latent by sigma_data = 0.5 (§3.2); here that factor lives in the tokenizer block
(framework/models/cosmos1/latent_scale.py), so the objective, the sampler and the latent cache
all see the same latents, and a sampler's noise levels are upstream's (80 ... 0.0002).

Every random draw takes an optional `torch.Generator`; with None the global RNG is used (the
trainer seeds and restores it).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from framework.diffusion.conditioning import Condition, drop_text

# net(x, timesteps_B, crossattn_emb, fps=, padding_mask=, condition_video_input_mask_B_C_T_H_W=)
NetFn = Callable[..., Tensor]


def edm_scaling(sigma: Tensor, sigma_data: float = 0.5) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(c_skip, c_out, c_in, c_noise) of EDM preconditioning (§3.4)."""
    var = sigma**2 + sigma_data**2
    return sigma_data**2 / var, sigma * sigma_data / var.sqrt(), var.rsqrt(), 0.25 * sigma.log()


def loss_weight(sigma: Tensor, sigma_data: float = 0.5) -> Tensor:
    """lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma * sigma_data)^2 (§3.7); 4 + 1/sigma^2
    for sigma_data = 0.5 (Appendix A)."""
    return (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2


def sample_lognormal(
    batch_size: int,
    p_mean: float = 0.0,
    p_std: float = 1.0,
    multiplier: float = 1.0,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """[B] draws of multiplier * exp(N(p_mean, p_std^2)): the training noise level (§3.3) and the
    condition-augmentation level (§3.5 item 4)."""
    z = torch.randn(batch_size, generator=generator, device=device, dtype=torch.float32)
    return (z * p_std + p_mean).exp() * multiplier


class FourierFeatures(nn.Module):
    """[B] -> [B, C]: sqrt(2) cos(x * freqs + phases), computed in fp32 and returned in x's dtype
    (§3.1). freqs = 2 pi N(0, 1), phases = 2 pi U(0, 1), both persistent: official checkpoints
    carry them as `logvar.0.freqs` and `logvar.0.phases`."""

    def __init__(self, num_channels: int = 128) -> None:
        super().__init__()
        self.register_buffer("freqs", 2 * math.pi * torch.randn(num_channels))
        self.register_buffer("phases", 2 * math.pi * torch.rand(num_channels))

    def forward(self, x: Tensor) -> Tensor:
        angles = torch.outer(x.reshape(-1).float(), self.freqs.float()) + self.phases.float()
        return (angles.cos() * math.sqrt(2.0)).to(x.dtype)


def logvar_head(num_channels: int = 128) -> nn.Sequential:
    """The uncertainty head u(c_noise) of §3.1, a Sequential so its keys are the official
    `logvar.0.freqs`, `logvar.0.phases`, `logvar.1.weight`."""
    return nn.Sequential(FourierFeatures(num_channels), nn.Linear(num_channels, 1, bias=False))


def fixed_noise(shape: tuple[int, ...], seed: int, device: torch.device) -> Tensor:
    """numpy RandomState(seed) standard normal, identical on every device (upstream's
    `arch_invariant_rand`, used for the inference-time condition augmentation, §3.5 item 4)."""
    noise = np.random.RandomState(seed).standard_normal(shape)
    return torch.from_numpy(noise).to(device=device, dtype=torch.float32)


def denoise(
    net: NetFn,
    x_sigma: Tensor,
    sigma: Tensor,
    cond: Condition,
    indicator: Tensor,
    input_mask: Tensor,
    aug_sigma: Tensor,
    aug_noise: Tensor,
    video_cond: bool = True,
    sigma_data: float = 0.5,
) -> Tensor:
    """x0 prediction with upstream's video conditioning (§3.5 items 3-6), float32.

    sigma and aug_sigma are [B] or [B, 1]; indicator [B,1,T,1,1] marks the conditioned latent
    frames; input_mask [B,1,T,H,W] is the mask channel the net sees. The conditioned frames enter
    as the augmented latent gt + aug_sigma * aug_noise at the input scale of aug_sigma (zeros when
    `video_cond` is False) and leave as gt, so they carry no error.
    """
    b = x_sigma.shape[0]
    s = sigma.reshape(b, 1, 1, 1, 1).float()
    s_aug = aug_sigma.reshape(b, 1, 1, 1, 1).float()
    c_skip, c_out, c_in, c_noise = edm_scaling(s, sigma_data)
    gt = cond.gt.float()
    if video_cond:
        # Placed in x_sigma's coordinates so that the common c_in(sigma) turns it into
        # c_in(aug_sigma) * (gt + aug_sigma * n), as upstream composes it.
        _, _, c_in_aug, _ = edm_scaling(s_aug, sigma_data)
        cond_region = (gt + s_aug * aug_noise) * (c_in_aug / c_in)
    else:
        cond_region = torch.zeros_like(gt)  # zero_condition_region_condition_mask (§3.5 item 5)
    x_in = indicator * cond_region + (1.0 - indicator) * x_sigma.float()
    out = net(
        c_in * x_in,
        c_noise.reshape(b),
        cond.text,
        fps=cond.fps,
        padding_mask=cond.padding_mask,
        condition_video_input_mask_B_C_T_H_W=input_mask,
    ).float()
    x0_pred = c_skip * x_in + c_out * out
    return indicator * gt + (1.0 - indicator) * x0_pred


def frame_indicator(num_frames: Tensor, t: int) -> Tensor:
    """[B,1,T,1,1] float, 1 on the first num_frames[b] latent frames."""
    frames = torch.arange(t, device=num_frames.device)
    return (frames[None, :] < num_frames[:, None]).float()[:, None, :, None, None]


@dataclass
class EDMObjective:
    """Predict1's training loss and x0 prediction (§3.3-§3.7). Defaults are the upstream values
    of `video2world_instruction_bridge_57frames` (§1.4), here and nowhere else; experiments change
    fields of the config node.

    Conditioning in training: n ~ U{min..max} latent frames given, one draw per batch
    (`first_random_n`, §3.5 item 1); with probability `video_cond_dropout` per batch they are
    zeroed and the mask channel is off (item 2); the given frames are augmented with noise of
    level augment_multiplier * exp(N(augment_p_mean, augment_p_std^2)) per sample (item 4);
    captions are dropped per sample with `text_dropout` (§3.6). At sampling time the given frames
    carry fixed noise of level `inference_augment_sigma` from seed `inference_augment_seed`, and
    are generated with the rest once the sampler's sigma is at or below it (item 4).
    """

    sigma_data: float = 0.5
    p_mean: float = 0.0
    p_std: float = 1.0
    text_dropout: float = 0.2
    video_cond_dropout: float = 0.2
    min_num_conditional_frames: int = 0
    max_num_conditional_frames: int = 1
    augment_p_mean: float = 0.0
    augment_p_std: float = 1.0
    augment_multiplier: float = 4.0
    inference_augment_sigma: float = 0.001
    inference_augment_seed: int = 1
    loss_add_logvar: bool = True
    logvar_channels: int = 128
    _logvar: nn.Module = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not 0 <= self.min_num_conditional_frames <= self.max_num_conditional_frames:
            raise ValueError(
                f"conditional frame range [{self.min_num_conditional_frames}, "
                f"{self.max_num_conditional_frames}] is empty; set "
                "model.objective.min_num_conditional_frames <= max_num_conditional_frames."
            )
        self._logvar = logvar_head(self.logvar_channels)
        self._noise: tuple[tuple, Tensor] | None = None

    def extra_modules(self) -> dict[str, nn.Module]:
        # Upstream's ModuleDict name: checkpoints hold `logvar.*` beside `net.*` (§3.1, §4.4).
        return {"logvar": self._logvar}

    def logvar(self, sigma: Tensor) -> Tensor:
        """u(sigma) [B, 1] of the uncertainty head, from c_noise = 0.25 ln sigma."""
        c_noise = 0.25 * sigma.reshape(-1).float().log()
        return self._logvar(c_noise).float()

    # ---- sampling ------------------------------------------------------------------------

    def seed_generation(self, seed: int, batch: int) -> None:
        """Take the given frames' augmentation noise of the next generation from its seed, over
        the whole latent [batch,C,T,H,W], as upstream's sampling does
        (`_augment_noise_with_latent(..., seed=seed)` drawing `arch_invariant_rand(latent.shape,
        seed)`); WorldModel.generate calls this before sampling."""
        self._generation = (int(seed), int(batch))

    def _inference_noise(self, shape: tuple[int, ...], device: torch.device) -> Tensor:
        """The fixed augmentation noise for an x0 call on a batch of `shape` [N,C,T,H,W], the
        same at every step (upstream draws it per call with the same seed), cached. After
        `seed_generation(seed, B)`: RandomState(seed) over [B,C,T,H,W], the same for both halves
        of a guided batch (N = 2B; upstream feeds both the same input). Without it (an x0 call
        outside a generation): one sample's noise from `inference_augment_seed` for every row."""
        seed, batch = getattr(self, "_generation", None) or (self.inference_augment_seed, 0)
        key = (shape, str(device), seed, batch)
        if self._noise is None or self._noise[0] != key:
            if batch and shape[0] in (batch, 2 * batch):
                one = fixed_noise((batch, *shape[1:]), seed, device)
                noise = one if shape[0] == batch else torch.cat([one, one])
            else:
                noise = fixed_noise(shape[1:], seed, device).expand(shape)
            self._noise = (key, noise)
        return self._noise[1]

    def x0(self, net: NetFn, x_sigma: Tensor, sigma: Tensor, cond: Condition) -> Tensor:
        """x0 prediction [B,C,T,H,W] at noise level sigma [B,1] with `cond.num_frames` latent
        frames given (`first_n`, `noise_with_sigma_fixed`, §3.5 item 4, §3.8)."""
        b, _, t, h, w = x_sigma.shape
        sigma = sigma.reshape(b).float()
        given = frame_indicator(cond.num_frames, t)
        input_mask = given.expand(b, 1, t, h, w)
        aug = torch.full_like(sigma, self.inference_augment_sigma)
        # Once the sampler is at or below the augmentation level the given frames are generated
        # with the rest; the mask channel still marks them, as upstream leaves it (§3.5 item 4).
        indicator = given * (aug < sigma).float().view(b, 1, 1, 1, 1)
        noise = self._inference_noise(tuple(x_sigma.shape), x_sigma.device)
        return denoise(
            net, x_sigma, sigma, cond, indicator, input_mask, aug, noise, True, self.sigma_data
        )

    # ---- training ------------------------------------------------------------------------

    def loss(
        self,
        net: NetFn,
        x0: Tensor,
        cond: Condition,
        num_conditional_frames: int | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, dict[str, float]]:
        """(Kendall loss, metrics) for clean latents x0 [B,C,T,H,W] (§3.7). `cond.gt` is x0;
        the given frames are drawn here unless `num_conditional_frames` fixes them."""
        b, _, t, h, w = x0.shape
        x0 = x0.float()
        dev = x0.device
        kw = dict(generator=generator, device=dev)
        sigma = sample_lognormal(b, self.p_mean, self.p_std, **kw)
        eps = torch.randn(x0.shape, generator=generator, device=dev, dtype=torch.float32)
        # The per-batch draws (§3.5 items 1-2) on the generator's device, CPU by default: no
        # device sync for a Python bool.
        one = dict(generator=generator, device=generator.device if generator else "cpu")
        if num_conditional_frames is None:
            lo, hi = self.min_num_conditional_frames, self.max_num_conditional_frames
            n = int(torch.randint(lo, hi + 1, (1,), **one))
        else:
            n = int(num_conditional_frames)
        video_cond = bool(torch.rand(1, **one) >= self.video_cond_dropout)
        aug_sigma = sample_lognormal(
            b, self.augment_p_mean, self.augment_p_std, self.augment_multiplier, **kw
        )
        aug_noise = torch.randn(x0.shape, generator=generator, device=dev, dtype=torch.float32)
        text = drop_text(cond.text, self.text_dropout, generator)
        num = torch.full((b,), min(n, t), dtype=torch.long, device=dev)
        indicator = frame_indicator(num, t)
        input_mask = indicator.expand(b, 1, t, h, w) * float(video_cond)
        cond = Condition(x0, num, text, cond.padding_mask, cond.fps)
        x_sigma = x0 + sigma.view(b, 1, 1, 1, 1) * eps
        x0_pred = denoise(
            net,
            x_sigma,
            sigma,
            cond,
            indicator,
            input_mask,
            aug_sigma,
            aug_noise,
            video_cond,
            self.sigma_data,
        )
        pred_mse = (x0 - x0_pred) ** 2
        edm = loss_weight(sigma, self.sigma_data).view(b, 1, 1, 1, 1) * pred_mse
        metrics = {
            "edm_loss": float(edm.detach().mean()),
            "mse_loss": float(pred_mse.detach().mean()),
            "sigma_mean": float(sigma.mean()),
        }
        if not self.loss_add_logvar:
            return edm.mean(), metrics
        u = self.logvar(sigma).view(b, 1, 1, 1, 1)
        # Mean over all of B,C,T,H,W (loss_reduce "mean"); the zero-error given frames count in
        # the denominator, as upstream (§3.7).
        loss = (edm * torch.exp(-u) + u).mean()
        metrics["logvar"] = float(u.detach().mean())
        return loss, metrics
