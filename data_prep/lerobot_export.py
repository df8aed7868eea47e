"""Turn generated videos (and, where given, their actions) into a LeRobot dataset (DreamGen's step
3): the format GR00T policy training reads (v2.1 + meta/modality.json; --version v3.0 for
`lerobot`).

    python -m data_prep.lerobot_export --batch_json batch_input.json --output datasets/dream_gr1
    python -m data_prep.lerobot_export --videos results/gr1/ --actions results/gr1_actions/ \\
        --output datasets/dream_gr1 --fps 16 --camera ego_view --codec av1

Episodes: with --batch_json, each entry's `output_video` with its `prompt` as the task (the batch
file `make generate` / data_prep.dreamgen use); with --videos, every *.mp4 in sorted order, the
task from `<stem>.txt` beside it or else, as DreamGen's split_video_instruction.py, the file name
without a leading `<digits>_`, underscores as spaces. --actions DIR: `<stem>.npy` float [T, A] per
video (every video needs one), written as `action` rows; without it no action column is written
(DreamGen's IDM step adds it; --placeholder_action_dim D writes zeros as DreamGen's converter
does). The output folder must not exist or be empty; it is built beside it and renamed into place.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np

from data_prep.common import UserError, cli, parser


def _task_of(video: Path) -> str:
    meta = video.with_suffix(".txt")
    if meta.is_file():
        return meta.read_text(encoding="utf-8").strip()
    return re.sub(r"^\d+_", "", video.stem).replace("_", " ").strip()


def collect(a) -> list[tuple[Path, str]]:
    """(video, task) pairs from --batch_json or --videos."""
    if a.batch_json:
        try:
            entries = json.loads(Path(a.batch_json).read_text(encoding="utf-8"))
            pairs = [(Path(e["output_video"]), str(e["prompt"])) for e in entries]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise UserError(
                f"{a.batch_json} is not a batch JSON list of {{output_video, prompt}} ({err}); "
                "pass the file given to video2world --batch_input_json"
            ) from None
    else:
        pairs = [(v, _task_of(v)) for v in sorted(Path(a.videos).glob("*.mp4"))]
    if not pairs:
        raise UserError(f"no videos found in {a.batch_json or a.videos}; generate them first")
    missing = [str(v) for v, _ in pairs if not v.is_file()]
    if missing:
        raise UserError(f"{len(missing)} videos do not exist (e.g. {missing[0]}); generate them")
    return pairs


def load_actions(directory: Path, videos: list[Path]) -> list[np.ndarray]:
    out = []
    for video in videos:
        path = directory / f"{video.stem}.npy"
        if not path.is_file():
            raise UserError(f"{path} does not exist; --actions needs <stem>.npy for every video")
        try:
            arr = np.load(path, allow_pickle=False)  # no pickled objects: data files run no code
        except (OSError, ValueError) as err:
            raise UserError(
                f"{path} is not a plain .npy array ({err}); save a float [T, A] array"
            ) from None
        if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.floating):
            raise UserError(
                f"{path} holds {arr.dtype} {list(arr.shape)}; save a float [T, A] array"
            )
        out.append(arr.astype(np.float32))
    return out


@cli
def main(argv: list[str] | None = None) -> int:
    p = parser("lerobot_export", __doc__)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--batch_json", help="batch JSON [{input_video, prompt, output_video}]")
    src.add_argument("--videos", help="folder of generated *.mp4")
    p.add_argument("--output", required=True, help="the LeRobot folder to create")
    p.add_argument("--actions", type=Path, help="folder of <stem>.npy actions [T, A]")
    p.add_argument("--placeholder_action_dim", type=int, help="zeros [T, D] when no --actions")
    p.add_argument("--fps", type=int, help="frame rate (default: the first video's, rounded)")
    p.add_argument("--camera", default="ego_view", help="camera name (default ego_view, GR1's)")
    p.add_argument("--version", choices=("v2.1", "v3.0"), default="v2.1")
    p.add_argument("--codec", choices=("h264", "av1"), default="h264")
    p.add_argument("--robot_type", default="dream", help="info.json robot_type (DreamGen: dream)")
    a = p.parse_args(argv)
    from framework.data.lerobot_writer import Episode, write_lerobot
    from framework.data.video import VideoError, probe_video

    pairs = collect(a)
    videos = [v for v, _ in pairs]
    actions = load_actions(a.actions, videos) if a.actions else [None] * len(videos)
    try:
        infos = [probe_video(v) for v in videos]
    except VideoError as err:
        raise UserError(str(err)) from None
    if a.placeholder_action_dim and not a.actions:
        actions = [np.zeros((i.num_frames, a.placeholder_action_dim), np.float32) for i in infos]
    fps = a.fps or round(infos[0].fps)
    episodes = [
        Episode({a.camera: video}, task=task, actions=act)
        for (video, task), act in zip(pairs, actions)
    ]
    try:
        out = write_lerobot(a.output, episodes, fps, a.version, a.codec, a.robot_type)
    except (ValueError, FileExistsError) as err:
        raise UserError(f"{err}; fix the inputs or flags and re-run") from None
    print(f"wrote {len(episodes)} episodes ({a.version}, {a.codec}, {fps} fps) to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
