"""Samplers: config nodes (`model.sampler`) that turn an x0 predictor into a sample.

`MultistepSampler` is Predict2's (upstream/cosmos_predict2.md §4.3) and Predict1's training-side one
(RES "2ab"): Karras sigmas, an Euler first step, then a 2nd-order multistep exponential integrator
in lambda = -log(sigma) (DPM-Solver++(2M)-like), a last denoise at sigma_min."""

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


@dataclass
class MultistepSampler:
    """`sample` as a config node; `num_steps` may be overridden per call."""

    num_steps: int = 35
    sigma_max: float = 80.0
    sigma_min: float = 0.002
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
