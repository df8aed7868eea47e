"""Write a small synthetic dataset in the Bridge layout (tests; the CPU job `tiny_bridge`).

Top-down table: a two-link robot arm hangs from the top edge; in each episode its gripper reaches
a coloured block at one of four places (left, right, front, back), closes, carries it to another
place, opens and pulls back. The instruction names the block and the target place ("move the red
block to the left"), and the first frame shows where the block starts, so instruction plus first
frame fix the motion up to a small per-episode jitter. Everything is drawn large (block 0.18 of
the height, links 0.12-0.14 wide) so it stays 4+ pixels wide at 24x30.

Layout written to DIR (docs/upstream/cosmos_predict1.md §2.1, plus two extras):
  annotation/{train,val}/<i>.json    episode_id, texts, videos[0].video_path, state (per frame:
                                     gripper x, y, z, roll, pitch, yaw), continuous_gripper_state
                                     (the finger opening: 1 open, 0 closed, the reverse of real
                                     Bridge's); upstream's action recipe computes ground-truth
                                     actions from these two (framework/data/bridge_actions.py)
  annotation/{train,val}/<i>.pickle  T5 embedding of texts[0] (official format, §2.8)
  videos/{train,val}/<i>/rgb.mp4     H.264, `size` (H, W) default 64x80 (256x320's 4:5), 4 fps
  text_encoder/                      the small random T5 that made the pickles (small_t5.py)
  synthetic.json                     parameters and renderer version; written last

    python -m data_prep.synthetic_bridge datasets/synthetic_bridge --num_videos 24 --num_frames 33
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from data_prep.common import UserError, cli
from data_prep.synthetic import _disc, _lerp, _rect

BLOCKS = {
    "red": (220, 40, 40),
    "green": (50, 185, 70),
    "blue": (50, 90, 225),
    "yellow": (240, 210, 40),
}
# (y, x) as fractions of the frame height and width; the arm's shoulder is at the top centre.
PLACES = {"left": (0.62, 0.18), "right": (0.62, 0.82), "front": (0.84, 0.50), "back": (0.40, 0.50)}
HOME = (0.16, 0.50)
SHOULDER = (-0.04, 0.50)
LINKS = (0.55, 0.50)  # upper arm, forearm, in frame heights
TABLE = np.array([120, 100, 80], dtype=np.float32)
BLOCK_HALF = 0.09
MARKER = "synthetic.json"
RENDER_VERSION = 1  # bump when the drawing changes: an older folder is then refused, not reused
DEFAULTS = {
    "num_videos": 24,
    "num_frames": 33,
    "size": [64, 80],
    "fps": 4.0,
    "seed": 0,
    "num_val": 4,
    "num_short": 0,
    "short_frames": 16,
}


def instruction(block: str, target: str) -> str:
    return f"move the {block} block to the {target}"


def tasks() -> list[tuple[str, str, str]]:
    """Every (block, start place, target place): 4 x 4 x 3 = 48; 16 different instructions."""
    return [(b, s, t) for b in BLOCKS for s, t in itertools.permutations(PLACES, 2)]


def frame_size(size: int | Sequence[int]) -> tuple[int, int]:
    """(H, W): a pair as given, or a height with the 4:5 aspect of 256x320 (W rounded to even)."""
    if isinstance(size, int):
        return size, 2 * round(size * 5 / 8)
    h, w = (int(v) for v in size)
    return h, w


def _segment(img, yy, xx, a, b, half_width: float, color) -> None:
    """A thick line from a to b (y, x), rounded ends."""
    a, d = np.asarray(a, dtype=np.float32), np.asarray(b, dtype=np.float32) - np.asarray(a)
    u = ((yy - a[0]) * d[0] + (xx - a[1]) * d[1]) / max(float(d @ d), 1e-9)
    u = np.clip(u, 0.0, 1.0)
    img[(yy - a[0] - u * d[0]) ** 2 + (xx - a[1] - u * d[1]) ** 2 <= half_width**2] = color


def elbow(shoulder: np.ndarray, hand: np.ndarray) -> np.ndarray:
    """Where the elbow is when the hand is at `hand` (two-link inverse kinematics, elbow out to
    the right of the shoulder-hand line)."""
    d = hand - shoulder
    dist = float(np.clip(np.hypot(*d), 1e-6, sum(LINKS) - 1e-6))
    along = (dist**2 + LINKS[0] ** 2 - LINKS[1] ** 2) / (2 * dist)
    across = np.sqrt(max(LINKS[0] ** 2 - along**2, 0.0))
    unit = d / dist
    return shoulder + along * unit + across * np.array([-unit[1], unit[0]])


def motion(
    home: np.ndarray, start: np.ndarray, target: np.ndarray, u: float
) -> tuple[np.ndarray, np.ndarray, float]:
    """(hand yx, block yx, finger opening in [0, 1]) at time u in [0, 1] of the episode."""
    if u < 0.3:
        return _lerp(home, start, u / 0.3), start, 1.0
    if u < 0.4:
        return start, start, 1.0 - (u - 0.3) / 0.1
    if u < 0.8:
        hand = _lerp(start, target, (u - 0.4) / 0.4)
        return hand, hand, 0.0
    if u < 0.9:
        return target, target, (u - 0.8) / 0.1
    back = target + (home - target) * 0.35
    return _lerp(target, back, (u - 0.9) / 0.1), target, 1.0


def _to_yx(frac: tuple[float, float], aspect: float) -> np.ndarray:
    """(y, x) in frame fractions -> drawing units (both axes in frame heights: round discs)."""
    return np.array([frac[0], frac[1] * aspect], dtype=np.float64)


def render_episode(
    task: tuple[str, str, str],
    num_frames: int,
    size: int | Sequence[int],
    rng: np.random.Generator,
    jitter: float = 0.03,
) -> tuple[np.ndarray, list[list[float]], list[float]]:
    """(uint8 [T, H, W, 3] frames, per-frame state [x, y, z, roll, pitch, yaw], gripper opening)
    of one episode."""
    block, start_place, target_place = task
    h, w = frame_size(size)
    aspect = w / h
    shoulder, home = _to_yx(SHOULDER, aspect), _to_yx(HOME, aspect)
    start = _to_yx(PLACES[start_place], aspect) + rng.uniform(-jitter, jitter, 2)
    target = _to_yx(PLACES[target_place], aspect) + rng.uniform(-jitter, jitter, 2)
    yy, xx = (np.mgrid[0:h, 0:w].astype(np.float32) + 0.5) / h
    table = np.broadcast_to(TABLE, (h, w, 3)).astype(np.float32)
    colour = np.array(BLOCKS[block], dtype=np.float32)
    frames = np.empty((num_frames, h, w, 3), dtype=np.uint8)
    state, gripper = [], []
    for t in range(num_frames):
        hand, at, opening = motion(home, start, target, t / max(num_frames - 1, 1))
        joint = elbow(shoulder, hand)
        img = table.copy()
        _rect(img, yy, xx, at, BLOCK_HALF, BLOCK_HALF, colour * 0.7)  # edge
        _rect(img, yy, xx, at, BLOCK_HALF - 0.025, BLOCK_HALF - 0.025, colour)
        _segment(img, yy, xx, shoulder, joint, 0.07, (75, 75, 80))
        direction = (hand - joint) / max(np.hypot(*(hand - joint)), 1e-6)
        wrist = hand - direction * (BLOCK_HALF + 0.05)  # the forearm stops short of the block
        _segment(img, yy, xx, joint, wrist, 0.06, (150, 150, 155))
        _disc(img, yy, xx, joint, 0.07, (40, 40, 45))
        side = np.array([-direction[1], direction[0]])
        spread = BLOCK_HALF + 0.03 + 0.06 * opening
        _segment(img, yy, xx, wrist + side * spread, wrist - side * spread, 0.03, (30, 30, 30))
        for s in (-1, 1):
            tip = hand + direction * 0.02 + s * side * spread
            _segment(img, yy, xx, wrist + s * side * spread, tip, 0.03, (30, 30, 30))
        frames[t] = np.clip(img, 0, 255).astype(np.uint8)
        lifted = 0.1 if opening == 0.0 else 0.05
        yaw = float(np.arctan2(direction[1], direction[0]))
        state.append([float(hand[1] / aspect), float(hand[0]), lifted, 0.0, 0.0, yaw])
        gripper.append(float(opening))
    return frames, state, gripper


def track_block(frames: np.ndarray, block: str) -> list[tuple[float, float] | None]:
    """Per frame, the (y, x) centre in frame fractions of the pixels whose nearest scene colour
    is the named block's face; None where there is none (a test of visible motion)."""
    palette = np.stack(
        [
            np.array(BLOCKS[block], dtype=np.float32),
            TABLE,
            *(np.array(c, np.float32) for name, c in BLOCKS.items() if name != block),
            *(np.full(3, v, np.float32) for v in (30, 42, 77, 152)),
        ]
    )
    h, w = frames.shape[1:3]
    track: list[tuple[float, float] | None] = []
    for frame in frames.astype(np.float32):
        nearest = np.linalg.norm(frame[..., None, :] - palette, axis=-1).argmin(-1)
        ys, xs = np.nonzero(nearest == 0)
        track.append((float(ys.mean() + 0.5) / h, float(xs.mean() + 0.5) / w) if len(ys) else None)
    return track


