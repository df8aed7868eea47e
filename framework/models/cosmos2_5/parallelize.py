"""Activation checkpointing, torch.compile and FSDP2 for the Predict2.5 DiT, in that order
(torchtitan's: checkpointing innermost so compile traces the recompute region, FSDP2 hooks
outermost so all-gathers stay outside compiled graphs). The same steps as Predict2's; one shared
parallelize taking a family's units is issue #23's."""

from __future__ import annotations

import torch

from framework.models.cosmos2_5.net import Predict25DiT
from framework.models.parallel import checkpoint_kwargs, shard


def parallelize_net(
    net: Predict25DiT,
    mesh=None,
    activation_checkpointing: str = "none",
    compile: bool = False,
    fsdp: bool = True,
    mp_param_dtype: torch.dtype = torch.bfloat16,
    reshard_after_forward: bool = True,
    compile_backend: str = "inductor",
) -> Predict25DiT:
    """In place. `mesh`: a 1-D (FSDP) or 2-D (replicate, shard) DeviceMesh; None = whole world."""
    # 1. Checkpoint every block inside its own forward (names stay official). Upstream's SAC
    # "aggressive" mode saves only attention outputs, which the "selective" mode here matches.
    kwargs = checkpoint_kwargs(activation_checkpointing)
    for block in net.blocks:
        block.checkpoint_kwargs = kwargs
    # 2. Per-block compile: identical blocks share one graph.
    if compile:
        for block in net.blocks:
            block.compile(backend=compile_backend, fullgraph=False)
    # 3. FSDP2 per block, then the root (which holds the 100352 x 1024 text projection). The last
    # block stays unsharded after forward: its backward runs next.
    if fsdp:
        last = len(net.blocks) - 1
        for i, block in enumerate(net.blocks):
            shard(block, mesh, reshard_after_forward and i < last, mp_param_dtype)
        shard(net, mesh, reshard_after_forward, mp_param_dtype)
    return net
