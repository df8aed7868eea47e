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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.step_times", description=__doc__)
    p.add_argument("dir")
    p.add_argument("--skip", type=int, default=3)
    args = p.parse_args(argv)
    for f in sorted(Path(args.dir).glob("*metrics.jsonl")):
        s = summarize(f, args.skip)
        print(
            f.name,
            " ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in s.items()),
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
