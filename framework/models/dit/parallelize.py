"""Activation checkpointing, torch.compile and FSDP2 for every model family, in that order.

A family names its units (Predict2: each block; Predict1: each FA/CA/MLP sub-block, the class
upstream FSDP-wraps) through its net's `units()`; `parallelize_net` applies the three to them.
The order follows torchtitan: checkpointing goes innermost so compile can trace the recompute
region, and FSDP2 hooks go outermost so all-gathers stay outside compiled graphs.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.checkpoint import CheckpointPolicy, create_selective_checkpoint_contexts

_aten = torch.ops.aten
# Every fused SDPA kernel (flash, memory-efficient, cuDNN, CPU flash, out-of-tree). The math
# fallback decomposes into plain ops and cannot be saved as one output.
SDPA_OPS = frozenset(
    getattr(_aten, name).default
    for name in (
        "_scaled_dot_product_flash_attention",
        "_scaled_dot_product_efficient_attention",
        "_scaled_dot_product_cudnn_attention",
        "_scaled_dot_product_flash_attention_for_cpu",
        "_scaled_dot_product_fused_attention_overrideable",
    )
    if hasattr(_aten, name)
)
CHECKPOINT_MODES = ("none", "full", "selective")


def _save_attention_policy(ctx, op, *args, **kwargs) -> CheckpointPolicy:
    # Attention outputs are kept, everything else is recomputed. For 2B at 480p (L = 31,104
    # tokens, D = 2048) a block does 7.9 TFLOP in attention matmuls (4 L^2 D) vs 3.7 TFLOP in
    # Linears (28 L D^2), while its two SDPA outputs hold 2 L D values of the ~13 L D that all
    # matmul outputs hold: saving them skips two thirds of the recompute for 1/6 of that memory.
    # Measured on one H100 (2B, 480p, batch 1, compiled): 2.23 s/step at 20.2 GB vs 2.58 s at
    # 18.5 GB with full checkpointing; no checkpointing runs out of 80 GB.
    return CheckpointPolicy.MUST_SAVE if op in SDPA_OPS else CheckpointPolicy.PREFER_RECOMPUTE


def checkpoint_kwargs(mode: str) -> dict | None:
    """Extra torch.utils.checkpoint kwargs for a mode of CHECKPOINT_MODES (None for "none")."""
    if mode not in CHECKPOINT_MODES:
        raise ValueError(
            f"activation_checkpointing={mode!r} is not one of {CHECKPOINT_MODES}; "
            "fix parallel.activation_checkpointing."
        )
    if mode == "none":
        return None
    if mode == "full":
        # No context_fn at all: dynamo (torch 2.11) rejects an explicit noop_context_fn.
        return {}
    return {
        "context_fn": functools.partial(
            create_selective_checkpoint_contexts, _save_attention_policy
        )
    }


def shard(
    module: nn.Module,
    mesh=None,
    reshard_after_forward: bool = True,
    mp_param_dtype: torch.dtype = torch.bfloat16,
) -> None:
    """FSDP2 `fully_shard` on `mesh` (1-D: FSDP, 2-D (replicate, shard): HSDP; None: the whole
    world). On CUDA meshes parameters are gathered in `mp_param_dtype` and gradients reduced in
    fp32."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError(
            "FSDP needs torch.distributed to be initialized; launch with torchrun "
            "or set parallel.strategy=none."
        )
    kwargs = {"mesh": mesh} if mesh is not None else {}
    device_type = (
        mesh.device_type if mesh is not None else ("cuda" if torch.cuda.is_available() else "cpu")
    )
    if device_type == "cuda":
        kwargs["mp_policy"] = MixedPrecisionPolicy(
            param_dtype=mp_param_dtype, reduce_dtype=torch.float32
        )
    fully_shard(module, reshard_after_forward=reshard_after_forward, **kwargs)


def parallelize_units(
    net: nn.Module,
    units: Sequence[Any],
    mesh=None,
    activation_checkpointing: str = "none",
    compile: bool = False,
    fsdp: bool = True,
    mp_param_dtype: torch.dtype = torch.bfloat16,
    reshard_after_forward: bool = True,
    compile_backend: str = "inductor",
) -> nn.Module:
    """Apply checkpointing, then per-unit compile, then FSDP2 (per unit, then the root) in place.

    `units`: modules with a `checkpoint_kwargs` attribute (dit.layers.CheckpointedUnit).
    `mesh`: a 1-D DeviceMesh (FSDP) or a 2-D one with dims (replicate, shard) (HSDP); None uses
    the whole world. Mixed precision (param `mp_param_dtype`, fp32 gradient reduction) is applied
    on CUDA meshes only.
    """
    # 1. Activation checkpointing, innermost: every unit (upstream's every_n_blocks = 1). The
    # unit checkpoints inside its own forward, so state-dict names stay official.
    kwargs = checkpoint_kwargs(activation_checkpointing)
    for unit in units:
        unit.checkpoint_kwargs = kwargs

    # 2. Compile each unit separately: identical units share one graph and compile time stays
    # that of one unit. nn.Module.compile keeps module names, unlike torch.compile(module).
    if compile:
        for unit in units:
            unit.compile(backend=compile_backend, fullgraph=False)

    # 3. FSDP2, outermost: each unit, then the root (embedders, final layer).
    if fsdp:
        last = len(units) - 1
        for i, unit in enumerate(units):
            # The last unit's backward runs right after forward: keeping it unsharded saves one
            # all-gather per step (upstream does the same, upstream/cosmos_predict2.md §4.5).
            shard(unit, mesh, reshard_after_forward and i < last, mp_param_dtype)
        shard(net, mesh, reshard_after_forward, mp_param_dtype)
    return net


def parallelize_net(net: Any, mesh=None, **options) -> nn.Module:
    """`parallelize_units` on the net's own `units()` (every VideoDiT has them)."""
    return parallelize_units(net, net.units(), mesh, **options)
