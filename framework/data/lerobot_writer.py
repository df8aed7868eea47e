"""Write episodes (frames per camera, task text, optional actions and state) as a LeRobot dataset.

v2.1 is what GR00T policy training reads after DreamGen (plus meta/modality.json); v3.0 is what
current `lerobot` reads (lerobot_format.md §2-4, §7). Differences from DreamGen's converter, on
purpose (§5 quirks): `codebase_version` is set, `fps` matches the timestamps (i / fps),
`frame_index` is written, and annotation columns are scalar int64 as their features say.

Videos are encoded with PyAV: "h264" (libx264) or "av1" (libsvtav1, LeRobot's default), yuv420p,
a keyframe every `gop` frames (2, LeRobot's default: any frame is 1 decode away). v3 puts
`episodes_per_file` consecutive episodes in one data parquet and one mp4 per camera, each
episode at its `from_timestamp` in it.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from framework.data.action_norm import feature_stats
from framework.data.lerobot_meta import CAMERA_PREFIX, GR00T_TASK_COLUMN

CODECS = {"h264": ("libx264", 18), "av1": ("libsvtav1", 30)}  # name -> (encoder, default crf)
V2_DATA = "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet"
V2_VIDEO = "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4"
V3_DATA = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
V3_VIDEO = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
CHUNKS_SIZE = 1000
INT_COLUMNS = ("frame_index", "episode_index", "index", "task_index")


@dataclass
class Episode:
    """One episode to write: uint8 [T,H,W,3] frames (or an mp4 to decode) per camera name."""

    videos: dict[str, np.ndarray | str | Path]
    task: str
    actions: np.ndarray | None = None  # [T, A]; rows are per frame, as LeRobot stores them
    state: np.ndarray | None = None  # [T, S]


def _frames(source: np.ndarray | str | Path) -> np.ndarray:
    if isinstance(source, np.ndarray):
        return source
    from framework.data.video import ClipReader

    with ClipReader(source) as reader:
        return reader.read(0, reader.num_frames)


def encode(path: Path, clips: Iterable[np.ndarray], fps: float, codec: str, crf: int, gop: int):
    """Encode uint8 [T,H,W,3] arrays, one after the other, into one mp4 (frame pts = i)."""
    import itertools

    import av

    encoder, _ = CODECS[codec]
    if codec == "av1":
        os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 prints its whole config otherwise
    clips = iter(clips)
    first = next(clips)
    h, w = first.shape[1:3]
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(encoder, rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"crf": str(crf), "g": str(gop)}
        if codec == "h264":
            stream.options["preset"] = "veryfast"
        for clip in itertools.chain([first], clips):
            for img in clip:
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
                container.mux(stream.encode(frame))
        container.mux(stream.encode())


def _pixel_moments(frames: np.ndarray) -> np.ndarray:
    """[5, 3] per channel on [0, 1]: min, max, pixel count, sum, sum of squares (summable)."""
    x = frames.reshape(-1, 3).astype(np.float64) / 255.0
    return np.stack([x.min(0), x.max(0), np.full(3, len(x)), x.sum(0), (x**2).sum(0)])


def _image_stats(moments: list[np.ndarray], num_frames: int) -> dict[str, Any]:
    """Per-channel stats, shaped (3, 1, 1) as LeRobot stores them, from episodes' moments."""
    m = np.stack(moments)
    n, total, squares = m[:, 2].sum(0), m[:, 3].sum(0), m[:, 4].sum(0)
    mean = total / n
    shape = lambda v: [[[float(c)]] for c in v]  # noqa: E731
    return {
        "min": shape(m[:, 0].min(0)),
        "max": shape(m[:, 1].max(0)),
        "mean": shape(mean),
        "std": shape(np.sqrt(np.maximum(squares / n - mean**2, 0.0))),
        "count": [int(num_frames)],
    }


def _table(columns: dict[str, np.ndarray]):
    import pyarrow as pa

    arrays, names = [], []
    for name, values in columns.items():
        if values.ndim == 2:  # a vector per frame: fixed_size_list<float32>[D], LeRobot's layout
            flat = pa.array(values.astype(np.float32).reshape(-1))
            arrays.append(pa.FixedSizeListArray.from_arrays(flat, values.shape[1]))
        else:
            arrays.append(pa.array(values))
        names.append(name)
    return pa.Table.from_arrays(arrays, names=names)


