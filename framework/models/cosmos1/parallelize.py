"""Activation checkpointing, torch.compile and FSDP2 for the Predict1 DiT, in that order.

The unit of all three is the FA/CA/MLP sub-block (`DITBuildingBlock`), the class upstream
FSDP-wraps (docs/upstream/cosmos_predict1.md §4.1). The order follows torchtitan: checkpointing
innermost so compile traces the recompute region, FSDP2 hooks outermost so all-gathers stay
outside compiled graphs. The checkpoint modes, the selective policy (keep attention outputs,
recompute the rest) and `shard` are shared by all families (framework/models/parallel.py).
"""

from __future__ import annotations

import torch

from framework.models.cosmos1.net import GeneralDIT
from framework.models.parallel import checkpoint_kwargs, shard


def apply_activation_checkpointing(net: GeneralDIT, mode: str) -> None:
    """Checkpoint every sub-block. The sub-block checkpoints inside its own forward, so parameter
    and state-dict names stay official (no wrapper prefix). Under "selective" an MLP sub-block,
    which has no attention, is recomputed whole, as upstream always recomputes GELU + layer2."""
    kwargs = checkpoint_kwargs(mode)
    for sub in net.sub_blocks():
        sub.checkpoint_kwargs = kwargs


def parallelize_net(
    net: GeneralDIT,
    mesh=None,
    activation_checkpointing: str = "none",
    compile: bool = False,
    fsdp: bool = True,
    mp_param_dtype: torch.dtype = torch.bfloat16,
    reshard_after_forward: bool = True,
    compile_backend: str = "inductor",
) -> GeneralDIT:
    """Apply checkpointing, then per-sub-block compile, then FSDP2 (per sub-block, then the root)
    in place.

    `mesh`: a 1-D DeviceMesh (FSDP) or a 2-D one with dims (replicate, shard) (HSDP, as upstream
    trains, §6.4); None uses the whole world. Mixed precision (param `mp_param_dtype`, fp32
    gradient reduction) is applied on CUDA meshes only.
    """
    # 1. Activation checkpointing, innermost.
    apply_activation_checkpointing(net, activation_checkpointing)

    # 2. Compile each sub-block separately: the 3 x num_blocks sub-blocks share three graphs (one
    # per kind), so compile time stays that of one transformer block. nn.Module.compile keeps
    # module names, unlike torch.compile(module).
    if compile:
        for sub in net.sub_blocks():
            sub.compile(backend=compile_backend, fullgraph=False)

    # 3. FSDP2, outermost: each sub-block, then the root (embedders, extra position tables,
    # final layer).
    if fsdp:
        subs = net.sub_blocks()
        for i, sub in enumerate(subs):
            # The last unit's backward runs right after forward: keeping it unsharded saves one
            # all-gather per step.
            last = i == len(subs) - 1
            shard(sub, mesh, reshard_after_forward and not last, mp_param_dtype)
        shard(net, mesh, reshard_after_forward, mp_param_dtype)
    return net
