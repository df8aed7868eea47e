"""Write the synthetic pick-and-place episodes (data_prep/synthetic.py) as a LeRobot dataset with
ground-truth actions: what action-conditioned CPU tests and the tiny action jobs train on.

Per episode: two cameras, `top` (the synthetic.py rendering) and `front` (the same scene seen from
the opposite table edge: the top view flipped upside down, a second viewpoint at no rendering
cost); `observation.state` float32 [T, 3] = the gripper's (y, x) in frame fractions and its finger
opening in [0, 1]; `action` float32 [T, 3] = state t+1 - state t (zeros at the last frame); the
task is the synthetic caption. Plus the small T5 that embeds the captions (`text_encoder/`) and
one pickle per task in `t5_xxl/task_<k>.pickle`, the layout LeRobotDataset(text="t5") reads, and
`synthetic.json` (parameters; written last, so its presence means complete).

    python -m data_prep.synthetic_lerobot datasets/synthetic_lerobot --version v2.1
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from data_prep.common import UserError, cli

MARKER = "synthetic.json"
# Bump when the episodes or the layout change: older folders are refused. 2: modality.json marks
# the actions relative (per-frame deltas), so a frame stride sums them.
RENDER_VERSION = 2
DEFAULTS = {
    "num_episodes": 24,
    "num_frames": 33,
    "size": 64,
    "fps": 16,
    "seed": 0,
    "version": "v2.1",
    "codec": "h264",
    "num_val": 0,  # the last episodes form info.json's "val" split (held-out items)
}


def generate(path: str | Path, **params) -> Path:
    """Write the dataset into `path` (which must not exist or be empty)."""
    from data_prep.small_t5 import make_small_t5
    from data_prep.synthetic import caption, gripper_actions, render_episode, tasks
    from framework.data.lerobot import task_embedding_path
    from framework.data.lerobot_writer import Episode, write_lerobot
    from framework.models.text import T5TextEncoder, embedding_to_pickle

    p = {**DEFAULTS, **params}
    rng = np.random.default_rng(p["seed"])
    order = [tasks()[i] for i in rng.permutation(len(tasks()))]
    episodes = []
    for i in range(p["num_episodes"]):
        task = order[i % len(order)]
        frames, state = render_episode(task, p["num_frames"], p["size"], rng)
        episodes.append(
            Episode(
                {"top": frames, "front": np.ascontiguousarray(frames[:, ::-1])},
                task=caption(task[0], task[1]),
                actions=gripper_actions(state),
                state=state,
            )
        )
    names = {"observation.state": ["y", "x", "opening"], "action": ["dy", "dx", "dopening"]}
    n, val = p["num_episodes"], p["num_val"]
    splits = {"train": f"0:{n - val}", "val": f"{n - val}:{n}"} if val else None
    path = write_lerobot(
        path,
        episodes,
        p["fps"],
        p["version"],
        p["codec"],
        "synthetic_gripper",
        names=names,
        splits=splits,
        absolute_actions=False,  # state t+1 - state t
    )
    tasks_in_order = list(dict.fromkeys(e.task for e in episodes))  # task_index order
    texts = [caption(c, t) for c, t, _ in tasks()]
    encoder_dir = make_small_t5(texts, path / "text_encoder", seed=p["seed"])
    emb, lengths = T5TextEncoder(encoder_dir, device="cpu").encode(tasks_in_order)
    for k in range(len(tasks_in_order)):
        out = task_embedding_path(path, k)
        out.parent.mkdir(parents=True, exist_ok=True)
        embedding_to_pickle(emb[k], int(lengths[k]), out)
    return path


def ensure_synthetic_lerobot(path: str | Path, **params) -> Path:
    """Build the set at `path` unless a complete one with these parameters is there; refuses a
    folder made with other parameters and a non-empty one without synthetic.json. Concurrent
    callers each build in a hidden folder and the first rename wins."""
    from framework.io import atomic_write_text

    unknown = sorted(set(params) - set(DEFAULTS))
    if unknown:
        raise TypeError(
            f"unknown synthetic LeRobot parameters {unknown}; known: {sorted(DEFAULTS)}"
        )
    want = {"layout": "lerobot", **DEFAULTS, **params, "render_version": RENDER_VERSION}
    if not want["num_val"]:  # folders written before the val split existed stay valid
        del want["num_val"]
    path = Path(path)
    if (path / MARKER).is_file():
        have = json.loads((path / MARKER).read_text())
        if have != want:
            raise FileExistsError(
                f"{path} holds a synthetic dataset made with {have}, not {want}; delete it "
                f"(rm -rf {path}) or choose another path"
            )
        return path
    if path.is_dir() and any(path.iterdir()):
        raise FileExistsError(f"{path} exists without {MARKER}; delete it or choose another path")
    staging = path.with_name(f".{path.name}.building-{os.getpid()}-{time.time_ns()}")
    try:
        generate(staging, **params)
        atomic_write_text(staging / MARKER, json.dumps(want, indent=2))
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_dir():
            path.rmdir()
        os.rename(staging, path)
    except OSError:
        if not (path / MARKER).is_file():
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return path


def synthetic_lerobot_dataset(
    dataset_dir: str | Path,
    num_episodes: int = 24,
    source_frames: int = 33,
    size: int = 64,
    version: str = "v2.1",
    codec: str = "h264",
    seed: int = 0,
    num_val: int = 0,
    **dataset_kw,
):
    """A LeRobotDataset of `dataset_dir`, writing the synthetic set there first (one writer per
    node; the other ranks wait for its marker). `dataset_kw` go to LeRobotDataset (camera,
    num_frames, video_size, action_key, state_key, action_norm, text, ...)."""
    from framework.data.lerobot import LeRobotDataset
    from framework.trainer.dist import local_rank

    root = Path(dataset_dir)
    if local_rank() != 0:
        deadline = time.monotonic() + 900
        while not (root / MARKER).is_file() and time.monotonic() < deadline:
            time.sleep(1)
    ensure_synthetic_lerobot(
        root,
        num_episodes=num_episodes,
        num_frames=source_frames,
        size=size,
        version=version,
        codec=codec,
        seed=seed,
        num_val=num_val,
    )
    return LeRobotDataset(root, **dataset_kw)


@cli
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m data_prep.synthetic_lerobot",
        description="Write the synthetic pick-and-place episodes as a LeRobot dataset with "
        "ground-truth gripper actions, two cameras and per-task T5 pickles.",
    )
    p.add_argument("dir", help="output folder, e.g. datasets/synthetic_lerobot")
    p.add_argument("--num_episodes", type=int, default=24)
    p.add_argument("--num_frames", type=int, default=33, help="frames per episode (default 33)")
    p.add_argument("--size", type=int, default=64, help="frame height = width, even (default 64)")
    p.add_argument("--fps", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--version", choices=("v2.1", "v3.0"), default="v2.1")
    p.add_argument("--codec", choices=("h264", "av1"), default="h264")
    p.add_argument("--num_val", type=int, default=0, help="last episodes as the val split")
    a = p.parse_args(argv)
    if not 0 <= a.num_val < a.num_episodes:
        raise UserError("use 0 <= --num_val < --num_episodes")
    if a.num_episodes < 1 or a.num_frames < 2 or a.size < 16 or a.size % 2 or a.fps < 1:
        raise UserError(
            "use --num_episodes >= 1, --num_frames >= 2, an even --size >= 16 and --fps >= 1"
        )
    params = {k: getattr(a, k) for k in DEFAULTS}
    try:
        out = ensure_synthetic_lerobot(a.dir, **params)
    except FileExistsError as err:
        raise UserError(str(err)) from None
    print(f"synthetic LeRobot dataset ready at {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