def _episodes(params: dict) -> dict[str, list[tuple[tuple[str, str, str], int]]]:
    """Per split, (task, frame count) of each episode: every task in a seeded order."""
    rng = np.random.default_rng(params["seed"])
    order = [tasks()[i] for i in rng.permutation(len(tasks()))]
    train = [(order[i % len(order)], params["num_frames"]) for i in range(params["num_videos"])]
    train += [
        (order[(params["num_videos"] + i) % len(order)], params["short_frames"])
        for i in range(params["num_short"])
    ]
    val = [(order[i % len(order)], params["num_frames"]) for i in range(params["num_val"])]
    return {"train": train, "val": val}


def generate(path: str | Path, **params) -> Path:
    """Write the dataset into `path` (layout in the module docstring); `params` as DEFAULTS."""
    from data_prep.small_t5 import make_small_t5
    from framework.data.video import write_video
    from framework.io import atomic_write_text
    from framework.models.text import T5TextEncoder, embedding_to_pickle

    params = {**DEFAULTS, **params}
    h, w = frame_size(params["size"])
    if h % 2 or w % 2 or h < 16:
        raise ValueError(f"size {h}x{w} must be even and at least 16 high (H.264 yuv420p)")
    path = Path(path)
    rng = np.random.default_rng(params["seed"] + 1)
    texts = sorted({instruction(b, t) for b, _, t in tasks()})
    encoder = T5TextEncoder(
        make_small_t5(texts, path / "text_encoder", seed=params["seed"]), device="cpu"
    )
    for split, episodes in _episodes(params).items():
        if not episodes:
            continue
        prompts = [instruction(task[0], task[2]) for task, _ in episodes]
        emb, lengths = encoder.encode(prompts)
        for i, (task, num_frames) in enumerate(episodes):
            frames, state, gripper = render_episode(task, num_frames, (h, w), rng)
            video = f"videos/{split}/{i}/rgb.mp4"
            (path / video).parent.mkdir(parents=True, exist_ok=True)
            write_video(path / video, frames, fps=params["fps"])
            ann = {
                "episode_id": i,
                "texts": [prompts[i]],
                "videos": [{"video_path": video}],
                "state": state,
                "continuous_gripper_state": gripper,
                "task": dict(zip(("block", "start", "target"), task)),
            }
            atomic_write_text(path / "annotation" / split / f"{i}.json", json.dumps(ann))
            embedding_to_pickle(
                emb[i], int(lengths[i]), path / "annotation" / split / f"{i}.pickle"
            )
    return path


