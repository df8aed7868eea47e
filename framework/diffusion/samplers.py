"""Samplers: config nodes (`model.sampler`) that turn an x0 predictor into a sample.

`MultistepSampler` is Predict2's (upstream/cosmos_predict2.md §4.3) and Predict1's training-side one
(RES "2ab"): Karras sigmas, an Euler first step, then a 2nd-order multistep exponential integrator
in lambda = -log(sigma) (DPM-Solver++(2M)-like), a last denoise at sigma_min.
`EulerEDMSampler` is Predict1's inference pipeline (docs/upstream/cosmos_predict1.md §3.8): Karras
sigmas down to 0.0002, first-order Euler, a last step to sigma 0.

Every sampler node also carries the generation commands' defaults (`GenerationDefaults`), so a
recipe sets them where it sets its sampler."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

# x0_fn(x [B,...] float32, sigma: float) -> x0 estimate, same shape.
X0Fn = Callable[[Tensor, float], Tensor]


def karras_sigmas(
    num_steps: int = 35, sigma_max: float = 80.0, sigma_min: float = 0.002, rho: float = 7.0
) -> Tensor:
    """num_steps + 1 float64 noise levels from sigma_max down to sigma_min."""
    if num_steps < 1:
        raise ValueError(f"num_steps must be at least 1, got {num_steps}.")
    ramp = torch.linspace(0, 1, num_steps + 1, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return (hi + ramp * (lo - hi)) ** rho


def initial_noise(
    shape: Sequence[int], seed: int, sigma_max: float = 80.0, device: torch.device | str = "cpu"
) -> Tensor:
    """numpy RandomState(seed) normal noise * sigma_max: identical on every device
    (upstream/cosmos_predict2.md §4.3)."""
    noise = np.random.RandomState(seed).standard_normal(tuple(shape))
    return torch.from_numpy(noise).to(device=device, dtype=torch.float64) * sigma_max


def multistep_coefficients(
    sigma_prev: float, sigma_cur: float, sigma_next: float
) -> tuple[float, float, float]:
    """(decay, w_cur, w_prev) with x_next = decay * x + w_cur * x0_cur + w_prev * x0_prev."""
    lam_prev, lam_cur, lam_next = (-math.log(s) for s in (sigma_prev, sigma_cur, sigma_next))
    h = lam_next - lam_cur
    r = (lam_prev - lam_cur) / h
    phi1 = math.expm1(-h) / -h
    phi2 = (phi1 - 1.0) / -h
    b2 = phi2 / r
    b1 = phi1 - b2
    return math.exp(-h), h * b1, h * b2


def sample(
    x0_fn: X0Fn,
    shape: Sequence[int],
    num_steps: int = 35,
    seed: int = 0,
    *,
    sigma_max: float = 80.0,
    sigma_min: float = 0.002,
    rho: float = 7.0,
    device: torch.device | str = "cpu",
    noise: Tensor | None = None,
) -> Tensor:
    """Run the sampler from pure noise and return the final x0 (float32).

    The state is kept in float64 as upstream; x0_fn sees float32 inputs.
    """
    sigmas = karras_sigmas(num_steps, sigma_max, sigma_min, rho).tolist()
    if noise is None:
        x = initial_noise(shape, seed, sigma_max, device)
    else:
        x = noise.to(device=device, dtype=torch.float64)
    x0_prev = None
    for i in range(num_steps):
        s_cur, s_next = sigmas[i], sigmas[i + 1]
        x0 = x0_fn(x.float(), s_cur).double()
        if x0_prev is None:
            # Euler in x0 form: x_next = (s - t)/s * x0 + t/s * x.
            x = (s_cur - s_next) / s_cur * x0 + s_next / s_cur * x
        else:
            decay, w_cur, w_prev = multistep_coefficients(sigmas[i - 1], s_cur, s_next)
            x = decay * x + w_cur * x0 + w_prev * x0_prev
        x0_prev = x0
    return x0_fn(x.float(), sigmas[-1]).float()


@dataclass(kw_only=True)  # keyword-only: a sampler's own fields keep their positions
class GenerationDefaults:
    """The defaults that video2world, its batch JSON and best-of-N take from the model's sampler
    node for the options not given on the command line (framework/inference/settings.py); the
    sampler itself reads neither. `guidance`: None leaves the commands' rule (7, upstream's,
    or 0 for a model trained without caption dropout); a recipe whose upstream generates
    differently sets it (the action recipes: 0). `negative_prompt`: None leaves the commands'
    own list (framework/inference/prompts.py); "" is the all-zero no-text embedding. The steps
    are the sampler's own `num_steps`."""

    guidance: float | None = None
    negative_prompt: str | None = None


