"""Does tiny_bridge's model move the arm and carry the block? Tracks both in its sample videos.

    python -m bench.bench_tiny_bridge_motion [JOB_DIR] [--iter N] [--json out.json]

The sample hook writes `JOB_DIR/samples/iter_N/val_<i>.mp4` for held-out episodes of the
synthetic Bridge set (data_prep/synthetic_bridge.py); `annotation/val/<i>.json` names the block
the instruction moves. Per frame, each pixel is given the nearest colour of the scene's palette:
the named block's centre is where its colour is, the arm's is where the dark link and finger
colours are. Printed per clip: both tracks, generated and true (the held-out clip at the job's
size and stride); summed up over the generated frames:

  arm_moved    how far the generated arm's centre travelled from the first frame (pixels)
  arm_error    generated arm centre vs true arm centre (pixels)
  block_error  generated block vs true block, where both are visible (pixels)
  still_error  the block where the first frame has it vs the true block (what copying the first
               frame scores), same frames
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from data_prep.synthetic_bridge import BLOCKS, TABLE
from framework.data.video import ClipReader

# The arm's colours (links and fingers) as the renderer draws them; the table and blocks are the
# other palette entries.
ARM_GREYS = (30, 42, 77, 152)


def palette() -> tuple[np.ndarray, list[str]]:
    names = ["table", *BLOCKS, *(f"arm{g}" for g in ARM_GREYS)]
    colours = [TABLE, *(np.array(c, np.float32) for c in BLOCKS.values())]
    colours += [np.full(3, g, np.float32) for g in ARM_GREYS]
    return np.stack(colours).astype(np.float32), names


def centres(frames: np.ndarray, block: str) -> tuple[list, list]:
    """Per frame, (y, x) in pixels of the block's and the arm's pixels (None where absent)."""
    colours, names = palette()
    want_block = names.index(block)
    arm = [i for i, n in enumerate(names) if n.startswith("arm")]
    blocks, arms = [], []
    for frame in frames.astype(np.float32):
        label = np.linalg.norm(frame[..., None, :] - colours, axis=-1).argmin(-1)
        for track, mask in ((blocks, label == want_block), (arms, np.isin(label, arm))):
            ys, xs = np.nonzero(mask)
            track.append((float(ys.mean()), float(xs.mean())) if len(ys) else None)
    return blocks, arms


def dist(a, b) -> float:
    return math.nan if a is None or b is None else math.hypot(a[0] - b[0], a[1] - b[1])


def read(path: Path, size=None, stride: int = 1, frames: int | None = None) -> np.ndarray:
    with ClipReader(path, size=size, mode="resize") as reader:
        n = frames or 1 + (reader.num_frames - 1) // stride
        return reader.read(0, n, stride)


def clip_scores(gen: np.ndarray, true: np.ndarray, block: str) -> dict:
    gb, ga = centres(gen, block)
    tb, ta = centres(true, block)
    later = range(1, min(len(gen), len(true)))
    mean = lambda xs: float(np.nanmean(xs)) if xs else math.nan  # noqa: E731
    return {
        "arm_moved": mean([dist(ga[t], ga[0]) for t in later]),
        "arm_error": mean([dist(ga[t], ta[t]) for t in later]),
        "block_error": mean([dist(gb[t], tb[t]) for t in later]),
        "still_error": mean([dist(tb[0], tb[t]) for t in later if gb[t] is not None]),
        "tracks": {"true_block": tb, "gen_block": gb, "true_arm": ta, "gen_arm": ga},
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(
        prog="python -m bench.bench_tiny_bridge_motion", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("job_dir", nargs="?", default="checkpoints/worldtune/tiny/tiny_bridge")
    p.add_argument("--iter", type=int, help="samples/iter_N to read (default: the latest)")
    p.add_argument("--json", help="also write the result here")
    a = p.parse_args(argv)
    job = Path(a.job_dir)
    ds = OmegaConf.load(job / "config.yaml").data.dataset
    size, stride = tuple(ds.video_size), int(ds.frame_stride)
    folders = sorted((job / "samples").glob("iter_*"))
    if a.iter is not None:
        folders = [job / "samples" / f"iter_{a.iter:09d}"]
    if not folders or not folders[-1].is_dir():
        raise SystemExit(f"{job}/samples has no iter_* folder; train with the sample hook first")
    root = Path(ds.dataset_dir)
    rows = {}
    for video in sorted(folders[-1].glob("val_*.mp4")):
        ann = json.loads((root / "annotation" / "val" / f"{video.stem[4:]}.json").read_text())
        gen = read(video)
        true = read(root / ann["videos"][0]["video_path"], size, stride, gen.shape[0])
        rows[video.stem] = {
            "instruction": ann["texts"][0],
            **clip_scores(gen, true, ann["task"]["block"]),
        }
    if not rows:
        raise SystemExit(f"{folders[-1]} has no val_<i>.mp4 sample of the synthetic Bridge set")
    fmt = lambda t: "  -  " if t is None else f"{t[0]:4.1f},{t[1]:4.1f}"  # noqa: E731
    print(f"samples: {folders[-1]}  (centres as y,x pixels at {size[0]}x{size[1]})")
    for name, r in rows.items():
        print(f"{name}: {r['instruction']}")
        for key in ("true_arm", "gen_arm", "true_block", "gen_block"):
            print(f"  {key:<10} " + "  ".join(fmt(t) for t in r["tracks"][key]))
    keys = ("arm_moved", "arm_error", "block_error", "still_error")
    summary = {k: float(np.nanmean([r[k] for r in rows.values()])) for k in keys}
    print("mean over clips, pixels: " + "  ".join(f"{k} {v:.2f}" for k, v in summary.items()))
    result = {"samples": str(folders[-1]), **summary, "items": rows}
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
