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
    """Where this process sits: global rank, world size, rank on its node, and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return dist.is_available() and dist.is_initialized()


def _free_port() -> int:
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
                MASTER_PORT=str(_free_port()),
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


def build_mesh(parallel: DictConfig, env: DistEnv) -> DeviceMesh | None:
    """None for `none`; ("replicate",) for DDP; ("shard",) or HSDP ("replicate", "shard")."""
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
