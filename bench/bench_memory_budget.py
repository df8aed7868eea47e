"""Per-GPU memory budget of full fine-tuning under FSDP2, checked on the meta device.

    python -m bench.bench_memory_budget --size 14B --world 8 [--ema] [--json out.json]

The net is built on the meta device (no memory) and sharded with the family's own
parallelize over a fake process group of `--world` ranks (torch's "fake" backend: one process
plays rank 0, collectives do nothing), so the per-rank shard sizes are FSDP2's, not arithmetic.
From them: fp32 weights, fp32 gradients, AdamW's two fp32 moments (and the fp32 EMA twin with
--ema), plus the unsharded bf16 copy of the blocks FSDP holds at once (the block being computed
and the one prefetched) and the unsharded fp32 gradients of one block before reduce-scatter.
Activations are not in it: they depend on the tokens per rank (context parallel) and are
measured on GPUs (docs/performance.md)."""

from __future__ import annotations

import argparse
import json
import sys

import torch
import torch.distributed as dist

GIB = 2**30


def budget(size: str, world: int, ema: bool = False, net_kwargs: dict | None = None) -> dict:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.testing._internal.distributed.fake_pg import FakeStore

    from framework.models.cosmos2.net import MiniTrainDiT, net_config
    from framework.models.cosmos2.parallelize import parallelize_net

    dist.init_process_group("fake", store=FakeStore(), rank=0, world_size=world)
    try:
        mesh = init_device_mesh("cpu", (world,), mesh_dim_names=("shard",))
        with torch.device("meta"):
            net = MiniTrainDiT(**(net_kwargs or net_config(size)))
        block = sum(p.numel() for p in net.blocks[0].parameters())
        parallelize_net(net, mesh, activation_checkpointing="selective", fsdp=True)
        total = sum(p.numel() for p in net.parameters())
        local = sum(p.to_local().numel() for p in net.parameters())
    finally:
        dist.destroy_process_group()
    parts = {
        "fp32 weights (shard)": 4 * local,
        "fp32 gradients (shard)": 4 * local,
        "AdamW exp_avg + exp_avg_sq (shard)": 8 * local,
    }
    if ema:
        parts["fp32 EMA (shard)"] = 4 * local
    parts["bf16 unsharded blocks (current + prefetched)"] = 2 * 2 * block
    parts["fp32 unsharded gradients of one block"] = 4 * block
    return {
        "size": size,
        "world": world,
        "parameters": total,
        "parameters_per_rank": local,
        "parameters_per_block": block,
        "bytes": parts,
        "total_bytes": sum(parts.values()),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.bench_memory_budget", description=__doc__)
    p.add_argument("--size", default="14B", choices=("2B", "14B"))
    p.add_argument("--world", type=int, default=8)
    p.add_argument("--ema", action="store_true", help="count the fp32 EMA twin (train.ema)")
    p.add_argument("--json", default="")
    args = p.parse_args(argv)
    b = budget(args.size, args.world, args.ema)
    print(
        f"{args.size} over {args.world} FSDP ranks: {b['parameters']:,} parameters, "
        f"{b['parameters_per_rank']:,} per rank"
    )
    for name, n in b["bytes"].items():
        print(f"  {name:48s} {n / GIB:7.2f} GiB")
    print(f"  {'total before activations':48s} {b['total_bytes'] / GIB:7.2f} GiB")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(b, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
