"""Activation checkpointing, torch.compile and FSDP2 for the Predict2 DiT, in that order.

The order follows torchtitan: checkpointing goes innermost so compile can trace the recompute
region, and FSDP2 hooks go outermost so all-gathers stay outside compiled graphs.
"""

from __future__ import annotations

import torch

from framework.models.cosmos2.net import MiniTrainDiT
from framework.models.parallel import (  # noqa: F401  (re-exported for other families)
    CHECKPOINT_MODES,
    SDPA_OPS,
    checkpoint_kwargs,
    shard,
)


def apply_activation_checkpointing(net: MiniTrainDiT, mode: str) -> None:
    """Checkpoint every block (upstream/cosmos_predict2.md §4.6: every_n_blocks = 1). The block
    checkpoints inside its own forward, so parameter and state-dict names stay official (no wrapper
    prefix)."""
    kwargs = checkpoint_kwargs(mode)
    for block in net.blocks:
        block.checkpoint_kwargs = kwargs


def parallelize_net(
    net: MiniTrainDiT,
    mesh=None,
    activation_checkpointing: str = "none",
    compile: bool = False,
    fsdp: bool = True,
    mp_param_dtype: torch.dtype = torch.bfloat16,
    reshard_after_forward: bool = True,
    compile_backend: str = "inductor",
) -> MiniTrainDiT:
    """Apply checkpointing, then per-block compile, then FSDP2 (per block, then the root) in place.

    `mesh`: a 1-D DeviceMesh (FSDP) or a 2-D one with dims (replicate, shard) (HSDP); None uses
    the whole world. Mixed precision (param `mp_param_dtype`, fp32 gradient reduction) is applied
    on CUDA meshes only.
    """
    # 1. Activation checkpointing, innermost.
    apply_activation_checkpointing(net, activation_checkpointing)

    # 2. Compile each block separately: identical blocks share one graph and compile time stays
    # that of one block. nn.Module.compile keeps module names, unlike torch.compile(module).
    if compile:
        for block in net.blocks:
            block.compile(backend=compile_backend, fullgraph=False)

    # 3. FSDP2, outermost.
    if fsdp:
        last = len(net.blocks) - 1
        for i, block in enumerate(net.blocks):
            # The last block's backward runs right after forward: keeping it unsharded saves one
            # all-gather per step (upstream does the same, upstream/cosmos_predict2.md §4.5).
            shard(block, mesh, reshard_after_forward and i < last, mp_param_dtype)
        shard(net, mesh, reshard_after_forward, mp_param_dtype)
    return net
