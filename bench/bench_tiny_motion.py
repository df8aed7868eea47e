"""Does the default job's model move the cube? Tracks it in generated and true clips.

    python -m bench.bench_tiny_motion [JOB_DIR] [--iter N] [--json out.json]

Reads the sample videos the job wrote (`JOB_DIR/samples/iter_N/<clip>.mp4`, the latest N by
default; JOB_DIR defaults to the tiny_gr1 job), reads the same held-out clips from the job's
dataset at the training size and stride, and finds the cube in every frame by its colour
(`data_prep.synthetic.track_cube`). Prints, per clip and frame, where the cube is in the truth and
in the generated video, and sums it up as mean distances in pixels over the generated frames:

  found   the share of frames where the generated video shows the cube at all
  model   generated cube vs true cube, over the frames where both show it
  still   the cube where the conditioning frame has it vs true cube, same frames (a model that
          only copies the first frame scores this)
  moved   how far the generated cube travelled from its first-frame position, same frames

Frames where the true clip hides the cube are left out.
"""

from __future__ import annotations

import argparse
import json
import math
import re
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from data_prep.synthetic import CUBES, track_cube
from framework.data.video import ClipReader


def read_all(
    path: Path, size: tuple[int, int] | None = None, stride: int = 1, num_frames: int | None = None
) -> np.ndarray:
    with ClipReader(path, size=size, mode="resize") as reader:
        n = num_frames or 1 + (reader.num_frames - 1) // stride
        return reader.read(0, n, stride)


def distance(a: tuple, b: tuple, size: tuple[int, int]) -> float:
    return float(math.hypot((a[0] - b[0]) * size[0], (a[1] - b[1]) * size[1]))


def compare(generated: np.ndarray, truth: np.ndarray, cube: str, num_cond: int = 1) -> dict:
    size = generated.shape[1:3]
    gen, true = track_cube(generated, cube), track_cube(truth, cube)
    start = true[num_cond - 1]
    # Frames where the truth hides the cube (under the gripper) cannot be judged.
    judged = [t for t in range(num_cond, min(len(gen), len(true))) if true[t] is not None]
    frames = [t for t in judged if gen[t] is not None and gen[num_cond - 1] is not None]
    mean = lambda xs: float(np.mean(xs)) if xs else math.nan  # noqa: E731
    return {
        "found": len(frames) / max(len(judged), 1),
        "model_px": mean([distance(gen[t], true[t], size) for t in frames]),
        "still_px": mean([distance(start, true[t], size) for t in frames]),
        "moved_px": mean([distance(gen[t], gen[num_cond - 1], size) for t in frames]),
        "true_track": true,
        "generated_track": gen,
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(
        prog="python -m bench.bench_tiny_motion", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("job_dir", nargs="?", default="checkpoints/worldtune/tiny/tiny_gr1")
    p.add_argument("--iter", type=int, help="samples/iter_N to read (default: the latest)")
    p.add_argument("--json", help="also write the result here")
    a = p.parse_args(argv)
    job = Path(a.job_dir)
    cfg = OmegaConf.load(job / "config.yaml")
    ds = cfg.data.dataset
    size, stride = tuple(ds.video_size), int(ds.frame_stride)
    folders = sorted((job / "samples").glob("iter_*"))
    if a.iter is not None:
        folders = [job / "samples" / f"iter_{a.iter:09d}"]
    if not folders or not folders[-1].is_dir():
        raise SystemExit(f"{job}/samples has no iter_* folder; train with the sample hook first")
    rows = {}
    for video in sorted(folders[-1].glob("*.mp4")):
        cube = next((c for c in CUBES if re.search(rf"_{c}_to_", video.stem)), None)
        if cube is None:
            continue
        gen = read_all(video)
        truth = read_all(
            Path(ds.dataset_dir) / "val" / "videos" / video.name, size, stride, gen.shape[0]
        )
        rows[video.stem] = compare(gen, truth, cube)
    if not rows:
        raise SystemExit(f"{folders[-1]} has no sample of a synthetic clip (<name>_<cube>_to_...)")
    fmt = lambda t: "   -   " if t is None else f"{t[0]:.2f},{t[1]:.2f}"  # noqa: E731
    print(f"samples: {folders[-1]}  (positions as y,x frame fractions)")
    for name, r in rows.items():
        print(
            f"{name}\n  true      "
            + "  ".join(fmt(t) for t in r["true_track"])
            + "\n  generated "
            + "  ".join(fmt(t) for t in r["generated_track"])
        )
    summary = {
        k: float(np.nanmean([r[k] for r in rows.values()]))
        for k in ("found", "model_px", "still_px", "moved_px")
    }
    print(
        f"mean over clips: cube found in {100 * summary['found']:.0f}% of frames; pixels at "
        f"{size[0]}x{size[1]}: model {summary['model_px']:.2f}  still {summary['still_px']:.2f}"
        f"  moved {summary['moved_px']:.2f}"
    )
    result = {"samples": str(folders[-1]), **summary, "items": rows}
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
