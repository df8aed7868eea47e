"""Write a small robot-like dataset in the GR1 layout (the CPU default job trains on it).

Top-down table scene: a coloured cube, two coloured plates, a gripper that moves to the cube,
closes, carries it to the plate the caption names, opens and lifts. Each cube colour has its own
start spot and each plate colour its own place, so the caption plus the first frame determine the
motion (up to a small per-video jitter): a tiny model can learn it.

Layout written to DIR (the GR1 layout of upstream/cosmos_predict2.md §6.1, plus two extras):
  videos/*.mp4  metas/*.txt  t5_xxl/*.pickle  metadata.csv       training split
  val/{videos,metas,t5_xxl}/ + val/metadata.csv                   held-out videos for evaluation:
                                  the same tasks as the first training videos, new jitter/texture
  text_encoder/                   the small random T5 encoder + tokenizer that made the pickles
                                  (data_prep/small_t5.py); T5TextEncoder(DIR/text_encoder) embeds
                                  new prompts the same way
  synthetic.json                  the parameters; written last, so its presence means complete

    python -m data_prep.synthetic datasets/synthetic --num_videos 24 --num_frames 33 --size 64
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from data_prep.common import UserError, cli

CUBES = {  # colour -> (RGB, start spot as (y, x) fractions of the frame)
    "red": ((220, 40, 40), (0.30, 0.22)),
    "yellow": ((235, 205, 40), (0.25, 0.50)),
    "purple": ((140, 60, 190), (0.30, 0.78)),
    "cyan": ((40, 200, 210), (0.45, 0.50)),
}
PLATES = {
    "blue": ((50, 80, 220), (0.75, 0.78)),
    "white": ((235, 235, 235), (0.75, 0.22)),
    "green": ((60, 170, 70), (0.80, 0.50)),
}
HOME = (0.06, 0.50)
TABLE = np.array([150, 125, 95], dtype=np.float32)
# Bumped whenever rendering changes, so a dataset written by older code is not silently reused.
RENDER_VERSION = 2


def caption(cube: str, plate: str) -> str:
    return f"pick up the {cube} cube and place it on the {plate} plate"


def tasks() -> list[tuple[str, str, str]]:
    """Every (cube, target plate, distractor plate) combination: 4 x 3 x 2 = 24."""
    return [(c, t, d) for c in CUBES for t, d in itertools.permutations(PLATES, 2)]


def _lerp(a, b, u: float) -> np.ndarray:
    u = 0.5 - 0.5 * np.cos(np.pi * min(max(u, 0.0), 1.0))  # ease in/out
    return np.asarray(a) + (np.asarray(b) - np.asarray(a)) * u


def trajectory(cube_at, plate_at, u: float) -> tuple[np.ndarray, np.ndarray, float]:
    """(gripper yx, cube yx, finger opening in [0, 1]) at time u in [0, 1]."""
    cube_at, plate_at = np.asarray(cube_at), np.asarray(plate_at)
    lift = np.array([HOME[0], plate_at[1]])
    if u < 0.3:
        return _lerp(HOME, cube_at, u / 0.3), cube_at, 1.0
    if u < 0.4:
        return cube_at, cube_at, 1.0 - (u - 0.3) / 0.1
    if u < 0.8:
        g = _lerp(cube_at, plate_at, (u - 0.4) / 0.4)
        return g, g, 0.0
    if u < 0.9:
        return plate_at, plate_at, (u - 0.8) / 0.1
    return _lerp(plate_at, lift, (u - 0.9) / 0.1), plate_at, 1.0


def _disc(img, yy, xx, center, radius, color) -> None:
    img[(yy - center[0]) ** 2 + (xx - center[1]) ** 2 <= radius**2] = color


def _rect(img, yy, xx, center, half_h, half_w, color) -> None:
    img[(abs(yy - center[0]) <= half_h) & (abs(xx - center[1]) <= half_w)] = color


def render_video(
    task,
    num_frames: int,
    size: int,
    rng: np.random.Generator,
    jitter: float = 0.03,
    texture: float = 0.0,
) -> np.ndarray:
    """uint8 [T, size, size, 3] frames of one pick-and-place episode.

    Objects are drawn large (cube 1/6 of the frame, arm 1/14) so that they stay several pixels
    wide when the default job reads the clips at 24x24. `texture` is the standard deviation of a
    static per-pixel grain on the table (0 = plain).
    """
    return render_episode(task, num_frames, size, rng, jitter, texture)[0]


def render_episode(
    task,
    num_frames: int,
    size: int,
    rng: np.random.Generator,
    jitter: float = 0.03,
    texture: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """(render_video's frames, float32 [T, 3] ground-truth gripper state per frame: y, x in frame
    fractions and the finger opening in [0, 1]); draws from `rng` exactly as render_video."""
    cube, target, other = task
    shift = lambda yx: np.asarray(yx) + rng.uniform(-jitter, jitter, 2)  # noqa: E731
    cube_at, plate_at, other_at = (
        shift(CUBES[cube][1]),
        shift(PLATES[target][1]),
        shift(PLATES[other][1]),
    )
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    table = np.broadcast_to(TABLE, (size, size, 3)).astype(np.float32)
    if texture > 0:
        table = table + rng.normal(0, texture, (size, size, 1)).astype(np.float32)
    frames = np.empty((num_frames, size, size, 3), dtype=np.uint8)
    state = np.empty((num_frames, 3), dtype=np.float32)
    for t in range(num_frames):
        grip, cube_now, opening = trajectory(cube_at, plate_at, t / max(num_frames - 1, 1))
        state[t] = (grip[0], grip[1], opening)
        img = table.copy()
        for at, name in ((plate_at, target), (other_at, other)):
            _disc(img, yy, xx, at, 0.14, np.array(PLATES[name][0]) * 0.8)  # rim
            _disc(img, yy, xx, at, 0.12, PLATES[name][0])
        _rect(img, yy, xx, cube_now, 0.085, 0.085, np.array(CUBES[cube][0]) * 0.7)  # edge
        _rect(img, yy, xx, cube_now, 0.065, 0.065, CUBES[cube][0])
        reach = max(grip[0] - 0.1, 0.0) / 2  # arm from the top edge down to the palm
        _rect(img, yy, xx, (reach, grip[1]), reach, 0.035, (60, 60, 60))
        _rect(img, yy, xx, (grip[0] - 0.1, grip[1]), 0.025, 0.14, (40, 40, 40))  # palm
        spread = 0.07 + 0.06 * opening
        for side in (-1, 1):
            _rect(img, yy, xx, (grip[0] - 0.03, grip[1] + side * spread), 0.07, 0.025, (30, 30, 30))
        frames[t] = np.clip(img, 0, 255).astype(np.uint8)
    return frames, state


def gripper_actions(state: np.ndarray) -> np.ndarray:
    """Per-frame actions [T, 3] of a gripper state track [T, 3]: action t = state t+1 - state t
    (the command at frame t that leads to frame t+1, LeRobot's per-frame convention); zeros at
    the last frame, which nothing follows."""
    actions = np.zeros_like(state)
    actions[:-1] = state[1:] - state[:-1]
    return actions


def track_cube(frames: np.ndarray, cube: str) -> list[tuple | None]:
    """Per frame, the (y, x) centre in frame fractions of the pixels whose nearest scene colour
    is the named cube's; None where none is. Nearest-colour matching copes with the blurred
    colours of generated videos. Measures whether a generated video moves the cube
    (bench/bench_tiny_motion.py)."""
    others = [
        TABLE,
        *(np.array(c) for c, _ in PLATES.values()),
        *(np.array(c) * 0.8 for c, _ in PLATES.values()),
        *(np.array(c) for name, (c, _) in CUBES.items() if name != cube),
        np.full(3, 60.0),
        np.full(3, 35.0),
    ]
    palette = np.stack([np.array(CUBES[cube][0]), np.array(CUBES[cube][0]) * 0.7, *others])
    h, w = frames.shape[1:3]
    out: list[tuple | None] = []
    for frame in frames.astype(np.float32):
        nearest = np.linalg.norm(frame[..., None, :] - palette, axis=-1).argmin(-1)
        ys, xs = np.nonzero(nearest < 2)
        out.append((float(ys.mean() + 0.5) / h, float(xs.mean() + 0.5) / w) if len(ys) else None)
    return out


def _write_split(
    out: Path, items: list[tuple[str, str]], frames: dict[str, np.ndarray], encoder, fps: float
) -> None:
    from framework.data.video import write_video
    from framework.models.text import embedding_to_pickle

    for sub in ("videos", "metas", "t5_xxl"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    lines = ["video,prompt"]
    emb, lengths = encoder.encode([text for _, text in items])
    for i, (stem, text) in enumerate(items):
        write_video(out / "videos" / f"{stem}.mp4", frames[stem], fps=fps)
        (out / "metas" / f"{stem}.txt").write_text(text)
        embedding_to_pickle(emb[i], int(lengths[i]), out / "t5_xxl" / f"{stem}.pickle")
        lines.append(f"{stem}.mp4,{text}")
    (out / "metadata.csv").write_text("\n".join(lines) + "\n")


def generate(
    path: str | Path,
    num_videos: int = 24,
    num_frames: int = 33,
    size: int = 64,
    fps: float = 16.0,
    seed: int = 0,
    num_val: int = 4,
    texture: float = 0.0,
) -> Path:
    """Write the dataset into `path` (see the module docstring for the layout)."""
    from data_prep.small_t5 import make_small_t5
    from framework.models.text import T5TextEncoder

    if size % 2 or size < 16:
        raise ValueError(f"size {size} must be even and >= 16 (H.264 yuv420p)")
    path = Path(path)
    rng = np.random.default_rng(seed)
    order = [tasks()[i] for i in rng.permutation(len(tasks()))]
    splits: dict[str, list[tuple[str, str]]] = {"train": [], "val": []}
    frames: dict[str, np.ndarray] = {}
    for split, n in (("train", num_videos), ("val", num_val)):
        for i in range(n):
            task = order[i % len(order)]
            stem = f"{split}_{i:04d}_{task[0]}_to_{task[1]}"
            frames[stem] = render_video(task, num_frames, size, rng, texture=texture)
            splits[split].append((stem, caption(task[0], task[1])))
    texts = [caption(c, t) for c, t, _ in tasks()]
    encoder_dir = make_small_t5(texts, path / "text_encoder", seed=seed)
    encoder = T5TextEncoder(encoder_dir, device="cpu")
    _write_split(path, splits["train"], frames, encoder, fps)
    if num_val:
        _write_split(path / "val", splits["val"], frames, encoder, fps)
    return path


def ensure_synthetic_dataset(path: str | Path, **kw) -> Path:
    """Create the synthetic dataset at `path` unless a complete one with these parameters exists.

    Safe when several ranks call it at once: each builds in a private temporary folder and the
    first to finish renames it into place.
    """
    path = Path(path)
    params = {
        "num_videos": 24,
        "num_frames": 33,
        "size": 64,
        "fps": 16.0,
        "seed": 0,
        "num_val": 4,
        "texture": 0.0,
        **kw,
    }
    marker = path / "synthetic.json"
    if marker.is_file():
        have = json.loads(marker.read_text())
        if have != {**params, "render_version": RENDER_VERSION}:
            raise FileExistsError(
                f"{path} holds a synthetic dataset made with {have}, not {params} by render "
                f"version {RENDER_VERSION}; delete it (rm -rf {path}; it is rebuilt on the next "
                "run) or choose another path"
            )
        return path
    if path.exists() and any(path.iterdir()):
        raise FileExistsError(
            f"{path} exists but is not a complete synthetic dataset; "
            "delete it or choose another path"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}-{time.time_ns()}"
    generate(tmp, **params)
    stored = {**params, "render_version": RENDER_VERSION}
    (tmp / "synthetic.json").write_text(json.dumps(stored, indent=2))
    try:
        if path.exists():
            path.rmdir()  # empty folder left by the user or another rank's failed run
        tmp.rename(path)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)  # another rank finished first
        if not marker.is_file():
            raise
    return path


@cli
def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m data_prep.synthetic",
        description="Write a small synthetic pick-and-place dataset in the GR1 layout (videos/, "
        "metas/, t5_xxl/, metadata.csv, val/, text_encoder/). Skips the work if DIR already "
        "holds a complete dataset with the same parameters.",
    )
    p.add_argument("dir", help="output folder, e.g. datasets/synthetic")
    p.add_argument("--num_videos", type=int, default=24, help="training videos (default 24)")
    p.add_argument("--num_val", type=int, default=4, help="held-out videos in DIR/val (default 4)")
    p.add_argument("--num_frames", type=int, default=33, help="frames per video (default 33)")
    p.add_argument("--size", type=int, default=64, help="frame height = width, even (default 64)")
    p.add_argument("--fps", type=float, default=16.0, help="frame rate (default 16)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--texture",
        type=float,
        default=0.0,
        help="std of a static grain on the table, 0-255 scale (default 0: plain)",
    )
    a = p.parse_args(argv)
    limits = [
        (a.num_videos >= 1, "--num_videos must be at least 1"),
        (a.num_val >= 0, "--num_val must be 0 or more"),
        (a.num_frames >= 2, "--num_frames must be at least 2"),
        (a.size >= 16 and a.size % 2 == 0, "--size must be an even number >= 16"),
        (a.fps > 0, "--fps must be positive"),
        (a.texture >= 0, "--texture must be 0 or more"),
    ]
    for ok, message in limits:
        if not ok:
            raise UserError(message)
    try:
        out = ensure_synthetic_dataset(
            a.dir,
            num_videos=a.num_videos,
            num_frames=a.num_frames,
            size=a.size,
            fps=a.fps,
            seed=a.seed,
            num_val=a.num_val,
            texture=a.texture,
        )
    except FileExistsError as err:
        raise UserError(str(err)) from None
    print(f"synthetic dataset ready at {out}")


if __name__ == "__main__":
    sys.exit(main())
