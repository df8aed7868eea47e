"""How long pinning a checkpoint staging file holds up training (issue #29), per way of pinning.

    python -m bench.pin_stall [--gb 23.5] [--out pin.json]     (a CUDA machine)

The format=dcp writer pins its staging files (framework/trainer/checkpoint_stage.py) in a
background thread after the first step. On an H100 the 2B job's second step took 10.6 s with
one 23.5 GB file and 17.6 s with two (2.2 s without), so the pinning, not the save, cost the run
seconds. Here the main thread runs a step-like loop (bf16 matmuls launched from Python, a 16 MB
host allocation, a synchronize) while a thread pins a file of `--gb` in each way:

- `whole`: one cudaHostRegister over the whole file (the code before this bench);
- `alloc`: only the kernel's allocation of every page of the file (one fallocate), no pinning;
- `ranges`: what Slab does now: 64 MB ranges that never split a tensor's slot, each allocated
  (fallocate) then registered, then a pause as long as that took.

Reported per way: seconds to pin, the loop's median iteration before, and the loop time lost
while pinning (sum of each iteration's excess over that median) and its slowest iteration.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from bench.common import env_info  # noqa: E402
from framework.trainer import checkpoint_stage as S  # noqa: E402


def layout(gb: float) -> dict:
    """A 2B-like state's slots: mostly 4-64 MB tensors, a few of 600 MB, some tiny."""
    sizes = [64 * 2**20, 16 * 2**20, 4 * 2**20, 4096, 600 * 2**20]
    lay, off, i = {}, 0, 0
    while off < gb * 1e9:
        n = sizes[i % len(sizes)] // 4
        lay[f"t{i}"] = (off, torch.float32, (n,))
        off += -(-n * 4 // S.ALIGN) * S.ALIGN
        i += 1
    return lay


def pin_whole(lay: dict) -> S.Slab:
    slab = S.Slab(lay, pin=False)
    err = torch.cuda.cudart().cudaHostRegister(slab.flat.data_ptr(), slab.size, 0)
    assert int(err) == 0, err
    slab.ranges = [(0, slab.size)]
    return slab


def alloc_only(lay: dict) -> S.Slab:
    slab = S.Slab(lay, pin=False)
    os.posix_fallocate(slab.fd, 0, slab.size)
    return slab


def pin_paced(lay: dict) -> S.Slab:
    slab = S.Slab(lay, pin=True)
    assert slab.pinned
    return slab


def measure(way, lay: dict, x: torch.Tensor) -> dict:
    def step() -> float:
        t = time.perf_counter()
        y = x
        for _ in range(40):
            y = torch.nn.functional.gelu(y @ x) * 0.5
        torch.empty(16 * 2**20, dtype=torch.uint8).fill_(1)
        torch.cuda.synchronize()
        return time.perf_counter() - t

    base = [step() for _ in range(30)]
    median = statistics.median(base)
    out: dict = {}

    def pin() -> None:
        t = time.perf_counter()
        out["slab"] = way(lay)
        out["pin_s"] = time.perf_counter() - t

    thread = threading.Thread(target=pin)
    during = []
    thread.start()
    while thread.is_alive():
        during.append(step())
    thread.join()
    slab = out.pop("slab")
    size = slab.size
    slab.close()
    return {
        "pin_s": round(out["pin_s"], 3),
        "gb": round(size / 1e9, 2),
        "median_step_s": round(median, 4),
        "steps_during": len(during),
        "lost_s": round(sum(max(0.0, t - median) for t in during), 3),
        "slowest_s": round(max(during, default=0.0), 3),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.pin_stall", description=__doc__)
    p.add_argument("--gb", type=float, default=23.5)
    p.add_argument("--ways", default="whole,alloc,ranges")
    p.add_argument("--out", default="")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench.pin_stall needs a CUDA device", file=sys.stderr)
        return 2
    device = torch.device("cuda")
    x = torch.randn(2048, 2048, device=device, dtype=torch.bfloat16) / 45
    lay = layout(args.gb)
    ways = {"whole": pin_whole, "alloc": alloc_only, "ranges": pin_paced}
    report = {"env": env_info(device), "args": vars(args), "rows": {}}
    for name in args.ways.split(","):
        row = measure(ways[name], lay, x)
        report["rows"][name] = row
        print(name, json.dumps(row), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
