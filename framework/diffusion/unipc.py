"""UniPC on the flow path, as Cosmos-Predict2.5's inference runs it
(docs/upstream/cosmos_predict2_5.md §4): upstream's `FlowUniPCMultistepScheduler` with its defaults
(order 2, data prediction, bh2, lower order on the last step, final sigma 0) driven by
`generate_samples_from_batch`.

The path is x_s = (1 - s) x0 + s eps, so alpha = 1 - s, sigma = s and lambda = log(alpha / sigma).
The sampler only needs x0 predictions: `x0_fn(x, s)` returns x - s v for the net's velocity v (the
objective in framework/diffusion/flow_matching.py does that). The whole batch is stepped, unlike
upstream's loop, which steps sample 0 only (§8 item 1). Scalar coefficients are computed in
float64; the state is float32 as upstream's.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from framework.diffusion.samplers import GenerationDefaults, initial_noise

# x0_fn(x [B,...] float32, s: float) -> x0 estimate, same shape.
X0Fn = Callable[[Tensor, float], Tensor]

# Upstream's training table ends at float32(0.999) (§4 item 1).
FLOW_SIGMA_MAX = float(np.float32(0.999))


def flow_sigmas(
    num_steps: int = 35,
    shift: float = 5.0,
    karras: bool = False,
    karras_sigma_max: float = 200.0,
    karras_sigma_min: float = 0.01,
    rho: float = 7.0,
) -> list[float]:
    """The noise levels of one generation, float32 values, ending in 0 (§4 item 2).

    Shifted grid: num_steps points linspace(0.999, 0, num_steps + 1)[:-1], each shifted.
    Karras grid (the 2B post-trained config): num_steps + 1 EDM sigmas from karras_sigma_max to
    karras_sigma_min, each mapped to s / (1 + s), no shift. Then a final 0.
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be at least 1, got {num_steps}.")
    if karras:
        ramp = np.arange(num_steps + 1) / num_steps
        lo, hi = karras_sigma_min ** (1 / rho), karras_sigma_max ** (1 / rho)
        edm = (hi + ramp * (lo - hi)) ** rho
        s = edm / (1 + edm)
    else:
        s = np.linspace(FLOW_SIGMA_MAX, 0.0, num_steps + 1)[:-1]
        s = shift * s / (1 + (shift - 1) * s)
    return np.concatenate([s, [0.0]]).astype(np.float32).astype(np.float64).tolist()


def _lam(s: float) -> float:
    return math.log(1.0 - s) - math.log(s)


def _rhos(rks: list[float], hh: float, order: int, predictor: bool) -> tuple[np.ndarray, float]:
    """UniPC's B(h) = e^hh - 1 ("bh2") and the weights of the divided differences: the solution
    of R rho = b with R_ij = r_j^i and b_i = i! phi_{i+1}(hh) / B(h). The predictor solves the
    system without its last row and column; the two order-1/2 special cases use rho = 0.5, as
    upstream does."""
    b_h = math.expm1(hh)
    h_phi_k = math.expm1(hh) / hh - 1.0
    factorial, b = 1, []
    for i in range(1, order + 1):
        b.append(h_phi_k * factorial / b_h)
        factorial *= i + 1
        h_phi_k = h_phi_k / hh - 1.0 / factorial
    r = np.array(rks + [1.0])
    big_r = np.stack([r ** (i - 1) for i in range(1, order + 1)])
    if predictor and order == 1:
        rho = np.zeros(0)  # no earlier predictions to difference
    elif predictor:
        rho = np.array([0.5]) if order == 2 else np.linalg.solve(big_r[:-1, :-1], b[:-1])
    else:
        rho = np.array([0.5]) if order == 1 else np.linalg.solve(big_r, np.array(b))
    return rho, b_h


def _update(
    x: Tensor, x0s: list[Tensor], sigmas: list[float], i: int, order: int, corrector: Tensor | None
) -> Tensor:
    """From x at sigmas[i] to sigmas[i + 1] with the data predictions x0s (x0s[-1] at sigmas[i],
    x0s[-1 - k] at sigmas[i - k]). With `corrector` (the x0 prediction at sigmas[i + 1]) this is
    UniC, else UniP."""
    s0, s1 = sigmas[i], sigmas[i + 1]
    m0 = x0s[-1]
    if s1 == 0.0:
        return m0  # alpha = 1, sigma = 0: the exponential integrator lands on the prediction
    lam0, lam1 = _lam(s0), _lam(s1)
    h = lam1 - lam0
    rks = [(_lam(sigmas[i - k]) - lam0) / h for k in range(1, order)]
    diffs = [(x0s[-1 - k] - m0) / r for k, r in zip(range(1, order), rks)]
    hh = -h
    rho, b_h = _rhos(rks, hh, order, predictor=corrector is None)
    alpha1 = 1.0 - s1
    out = (s1 / s0) * x - alpha1 * math.expm1(hh) * m0
    res = sum((float(w) * d for w, d in zip(rho, diffs)), torch.zeros_like(x))
    if corrector is not None:
        res = res + float(rho[-1]) * (corrector - m0)
    return (out - alpha1 * b_h * res).to(x.dtype)


def unipc_sample(
    x0_fn: X0Fn,
    sigmas: Sequence[float],
    noise: Tensor,
    order: int = 2,
) -> Tensor:
    """Run UniPC from `noise` (the state at sigmas[0]) down the grid `sigmas` (ending in 0) and
    return the final sample, float32.

    Step i: evaluate x0 at sigmas[i]; from step 1 on, correct the state with UniC of the previous
    predictor's order; then predict to sigmas[i + 1] with UniP of order min(order, steps left,
    steps done + 1).
    """
    steps = len(sigmas) - 1
    x = noise.float()
    x0s: list[Tensor] = []
    last_x, last_order = None, 0
    for i in range(steps):
        x0 = x0_fn(x, sigmas[i]).float()
        if last_x is not None:
            x = _update(last_x, x0s, sigmas, i - 1, last_order, corrector=x0)
        x0s = (x0s + [x0])[-order:]
        this_order = min(order, steps - i, len(x0s))
        last_x, last_order = x, this_order
        x = _update(x, x0s, sigmas, i, this_order, corrector=None)
    return x


@dataclass
class UniPCSampler(GenerationDefaults):
    """Predict2.5's sampler as a config node (docs/upstream/cosmos_predict2_5.md §4): 35 steps on
    the shift-5 grid (the pre-trained 2B and its fine-tunes) or, with `karras`, on the grid of
    the post-trained 2B. Initial noise is numpy RandomState(seed) normal, unscaled. `num_steps`
    may be overridden per call. `guidance` and `negative_prompt` are defaults of the generation
    commands (`GenerationDefaults`); the family sets upstream's negative prompt (§1.6)."""

    num_steps: int = 35
    shift: float = 5.0
    karras: bool = False
    karras_sigma_max: float = 200.0
    karras_sigma_min: float = 0.01
    rho: float = 7.0
    order: int = 2

    def sigmas(self, num_steps: int | None = None) -> list[float]:
        return flow_sigmas(
            num_steps or self.num_steps,
            self.shift,
            self.karras,
            self.karras_sigma_max,
            self.karras_sigma_min,
            self.rho,
        )

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
        if self.order < 1:
            raise ValueError(f"UniPC order must be at least 1, got {self.order}; use 2.")
        if noise is None:
            noise = initial_noise(shape, seed, 1.0, device).float()
        return unipc_sample(x0_fn, self.sigmas(num_steps), noise.to(device), self.order)
