"""Step-time summary of trainer runs from their metrics.jsonl:

    python -m bench.step_times DIR [--skip 3]     # every *metrics.jsonl in DIR, one line each

Median, min and max step time and median data wait after the first `skip` steps (compile and
warm-up), peak memory, last loss. bench/parts_trainer.py and the device scripts share it."""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path


def summarize(path: Path, skip: int = 3) -> dict:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    timed = [r for r in rows if "step_time" in r][skip:]
    if not timed:
        raise ValueError(f"{path}: no step times after the first {skip} steps")
    times = [r["step_time"] for r in timed]
    return {
        "steps": len(timed),
        "median": statistics.median(times),
        "min": min(times),
        "max": max(times),
        "data_wait": statistics.median(r.get("data_wait", 0.0) for r in timed),
        "peak": max((r.get("peak_mem_gib") or 0.0) for r in rows) or None,
        "last_loss": rows[-1].get("loss"),
    }


def save_cost(path: Path, skip: int = 3, save_steps: list[int] | None = None) -> dict:
    """Training time lost to checkpoint saves in a run with `checkpoint.save_iter` saves: the
    seconds the loop spent in save calls (`save_held`, logged with the step after each save)
    plus the excess over the median step of every step after the first save, summed and divided
    by the number of saves that steps followed; apart, the excess of steps 2 to the first save
    (`startup_excess`: the one-time preparation); and the peak GPU memory up to the first save
    and over the whole run.
    `save_steps` names the saves of a run that did not log `save_held` (older trainers)."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    timed = [r for r in rows if "step_time" in r][skip:]
    saves = save_steps or [r["step"] - 1 for r in rows if r.get("save_held")]
    if not timed or not saves:
        raise ValueError(f"{path}: needs step times after the first {skip} steps and a save")
    median = statistics.median(r["step_time"] for r in timed)
    # Steps after the first save carry the saves' cost; those before it (but the first, which
    # compiles) carry the one-time cost of preparing saves: format=dcp pins its staging files
    # in the background then.
    excess = sum(max(0.0, r["step_time"] - median) for r in timed if r["step"] > saves[0])
    startup = [r for r in rows if "step_time" in r and 1 < r["step"] <= saves[0]]
    held = sum(r["save_held"] for r in rows if r.get("save_held"))
    before = [r.get("peak_mem_gib") or 0.0 for r in rows if r["step"] <= saves[0]]
    return {
        "saves": len(saves),
        "median": median,
        "startup_excess": sum(max(0.0, r["step_time"] - median) for r in startup),
        "held_per_save": held / len(saves),
        "excess_per_save": excess / len(saves),
        "lost_per_save": (held + excess) / len(saves),
        "peak_before_save": max(before, default=0.0) or None,
        "peak": max((r.get("peak_mem_gib") or 0.0) for r in rows) or None,
        # Per save: a save that waits for the previous one's write (saves closer together than
        # the disk writes one) shows here, apart from one that does not.
        "held_each": [round(r["save_held"], 3) for r in rows if r.get("save_held")],
        "waited_each": [round(r.get("save_waited", 0.0), 3) for r in rows if r.get("save_held")],
        # Background writes (format=dcp) that finished before the last step: seconds and GB/s.
        "write_each": [round(r["save_write"], 2) for r in rows if r.get("save_write")],
        "write_gb_per_s": [
            round(r["save_write_gb"] / r["save_write"], 2) for r in rows if r.get("save_write")
        ],
        "slowest_after_save": max(
            (r["step_time"] for r in timed if r["step"] > saves[0]), default=0.0
        ),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.step_times", description=__doc__)
    p.add_argument("dir")
    p.add_argument("--skip", type=int, default=3)
    p.add_argument("--saves", help="comma-separated save steps: print the cost of the saves")
    args = p.parse_args(argv)
    if args.saves:
        steps = [int(x) for x in args.saves.split(",")]
        for f in sorted(Path(args.dir).glob("*metrics.jsonl")):
            print(f.name, json.dumps(save_cost(f, args.skip, steps)))
        return 0
    for f in sorted(Path(args.dir).glob("*metrics.jsonl")):
        s = summarize(f, args.skip)
        print(
            f.name,
            " ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in s.items()),
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
