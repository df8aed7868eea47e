"""A training-free step cache for many-step samplers: First-Block-Cache (spec/distillation.md
§6.2; ParaAttention, diffusers' `FirstBlockCacheConfig`).

Every net call runs block 0. Its residual r = out0 - in0 is compared with r_prev, the block-0
residual of the last call that ran every block: when mean|r - r_prev| / mean|r_prev| is below
the threshold, the other blocks are skipped and the output is out0 plus the cached residual of
the skipped blocks (out_last - out0 of that call); otherwise they run and refresh the cache. The
first call of each generation always runs everything. No coefficients are fitted (TeaCache needs
per-model ones, and none exist for Predict2), so the threshold is the one knob:
`model.sampler.cache_threshold`, turned on by `video2world --step_cache`.

With classifier-free guidance our sampler runs the conditional and unconditional halves as one
batched call, so one decision covers both. Under context parallel every rank holds a slice of
the frames: the two means are summed over the group so all ranks decide alike (§6.4).
Not for a few-step student: every one of its steps changes the latent a lot (§0.5).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor, nn

DEFAULT_THRESHOLD = 0.05  # diffusers' FirstBlockCacheConfig default


class FirstBlockCache:
    """The cache state of one generation and what it did (`calls`, `computed`)."""

    def __init__(self, threshold: float = DEFAULT_THRESHOLD, group: Any = None) -> None:
        if threshold < 0:
            raise ValueError(f"cache_threshold must be >= 0, got {threshold}.")
        self.threshold, self.group = float(threshold), group
        self.prev_first: Tensor | None = None  # block-0 residual of the last full call
        self.first_out: Tensor | None = None
        self.tail: Tensor | None = None  # out_last - out0 of the last full call
        self.skip = False
        self.calls = self.computed = 0

    def relative_change(self, residual: Tensor) -> float:
        both = torch.stack(
            [(residual - self.prev_first).abs().float().sum(), self.prev_first.abs().float().sum()]
        )
        if self.group is not None:
            import torch.distributed as dist

            dist.all_reduce(both, group=self.group)
        num, den = both.tolist()
        return num / max(den, 1e-12)

    def decide(self, x_in: Tensor, out: Tensor) -> None:
        residual = out - x_in
        usable = (
            self.prev_first is not None
            and self.tail is not None
            and self.tail.shape == out.shape
            and self.prev_first.shape == residual.shape
        )
        self.skip = usable and self.relative_change(residual) < self.threshold
        self.calls += 1
        if not self.skip:
            self.computed += 1
            self.prev_first, self.first_out = residual, out

    def first(self, block: nn.Module) -> Callable[..., Tensor]:
        def run(x: Tensor, *args: Any) -> Tensor:
            out = block(x, *args)
            self.decide(x, out)
            return out

        return run

    def last(self, block: nn.Module) -> Callable[..., Tensor]:
        def run(x: Tensor, *args: Any) -> Tensor:
            out = block(x, *args)
            self.tail = out - self.first_out
            return out

        return run

    def reuse(self, x: Tensor, *args: Any) -> Tensor:
        return x + self.tail


class _CachedBlocks(nn.ModuleList):
    """The net's own blocks (same objects, same names, compiled ones stay compiled); iterating
    yields block 0, then either the rest or one step that adds the cached residual. The net's
    `for block in self.blocks: x = block(x, ...)` loop thus runs unchanged."""

    def __init__(self, blocks: nn.ModuleList, cache: FirstBlockCache) -> None:
        super().__init__(blocks._modules.values())
        object.__setattr__(self, "cache", cache)

    def __iter__(self) -> Iterator[Callable[..., Tensor]]:
        blocks, cache = list(self._modules.values()), self.cache
        yield cache.first(blocks[0])
        if cache.skip:
            yield cache.reuse
            return
        yield from blocks[1:-1]
        yield cache.last(blocks[-1])


@contextlib.contextmanager
def step_cache(net: nn.Module, threshold: float = DEFAULT_THRESHOLD) -> Iterator[FirstBlockCache]:
    """First-Block-Cache on `net` for the block: one generation (fresh state)."""
    blocks = getattr(net, "blocks", None)
    if isinstance(blocks, _CachedBlocks):
        raise ValueError("the step cache is already on for this net; use one at a time.")
    if not isinstance(blocks, nn.ModuleList) or len(blocks) < 2:
        raise ValueError(
            f"{type(net).__name__} has no list of 2 or more blocks to cache; drop --step_cache "
            "(it supports Predict2-family nets)."
        )
    cp = getattr(net, "cp", None)
    cache = FirstBlockCache(threshold, cp.group if cp is not None else None)
    net.blocks = _CachedBlocks(blocks, cache)
    try:
        yield cache
    finally:
        net.blocks = blocks


def enable_step_cache(model: nn.Module, threshold: float | None = None) -> None:
    """Every later `model.generate` runs under a fresh `step_cache` of the model's net, with
    `threshold` or else the sampler's `cache_threshold`; `model.step_cache_stats` holds the last
    generation's (computed, calls)."""
    if threshold is None:
        threshold = getattr(model.sampler, "cache_threshold", DEFAULT_THRESHOLD)
    if getattr(model.sampler, "num_steps", 35) < 10:
        raise ValueError(
            f"the step cache is for many-step samplers; this model samples in "
            f"{model.sampler.num_steps} steps, each of which changes the video a lot: drop "
            "--step_cache."
        )
    # A second call replaces the first one's settings instead of nesting caches.
    generate = getattr(model, "_uncached_generate", model.generate)
    object.__setattr__(model, "_uncached_generate", generate)

    @functools.wraps(generate)
    def cached_generate(*args: Any, **kwargs: Any) -> Tensor:
        with step_cache(model.net, threshold) as cache:
            out = generate(*args, **kwargs)
        object.__setattr__(model, "step_cache_stats", (cache.computed, cache.calls))
        return out

    object.__setattr__(model, "generate", cached_generate)