class _Plan:
    """What the writer derives from the episodes before writing anything."""

    def __init__(self, episodes: Sequence[Episode], fps: float) -> None:
        if not episodes:
            raise ValueError("no episodes to write")
        self.cameras = list(episodes[0].videos)
        self.tasks: dict[str, int] = {}
        self.columns: list[dict[str, np.ndarray]] = []
        # Frames are decoded here for their size and statistics and again when written, so only
        # one episode's frames are in memory at a time (generated batches can be many GB).
        self.sources = [ep.videos for ep in episodes]
        self.shapes: dict[str, tuple[int, int]] = {}
        self.moments: list[dict[str, np.ndarray]] = []
        index = 0
        for e, ep in enumerate(episodes):
            if list(ep.videos) != self.cameras:
                raise ValueError(f"episode {e} has cameras {list(ep.videos)}, not {self.cameras}")
            frames = {cam: _frames(src) for cam, src in ep.videos.items()}
            t = len(frames[self.cameras[0]])
            for name, arr in [*frames.items(), ("actions", ep.actions), ("state", ep.state)]:
                if arr is not None and len(arr) != t:
                    raise ValueError(f"episode {e}: {name} has {len(arr)} rows, the video {t}")
            for cam, f in frames.items():
                if self.shapes.setdefault(cam, f.shape[1:3]) != f.shape[1:3]:
                    raise ValueError(
                        f"episode {e}: {cam} is {f.shape[1:3]}, not {self.shapes[cam]}"
                    )
            self.moments.append({cam: _pixel_moments(f) for cam, f in frames.items()})
            task = self.tasks.setdefault(ep.task, len(self.tasks))
            cols: dict[str, np.ndarray] = {}
            if ep.state is not None:
                cols["observation.state"] = np.asarray(ep.state, np.float32).reshape(t, -1)
            if ep.actions is not None:
                cols["action"] = np.asarray(ep.actions, np.float32).reshape(t, -1)
            cols["timestamp"] = (np.arange(t) / fps).astype(np.float32)
            cols["frame_index"] = np.arange(t, dtype=np.int64)
            cols["episode_index"] = np.full(t, e, dtype=np.int64)
            cols["index"] = np.arange(index, index + t, dtype=np.int64)
            cols["task_index"] = np.full(t, task, dtype=np.int64)
            cols[GR00T_TASK_COLUMN] = cols["task_index"].copy()
            index += t
            self.columns.append(cols)
        keys = [list(c) for c in self.columns]
        if any(k != keys[0] for k in keys):
            raise ValueError("every episode needs actions (and state) or none does")
        self.total_frames = index

    def episode_stats(self, e: int) -> dict[str, Any]:
        stats = {k: feature_stats(v.reshape(len(v), -1)) for k, v in self.columns[e].items()}
        for k in stats:  # q01/q99 only in the global stats (GR00T's), as LeRobot's episodes
            stats[k] = {s: v for s, v in stats[k].items() if s not in ("q01", "q99")}
        t = len(self.columns[e]["timestamp"])
        for cam, moments in self.moments[e].items():
            stats[CAMERA_PREFIX + cam] = _image_stats([moments], t)
        return stats

    def frames(self, e: int, cam: str) -> np.ndarray:
        return _frames(self.sources[e][cam])

    def global_stats(self) -> dict[str, Any]:
        out = {
            k: feature_stats(np.concatenate([c[k].reshape(len(c[k]), -1) for c in self.columns]))
            for k in self.columns[0]
        }
        for cam in self.cameras:
            moments = [m[cam] for m in self.moments]
            out[CAMERA_PREFIX + cam] = _image_stats(moments, self.total_frames)
        return out


def _features(plan: _Plan, fps: float, codec: str, names: dict[str, list[str] | None]) -> dict:
    features: dict[str, Any] = {}
    for cam in plan.cameras:
        h, w = plan.shapes[cam]
        features[CAMERA_PREFIX + cam] = {
            "dtype": "video",
            "shape": [h, w, 3],
            "names": ["height", "width", "channels"],
            "info": {
                "video.fps": fps,
                "video.height": h,
                "video.width": w,
                "video.channels": 3,
                "video.codec": codec,
                "video.pix_fmt": "yuv420p",
                "video.is_depth_map": False,
                "has_audio": False,
            },
        }
    for key, values in plan.columns[0].items():
        if values.ndim == 2:
            dim = values.shape[1]
            features[key] = {
                "dtype": "float32",
                "shape": [dim],
                "names": names.get(key) or [f"motor_{i}" for i in range(dim)],
            }
        else:
            dtype = "float32" if key == "timestamp" else "int64"
            features[key] = {"dtype": dtype, "shape": [1], "names": None}
    return features


