"""LeRobot dataset metadata and parquet rows, v2.0/v2.1 and v3.0, with pyarrow only (no `lerobot`).

Layouts (docs/upstream spec lerobot_format.md §2-3):
  v2.x  meta/info.json, meta/episodes.jsonl, meta/tasks.jsonl, [meta/episodes_stats.jsonl,]
        meta/stats.json, data/chunk-{c:03d}/episode_{e:06d}.parquet,
        videos/chunk-{c:03d}/{video_key}/episode_{e:06d}.mp4 (one episode per file)
  v3.0  meta/info.json, meta/stats.json, meta/tasks.parquet, meta/episodes/chunk-*/file-*.parquet
        (one row per episode: its data/video file indices and the episode's time span inside a
        shared mp4), data/chunk-{c:03d}/file-{f:03d}.parquet, videos/{key}/chunk-{c:03d}/file-*.mp4
The version is `codebase_version` in info.json; DreamGen's converter writes none, which is v2.0.
Paths come from info.json's `data_path` / `video_path` templates, as LeRobot and GR00T read them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

CAMERA_PREFIX = "observation.images."
# GR00T-flavour datasets name the instruction per frame in this column (lerobot_format.md §4.1).
GR00T_TASK_COLUMN = "annotation.human.action.task_description"


class LeRobotFormatError(ValueError):
    """A LeRobot folder is missing a file or holds one the reader cannot use."""


@dataclass
class EpisodeFiles:
    """Where one episode's rows and frames are."""

    index: int  # episode_index
    length: int  # frames
    tasks: list[str]
    data_file: Path
    videos: dict[str, tuple[Path, float]] = field(default_factory=dict)  # key -> (mp4, from_s)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LeRobotFormatError(
            f"{path} does not exist; a LeRobot dataset needs meta/info.json and its episode "
            "tables (docs/data.md, 'LeRobot')"
        ) from None
    except ValueError as err:
        raise LeRobotFormatError(f"{path} is not valid JSON ({err}); re-download it") from None


def _read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        raise LeRobotFormatError(f"{path} does not exist; the v2 LeRobot layout needs it")
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except ValueError:
                raise LeRobotFormatError(f"{path} line {n} is not JSON; re-download it") from None
    return rows


def column(table, name: str) -> np.ndarray:
    """A parquet column as numpy: scalars [N], list / fixed-size-list columns [N, D]."""
    import pyarrow as pa

    arr = table.column(name).combine_chunks()
    if pa.types.is_list(arr.type) or pa.types.is_fixed_size_list(arr.type):
        n = len(arr)
        flat = np.asarray(arr.flatten().to_numpy(zero_copy_only=False))
        return flat.reshape(n, -1) if n else flat.reshape(0, 0)
    return np.asarray(arr.to_numpy(zero_copy_only=False))