def ensure_synthetic_bridge(path: str | Path, **params) -> Path:
    """Build the set at `path` unless a complete one with these parameters is there.

    Refuses a folder written with other parameters or by another renderer version (its
    synthetic.json differs) and a non-empty folder without synthetic.json. Safe when several
    processes call it at once: each builds in its own hidden folder beside `path` and renames it
    into place; a process that finds `path` taken by then keeps the winner's set.
    """
    unknown = sorted(set(params) - set(DEFAULTS))
    if unknown:
        raise TypeError(f"unknown synthetic Bridge parameters {unknown}; known: {sorted(DEFAULTS)}")
    params = {**DEFAULTS, **params}
    params["size"] = list(frame_size(params["size"]))
    want = {"layout": "bridge", **params, "render_version": RENDER_VERSION}
    path = Path(path)
    marker = path / MARKER
    if marker.is_file():
        have = json.loads(marker.read_text())
        if have != want:
            raise FileExistsError(
                f"{path} holds a synthetic dataset made with {have}, not {want}; delete it "
                f"(rm -rf {path}; it is rebuilt on the next run) or choose another path"
            )
        return path
    if path.is_dir() and any(path.iterdir()):
        raise FileExistsError(
            f"{path} exists but holds no complete synthetic Bridge set ({MARKER} is missing); "
            "delete it or choose another path"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.building-{os.getpid()}-{time.time_ns()}")
    from framework.io import atomic_write_text

    try:
        generate(staging, **params)
        atomic_write_text(staging / MARKER, json.dumps(want, indent=2))
        if path.is_dir():
            path.rmdir()  # empty: left by the user, or by a process that failed
        os.rename(staging, path)
    except OSError:
        if not marker.is_file():  # nobody else finished first: a real failure
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return path


def synthetic_bridge_dataset(
    dataset_dir: str | Path,
    num_videos: int = 24,
    source_frames: int = 33,
    size: int | Sequence[int] = (64, 80),
    num_val: int = 4,
    num_short: int = 0,
    short_frames: int = 16,
    seed: int = 0,
    actions: bool = False,
    **dataset_kw,
):
    """A BridgeDataset of `dataset_dir`, writing the synthetic set there first when the folder is
    missing or holds a synthetic set (synthetic.json; a stale one is refused). A Bridge folder of
    your own (annotation/ without synthetic.json) is used as it is. `dataset_kw` go to
    BridgeDataset (split, num_frames, video_size, frame_stride, fps, ...). `actions`: a
    BridgeActionDataset instead, the ground-truth actions computed from the hand pose and gripper
    the json records per frame (framework/data/bridge_actions.py); the files are the same."""
    from framework.data.bridge import BridgeDataset
    from framework.data.bridge_actions import BridgeActionDataset
    from framework.trainer.dist import local_rank

    cls = BridgeActionDataset if actions else BridgeDataset
    root = Path(dataset_dir)
    if (root / "annotation").is_dir() and not (root / MARKER).is_file():
        return cls(root, **dataset_kw)
    if local_rank() != 0:
        # One writer per node (two ranks generating at once hung a 2-GPU GR1 run): the others
        # wait for its marker, then check it like rank 0.
        deadline = time.monotonic() + 900
        while not (root / MARKER).is_file() and time.monotonic() < deadline:
            time.sleep(1)
    ensure_synthetic_bridge(
        root,
        num_videos=num_videos,
        num_frames=source_frames,
        size=size,
        num_val=num_val,
        num_short=num_short,
        short_frames=short_frames,
        seed=seed,
    )
    return cls(root, **dataset_kw)


@cli
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m data_prep.synthetic_bridge",
        description="Write a small synthetic robot-arm dataset in the Bridge layout (annotation/"
        "{train,val}/*.json + .pickle, videos/{train,val}/<i>/rgb.mp4, text_encoder/). Reuses DIR "
        "when it already holds a complete set with the same parameters.",
    )
    p.add_argument("dir", help="output folder, e.g. datasets/synthetic_bridge")
    p.add_argument("--num_videos", type=int, default=24, help="training episodes (default 24)")
    p.add_argument("--num_val", type=int, default=4, help="val episodes (default 4)")
    p.add_argument("--num_frames", type=int, default=33, help="frames per episode (default 33)")
    p.add_argument(
        "--num_short", type=int, default=0, help="extra training episodes of --short_frames"
    )
    p.add_argument("--short_frames", type=int, default=16, help="their length (default 16)")
    p.add_argument(
        "--size", type=int, nargs=2, default=[64, 80], metavar=("H", "W"), help="(default 64 80)"
    )
    p.add_argument("--fps", type=float, default=4.0, help="mp4 frame rate (default 4)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    need = []
    if a.num_videos < 1 or a.num_frames < 2:
        need.append("--num_videos >= 1 and --num_frames >= 2")
    if a.num_val < 0 or a.num_short < 0 or (a.num_short and a.short_frames < 1):
        need.append("--num_val, --num_short >= 0 and --short_frames >= 1")
    if a.fps <= 0:
        need.append("--fps > 0")
    if min(a.size) < 16 or a.size[0] % 2 or a.size[1] % 2:
        need.append("--size H W even and >= 16 (H.264 yuv420p)")
    if need:
        raise UserError("a flag is out of range; use " + "; ".join(need))
    try:
        out = ensure_synthetic_bridge(
            a.dir,
            num_videos=a.num_videos,
            num_frames=a.num_frames,
            size=a.size,
            fps=a.fps,
            seed=a.seed,
            num_val=a.num_val,
            num_short=a.num_short,
            short_frames=a.short_frames,
        )
    except FileExistsError as err:
        raise UserError(str(err)) from None
    print(f"synthetic Bridge dataset ready at {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