@dataclass
class MultistepSampler(GenerationDefaults):
    """`sample` as a config node; `num_steps` may be overridden per call. `cache_threshold`:
    the First-Block-Cache threshold that generation uses with `--step_cache`
    (framework/diffusion/step_cache.py); the sampler itself does not read it."""

    num_steps: int = 35
    sigma_max: float = 80.0
    sigma_min: float = 0.002
    rho: float = 7.0
    cache_threshold: float = 0.05

    def __call__(
        self,
        x0_fn: X0Fn,
        shape: Sequence[int],
        seed: int = 0,
        *,
        num_steps: int | None = None,
        device: torch.device | str = "cpu",
    ) -> Tensor:
        return sample(
            x0_fn,
            shape,
            num_steps or self.num_steps,
            seed,
            sigma_max=self.sigma_max,
            sigma_min=self.sigma_min,
            rho=self.rho,
            device=device,
        )


def edm_euler_sigmas(
    num_steps: int = 35, sigma_max: float = 80.0, sigma_min: float = 0.0002, rho: float = 7.0
) -> Tensor:
    """num_steps + 1 float64 noise levels: num_steps Karras points from sigma_max to sigma_min,
    then 0 (diffusers' EDMEulerScheduler with final_sigmas_type "zero")."""
    if num_steps < 1:
        raise ValueError(f"num_steps must be at least 1, got {num_steps}.")
    if num_steps == 1:
        points = torch.tensor([sigma_max], dtype=torch.float64)
    else:
        points = karras_sigmas(num_steps - 1, sigma_max, sigma_min, rho)
    return torch.cat([points, torch.zeros(1, dtype=torch.float64)])


def euler_edm_sample(
    x0_fn: X0Fn,
    shape: Sequence[int],
    num_steps: int = 35,
    seed: int = 0,
    *,
    sigma_max: float = 80.0,
    sigma_min: float = 0.0002,
    rho: float = 7.0,
    device: torch.device | str = "cpu",
    noise: Tensor | None = None,
) -> Tensor:
    """First-order Euler on the EDM probability-flow ODE, dx/dsigma = (x - x0) / sigma, over
    `edm_euler_sigmas`; the last step lands on sigma = 0, i.e. on the last x0 estimate.

    Initial noise: numpy RandomState(seed) normal * sqrt(sigma_max^2 + 1), diffusers'
    `init_noise_sigma` (upstream draws torch.randn with that scale). State in float64; x0_fn sees
    float32 inputs. The returned latent is float32.
    """
    sigmas = edm_euler_sigmas(num_steps, sigma_max, sigma_min, rho).tolist()
    if noise is None:
        x = initial_noise(shape, seed, math.sqrt(sigma_max**2 + 1.0), device)
    else:
        x = noise.to(device=device, dtype=torch.float64)
    for s_cur, s_next in zip(sigmas[:-1], sigmas[1:]):
        x0 = x0_fn(x.float(), s_cur).double()
        # x + (x - x0) / s * (s_next - s), written so that s_next = 0 gives x0 exactly.
        x = x0 + (s_next / s_cur) * (x - x0)
    return x.float()


@dataclass
class EulerEDMSampler(GenerationDefaults):
    """Cosmos-Predict1's inference sampler (docs/upstream/cosmos_predict1.md §3.8): diffusers'
    `EDMEulerScheduler(sigma_max=80, sigma_min=0.0002, sigma_data=0.5)`, Karras rho 7, 35 steps,
    first-order Euler, final sigma 0. `num_steps` may be overridden per call.

    sigma_min 0.0002 is the value upstream's inference uses, and it is used: cosmos-predict1's
    `diffusion/model/model_t2w.py` (L62 at 4ed35fa, the base of `model_v2w.py`) builds the
    scheduler with it, and `set_timesteps` draws the Karras grid from `config.sigma_min`
    (diffusers 0.32.2, upstream's pin, and today's). diffusers' converter sets 0.002 with
    final_sigmas_type "sigma_min" because the Cosmos 1.0 repository (NVIDIA/Cosmos,
    `cosmos1/models/diffusion/model/model_t2w.py`) declared EDMSDE(sigma_min=0.0002) but sampled
    with its RES sampler at that sampler's default 0.002; that is the training-side sampler here,
    `MultistepSampler` (docs/upstream/cosmos_predict1.md, Addendum: diffusers).
    """

    num_steps: int = 35
    sigma_max: float = 80.0
    sigma_min: float = 0.0002
    rho: float = 7.0

    def __call__(
        self,
        x0_fn: X0Fn,
        shape: Sequence[int],
        seed: int = 0,
        *,
        num_steps: int | None = None,
        device: torch.device | str = "cpu",
    ) -> Tensor:
        return euler_edm_sample(
            x0_fn,
            shape,
            num_steps or self.num_steps,
            seed,
            sigma_max=self.sigma_max,
            sigma_min=self.sigma_min,
            rho=self.rho,
            device=device,
        )