class LeRobotMeta:
    """info.json, tasks and the episode table of a LeRobot folder, any supported version."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.info: dict = _read_json(self.root / "meta" / "info.json")
        self.version = str(self.info.get("codebase_version") or "v2.0")
        if not self.version.startswith(("v2.", "v3.")):
            raise LeRobotFormatError(
                f"{self.root}: LeRobot codebase_version {self.version} is not supported; "
                "convert it to v2.1 or v3.0 with the lerobot tools"
            )
        try:
            self.fps = float(self.info["fps"])
            self.features: dict[str, dict] = dict(self.info["features"])
            self.data_path: str = self.info["data_path"]
        except (KeyError, TypeError, ValueError):
            raise LeRobotFormatError(
                f"{self.root / 'meta/info.json'} lacks fps, features or data_path; re-export it"
            ) from None
        self.video_path: str | None = self.info.get("video_path")
        self.chunks_size = int(self.info.get("chunks_size", 1000))
        self.video_keys = [k for k, f in self.features.items() if f.get("dtype") == "video"]
        if self.version.startswith("v3."):
            self.tasks, self.episodes = self._v3_tables()
        else:
            self.tasks, self.episodes = self._v2_tables()

    # ---- names --------------------------------------------------------------------------------
    def camera_key(self, camera: str | None) -> str:
        """The video feature for `camera` ("ego_view" or its full key); None = the first one."""
        if not self.video_keys:
            raise LeRobotFormatError(f"{self.root} has no video feature in meta/info.json")
        if camera is None:
            return self.video_keys[0]
        for key in (camera, CAMERA_PREFIX + camera):
            if key in self.video_keys:
                return key
        short = [k.removeprefix(CAMERA_PREFIX) for k in self.video_keys]
        raise LeRobotFormatError(
            f"{self.root} has no camera {camera!r}; set data.dataset.camera to one of {short}"
        )

    def vector_dim(self, key: str) -> int:
        """Width of a per-frame vector feature (action, observation.state, ...)."""
        feature = self.features.get(key)
        if feature is None or feature.get("dtype") in ("video", "image"):
            vectors = [
                k for k, f in self.features.items() if f.get("dtype") not in ("video", "image")
            ]
            raise LeRobotFormatError(
                f"{self.root} has no vector feature {key!r}; choose one of {vectors}"
            )
        shape = feature.get("shape") or [1]
        return int(np.prod(shape))

    def split_episodes(self, split: str | None) -> list[EpisodeFiles]:
        """The episodes of info.json's split ("train": "0:40"), all when `split` is None."""
        if split is None:
            return list(self.episodes)
        splits = self.info.get("splits") or {}
        if split not in splits:
            raise LeRobotFormatError(
                f"{self.root} has no split {split!r} (it has {sorted(splits)}); set "
                "data.dataset.split to one of them, or null for every episode"
            )
        lo, hi = (int(v) for v in str(splits[split]).split(":"))
        return [e for e in self.episodes if lo <= e.index < hi]

    # ---- v2.x ---------------------------------------------------------------------------------
    def _v2_tables(self) -> tuple[dict[int, str], list[EpisodeFiles]]:
        meta = self.root / "meta"
        tasks = {int(r["task_index"]): str(r["task"]) for r in _read_jsonl(meta / "tasks.jsonl")}
        episodes = []
        for row in sorted(_read_jsonl(meta / "episodes.jsonl"), key=lambda r: r["episode_index"]):
            e = int(row["episode_index"])
            chunk = e // self.chunks_size
            ep = EpisodeFiles(
                e,
                int(row["length"]),
                [str(t) for t in row.get("tasks", [])],
                self.root / self.data_path.format(episode_chunk=chunk, episode_index=e),
            )
            for key in self.video_keys if self.video_path else ():
                rel = self.video_path.format(episode_chunk=chunk, video_key=key, episode_index=e)
                ep.videos[key] = (self.root / rel, 0.0)
            episodes.append(ep)
        return tasks, episodes

    # ---- v3.0 ---------------------------------------------------------------------------------
    def _v3_tables(self) -> tuple[dict[int, str], list[EpisodeFiles]]:
        import pyarrow.parquet as pq

        meta = self.root / "meta"
        if not (meta / "tasks.parquet").is_file():
            raise LeRobotFormatError(f"{meta / 'tasks.parquet'} does not exist; v3.0 needs it")
        table = pq.read_table(meta / "tasks.parquet")
        # pandas writes the task string as the frame's index, stored as the column "task".
        tasks = {
            int(i): str(t)
            for i, t in zip(column(table, "task_index"), column(table, "task"), strict=True)
        }
        files = sorted((meta / "episodes").glob("chunk-*/file-*.parquet"))
        if not files:
            raise LeRobotFormatError(f"{meta / 'episodes'} holds no chunk-*/file-*.parquet")
        episodes = []
        for path in files:
            names = pq.read_schema(path).names
            wanted = [n for n in names if not n.startswith("stats/")]  # as LeRobot drops them
            t = pq.read_table(path, columns=wanted)
            rows = t.to_pylist()
            for row in rows:
                episodes.append(self._v3_episode(row))
        episodes.sort(key=lambda e: e.index)
        return tasks, episodes

    def _v3_episode(self, row: dict) -> EpisodeFiles:
        e = int(row["episode_index"])
        data = self.data_path.format(
            chunk_index=int(row["data/chunk_index"]), file_index=int(row["data/file_index"])
        )
        ep = EpisodeFiles(
            e, int(row["length"]), [str(t) for t in row.get("tasks") or []], self.root / data
        )
        for key in self.video_keys if self.video_path else ():
            rel = self.video_path.format(
                video_key=key,
                chunk_index=int(row[f"videos/{key}/chunk_index"]),
                file_index=int(row[f"videos/{key}/file_index"]),
            )
            ep.videos[key] = (self.root / rel, float(row[f"videos/{key}/from_timestamp"]))
        return ep

    # ---- rows ---------------------------------------------------------------------------------
    def read_rows(
        self, episodes: list[EpisodeFiles], columns: list[str]
    ) -> dict[int, dict[str, np.ndarray]]:
        """Per episode index, the named columns of its rows in frame order (each data file is
        read once; v3 files hold many episodes and are split by `episode_index`). Episodes whose
        file is missing or unreadable are left out; a missing column raises."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        by_file: dict[Path, list[EpisodeFiles]] = {}
        for ep in episodes:
            by_file.setdefault(ep.data_file, []).append(ep)
        out: dict[int, dict[str, np.ndarray]] = {}
        for path, eps in by_file.items():
            try:
                have = pq.read_schema(path).names
            except (OSError, pa.ArrowException):
                continue  # missing or damaged: its episodes are skipped as "missing data"
            missing = [c for c in columns if c not in have]
            if missing:
                raise LeRobotFormatError(
                    f"{path} has no column {missing[0]!r} (it has {have}); fix the dataset "
                    "config's keys"
                )
            need = list(dict.fromkeys([*columns, "episode_index"]))
            try:
                table = pq.read_table(path, columns=need)
            except (OSError, pa.ArrowException):
                continue
            ep_col = column(table, "episode_index")
            data = {c: column(table, c) for c in columns}
            for ep in eps:  # an episode's rows are contiguous and in frame order (§2, §3.4)
                rows = np.nonzero(ep_col == ep.index)[0]
                out[ep.index] = {c: v[rows] for c, v in data.items()}
        return out

    # ---- statistics and GR00T's modality table ------------------------------------------------
    def stats(self) -> dict[str, dict]:
        """meta/stats.json ({} when absent)."""
        path = self.root / "meta" / "stats.json"
        return _read_json(path) if path.is_file() else {}

    def modality(self) -> dict[str, dict]:
        """GR00T's meta/modality.json ({} when absent; lerobot_format.md §4.1)."""
        path = self.root / "meta" / "modality.json"
        return _read_json(path) if path.is_file() else {}

    def delta_dims(self, key: str) -> np.ndarray:
        """Per dimension of vector feature `key`, whether modality.json marks it relative
        (`"absolute": false` on an `action.<name>` / `state.<name>` slice whose `original_key`,
        default "action" / "observation.state", is `key`). GR00T's default is absolute, and so
        is every dimension of a dataset without modality.json."""
        dims = np.zeros(self.vector_dim(key), dtype=bool)
        for group, default in (("action", "action"), ("state", "observation.state")):
            for entry in (self.modality().get(group) or {}).values():
                if entry.get("original_key", default) == key and entry.get("absolute") is False:
                    dims[int(entry["start"]) : int(entry["end"])] = True
        return dims