def _modality(plan: _Plan, absolute_actions: bool = True) -> dict:
    """GR00T's meta/modality.json for one state and one action vector (lerobot_format.md §4.1);
    relative (per-frame delta) actions are marked `"absolute": false`, GR00T's flag."""
    cols = plan.columns[0]
    out: dict[str, Any] = {}
    for group, key in (("state", "observation.state"), ("action", "action")):
        if key in cols:
            out[group] = {group: {"start": 0, "end": int(cols[key].shape[1])}}
    if "action" in out and not absolute_actions:
        out["action"]["action"]["absolute"] = False
    out["video"] = {cam: {"original_key": CAMERA_PREFIX + cam} for cam in plan.cameras}
    out["annotation"] = {GR00T_TASK_COLUMN.removeprefix("annotation."): {}}
    return out


def write_lerobot(
    root: str | Path,
    episodes: Sequence[Episode],
    fps: float,
    version: str = "v2.1",
    codec: str = "h264",
    robot_type: str = "unknown",
    episodes_per_file: int = 1,
    names: dict[str, list[str]] | None = None,
    crf: int | None = None,
    gop: int = 2,
    splits: dict[str, str] | None = None,
    absolute_actions: bool = True,
) -> Path:
    """Write `episodes` as a LeRobot `version` ("v2.1" or "v3.0") dataset at `root`, which must
    not exist or be empty; built in a hidden folder beside it and renamed into place. `names`:
    per-dimension names of "action" / "observation.state" (default motor_i). `splits`: info.json's
    episode ranges ({"train": "0:40", "val": "40:44"}; default every episode in "train").
    `absolute_actions=False`: the actions are per-frame deltas (modality.json says so; a reader
    with a frame stride sums them)."""
    if version not in ("v2.1", "v3.0") or codec not in CODECS:
        raise ValueError(f"version {version!r} / codec {codec!r}: use v2.1|v3.0 and {list(CODECS)}")
    root = Path(root)
    if root.exists() and any(root.iterdir()):
        raise FileExistsError(f"{root} is not empty; choose a new folder for the LeRobot dataset")
    if float(fps) != int(fps):
        raise ValueError(f"fps {fps} must be a whole number (LeRobot stores an int)")
    fps = int(fps)
    plan = _Plan(episodes, fps)
    staging = root.with_name(f".{root.name}.writing-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    crf = CODECS[codec][1] if crf is None else crf
    try:
        if version == "v2.1":
            _write_v21(staging, plan, fps, codec, crf, gop)
        else:
            _write_v30(staging, plan, fps, codec, crf, gop, max(1, episodes_per_file))
        info = {
            "codebase_version": version,
            "robot_type": robot_type,
            "total_episodes": len(episodes),
            "total_frames": plan.total_frames,
            "total_tasks": len(plan.tasks),
            "chunks_size": CHUNKS_SIZE,
            "fps": fps,
            "splits": splits or {"train": f"0:{len(episodes)}"},
            "data_path": V2_DATA if version == "v2.1" else V3_DATA,
            "video_path": V2_VIDEO if version == "v2.1" else V3_VIDEO,
            "features": _features(plan, fps, codec, names or {}),
        }
        if version == "v2.1":
            info["total_videos"] = len(episodes) * len(plan.cameras)
            info["total_chunks"] = (len(episodes) - 1) // CHUNKS_SIZE + 1
        else:
            info["data_files_size_in_mb"], info["video_files_size_in_mb"] = 100, 200
        _json(staging / "meta" / "info.json", info)
        _json(staging / "meta" / "stats.json", plan.global_stats())
        _json(staging / "meta" / "modality.json", _modality(plan, absolute_actions))
        if root.exists():
            root.rmdir()
        root.parent.mkdir(parents=True, exist_ok=True)
        os.rename(staging, root)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return root


def _json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=4))


