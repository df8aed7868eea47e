"""Process setup from torchrun's environment, the device mesh, and rank-aware helpers.

A plain `python` process (no torchrun) is a world of one. gloo serves CPU runs (tests, laptops),
NCCL serves GPUs. Only rank 0 creates directories and writes files; every helper here is a no-op
or an identity in a world of one, so single-process code paths stay plain.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from omegaconf import DictConfig
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh

from framework.config import ConfigError

STRATEGIES = ("none", "ddp", "fsdp")
# Upstream's default collective timeout (upstream/cosmos_predict2.md §3.1); a first step that
# compiles or loads 14B weights can take minutes, so the 10-minute torch default is too short.
TIMEOUT = timedelta(seconds=int(os.environ.get("TORCH_NCCL_HEARTBEAT_TIMEOUT_SEC", "1800")))


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits: global rank, world size, rank on its node, its device, and the
    context-parallel degree (consecutive ranks share one sample: rank = dp_rank * cp + cp_rank)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    cp: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def dp_rank(self) -> int:
        """Which data-parallel replica this rank belongs to (what the sampler splits over)."""
        return self.rank // self.cp

    @property
    def dp_world(self) -> int:
        """How many data-parallel replicas read their own samples: world / cp."""
        return self.world_size // self.cp

    @property
    def distributed(self) -> bool:
        return dist.is_available() and dist.is_initialized()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now (for a local rendezvous)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env_ranks() -> tuple[int, int, int]:
    """(RANK, WORLD_SIZE, LOCAL_RANK) as torchrun sets them; (0, 1, 0) outside torchrun."""
    env = os.environ
    return int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0))


def local_rank() -> int:
    return env_ranks()[2]


def init_distributed(strategy: str = "none") -> DistEnv:
    """Join torchrun's process group (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT).

    Without torchrun, `ddp`/`fsdp` still get a one-process group so the same experiment runs on a
    single GPU with its configured strategy.
    """
    if strategy not in STRATEGIES:
        raise ConfigError(f"parallel.strategy={strategy!r} is not one of {STRATEGIES}; fix it.")
    rank, world, local = env_ranks()
    if torch.cuda.is_available():
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    under_torchrun = "MASTER_ADDR" in os.environ and "WORLD_SIZE" in os.environ
    wants_group = world > 1 or under_torchrun or strategy != "none"
    if wants_group and not dist.is_initialized():
        if not under_torchrun:
            os.environ.update(
                MASTER_ADDR="127.0.0.1",
                MASTER_PORT=str(free_port()),
                RANK="0",
                WORLD_SIZE="1",
                LOCAL_RANK="0",
            )
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=TIMEOUT)
    if world > 1 and strategy == "none":
        raise ConfigError(
            f"WORLD_SIZE={world} but parallel.strategy=none; set parallel.strategy=ddp or fsdp."
        )
    return DistEnv(rank, world, local, device)


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def shard_degree(parallel: DictConfig, world_size: int) -> int:
    """FSDP shard group size; -1 (or null) shards over the whole world, and a size larger than
    the world is clamped to it (so an 8-GPU recipe runs on one GPU unchanged)."""
    shard = parallel.get("shard_size", -1)
    shard = world_size if shard in (None, -1) else min(int(shard), world_size)
    if shard < 1 or world_size % shard:
        raise ConfigError(
            f"parallel.shard_size={shard} must divide WORLD_SIZE={world_size}; use "
            "a divisor of it or -1 to shard over all processes."
        )
    return shard


def replicate_degree(parallel: DictConfig, world_size: int) -> int:
    """How many processes hold the same gradients (for counting each value once)."""
    if parallel.strategy == "fsdp":
        return world_size // shard_degree(parallel, world_size)
    return world_size if parallel.strategy == "ddp" else 1


def context_parallel_degree(parallel: DictConfig, world_size: int) -> int:
    """Processes that share one sample (`parallel.context_parallel`, default 1), clamped to the
    world like `shard_size`, so the 14B recipe's 4 runs on one GPU as 1."""
    cp = parallel.get("context_parallel", 1) or 1
    cp = min(int(cp), world_size)
    if cp < 1 or world_size % cp:
        raise ConfigError(
            f"parallel.context_parallel={cp} must divide WORLD_SIZE={world_size}; use a "
            "divisor of it (1 = off)."
        )
    return cp


def context_parallel_group(cp: int) -> dist.ProcessGroup | None:
    """This rank's context-parallel group: ranks [r - r % cp, r - r % cp + cp), so a group sits
    on one node's fast links when cp divides the GPUs per node. Every rank must call it (it
    creates every group). None when cp is 1."""
    if cp == 1:
        return None
    group, _ = dist.new_subgroups(group_size=cp)
    return group


def build_mesh(parallel: DictConfig, env: DistEnv) -> DeviceMesh | None:
    """None for `none`; ("replicate",) for DDP; ("shard",) or HSDP ("replicate", "shard").

    Over the whole world with or without context parallel: FSDP shards parameters over the CP
    ranks too (as upstream's fsdp_shard_size and torchtitan's dp_shard_cp), so CP costs no
    parameter memory; `shard_size` counts processes, CP ranks included."""
    if parallel.strategy == "none":
        return None
    device_type = env.device.type
    world = env.world_size
    if parallel.strategy == "ddp":
        return init_device_mesh(device_type, (world,), mesh_dim_names=("replicate",))
    shard = shard_degree(parallel, world)
    if shard == world:
        return init_device_mesh(device_type, (world,), mesh_dim_names=("shard",))
    return init_device_mesh(
        device_type, (world // shard, shard), mesh_dim_names=("replicate", "shard")
    )


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's `obj`, in rank order (a list of one outside torchrun)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any) -> Any:
    """Rank 0's `obj` on every rank."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def enable_context_parallel(model, cp: int) -> None:
    """Split each sample's latent frames over `parallel.context_parallel` ranks (before
    parallelize, so compile traces the split net)."""
    if cp == 1:
        return
    enable = getattr(model, "context_parallel", None)
    if enable is None:
        raise ConfigError(
            f"parallel.context_parallel={cp}: {type(model).__name__} has no "
            "context parallel; set parallel.context_parallel=1."
        )
    try:
        enable(context_parallel_group(cp))
    except ValueError as err:
        raise ConfigError(str(err).splitlines()[0]) from None