def _jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _write_v21(root: Path, plan: _Plan, fps: int, codec: str, crf: int, gop: int) -> None:
    import pyarrow.parquet as pq

    episodes, stats = [], []
    for e, cols in enumerate(plan.columns):
        chunk = e // CHUNKS_SIZE
        data = root / V2_DATA.format(episode_chunk=chunk, episode_index=e)
        data.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(_table(cols), data)
        for cam in plan.cameras:
            key = CAMERA_PREFIX + cam
            video = root / V2_VIDEO.format(episode_chunk=chunk, video_key=key, episode_index=e)
            encode(video, [plan.frames(e, cam)], fps, codec, crf, gop)
        task = next(t for t, i in plan.tasks.items() if i == int(cols["task_index"][0]))
        episodes.append({"episode_index": e, "tasks": [task], "length": len(cols["timestamp"])})
        stats.append({"episode_index": e, "stats": plan.episode_stats(e)})
    _jsonl(root / "meta" / "episodes.jsonl", episodes)
    _jsonl(root / "meta" / "episodes_stats.jsonl", stats)
    tasks = [{"task_index": i, "task": t} for t, i in plan.tasks.items()]
    _jsonl(root / "meta" / "tasks.jsonl", tasks)


def _tasks_parquet(path: Path, tasks: dict[str, int]) -> None:
    """meta/tasks.parquet as pandas writes LeRobot's frame: task_index column, indexed by task
    (the index stored as the column "task" plus the pandas metadata that names it the index)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"task_index": list(tasks.values()), "task": list(tasks)})
    pandas_meta = {
        "index_columns": ["task"],
        "column_indexes": [
            {
                "name": None,
                "field_name": None,
                "pandas_type": "unicode",
                "numpy_type": "object",
                "metadata": {"encoding": "UTF-8"},
            }
        ],
        "columns": [
            {
                "name": "task_index",
                "field_name": "task_index",
                "pandas_type": "int64",
                "numpy_type": "int64",
                "metadata": None,
            },
            {
                "name": "task",
                "field_name": "task",
                "pandas_type": "unicode",
                "numpy_type": "object",
                "metadata": None,
            },
        ],
        "creator": {"library": "pyarrow", "version": pa.__version__},
        "pandas_version": "2.2.3",
    }
    table = table.replace_schema_metadata({"pandas": json.dumps(pandas_meta)})
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)


def _write_v30(
    root: Path, plan: _Plan, fps: int, codec: str, crf: int, gop: int, per_file: int
) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows: list[dict[str, Any]] = []
    n = len(plan.columns)
    for first in range(0, n, per_file):
        group = range(first, min(first + per_file, n))
        f = first // per_file
        where = {"chunk_index": f // CHUNKS_SIZE, "file_index": f % CHUNKS_SIZE}
        data = root / V3_DATA.format(**where)
        data.parent.mkdir(parents=True, exist_ok=True)
        cols = plan.columns
        merged = {k: np.concatenate([cols[e][k] for e in group]) for k in cols[first]}
        pq.write_table(_table(merged), data)
        for cam in plan.cameras:
            video = root / V3_VIDEO.format(video_key=CAMERA_PREFIX + cam, **where)
            encode(video, (plan.frames(e, cam) for e in group), fps, codec, crf, gop)
        offset = 0
        for e in group:
            t = len(cols[e]["timestamp"])
            task = next(k for k, i in plan.tasks.items() if i == int(cols[e]["task_index"][0]))
            row: dict[str, Any] = {
                "episode_index": e,
                "tasks": [task],
                "length": t,
                "data/chunk_index": where["chunk_index"],
                "data/file_index": where["file_index"],
                "dataset_from_index": int(cols[e]["index"][0]),
                "dataset_to_index": int(cols[e]["index"][0]) + t,
            }
            for cam in plan.cameras:
                key = f"videos/{CAMERA_PREFIX}{cam}"
                row[f"{key}/chunk_index"] = where["chunk_index"]
                row[f"{key}/file_index"] = where["file_index"]
                row[f"{key}/from_timestamp"] = offset / fps
                row[f"{key}/to_timestamp"] = (offset + t) / fps
            row["meta/episodes/chunk_index"], row["meta/episodes/file_index"] = 0, 0
            for feature, stats in plan.episode_stats(e).items():
                for stat, value in stats.items():
                    row[f"stats/{feature}/{stat}"] = value
            rows.append(row)
            offset += t
    table = pa.Table.from_pylist(rows)
    path = root / "meta" / "episodes" / "chunk-000" / "file-000.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    _tasks_parquet(root / "meta" / "tasks.parquet", plan.tasks)
