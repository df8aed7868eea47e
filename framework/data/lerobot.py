"""LeRobot dataset (v2.0/v2.1 and v3.0; GR00T / DreamGen flavours) as world-model training clips:
one camera's frames, the episode's task text and the per-transition actions.

Metadata and parquet rows: framework/data/lerobot_meta.py (pyarrow, no `lerobot` package). Frames:
the camera's mp4 through PyAV (framework/data/video.py; AV1 needs FFmpeg's libdav1d, which PyAV's
wheels bundle). A row's frame is the video frame at `from_timestamp + timestamp` (v3 episodes share
an mp4; LeRobot and GR00T fetch frames by the parquet timestamps), i.e. frame
round((from_timestamp + timestamp) * fps); a GR00T file whose timestamps start at 1/fps reads one
frame later, as GR00T does, in training windows and held-out items alike.

Samples are every window of `num_frames` frames (`frame_stride` apart) at every start of every
episode, in (episode, start) order: the Bridge datasets' index (framework/data/bridge.py): uniform
over windows and a pure function of the index, so a resumed run reads the same data.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from framework.data.action_norm import NEEDS, ActionNorm, feature_stats
from framework.data.dataset import ClipDataset
from framework.data.heldout import HeldOutItem, load_items
from framework.data.lerobot_meta import GR00T_TASK_COLUMN, LeRobotFormatError, LeRobotMeta
from framework.data.safe_load import load_t5_pickle
from framework.data.video import VideoError, probe_video

logger = logging.getLogger(__name__)
TEXT_MODES = ("none", "t5")
ACTION_KINDS = ("auto", "absolute", "delta")


def task_embedding_path(root: str | Path, task_index: int) -> Path:
    """Where `data_prep.lerobot --t5` writes the T5 pickle of task `task_index`."""
    return Path(root) / "t5_xxl" / f"task_{task_index:06d}.pickle"


class LeRobotDataset(ClipDataset):
    """Clips of one camera of a LeRobot dataset, with the task text and the actions.

    Sample keys: `video` uint8 [3,T,H,W] (T = `num_frames`, resized to `video_size`), `fps` float
    (the dataset's fps, or `fps`, divided by `frame_stride`), `caption` str (the task of the
    window's first frame: its `task_index`, or GR00T's annotation.human.action.task_description
    column when present), `t5_text_embeddings` float32 [max_text_tokens, text_dim] and
    `t5_text_mask` int64 (zeros with `text="none"`, as the Predict2 action recipe feeds the net;
    the task's pickle from `data_prep.lerobot --t5` with `text="t5"`), `padding_mask`,
    `image_size`, `num_frames`, `bad_replaced` as the other datasets; with `action_key`:
    `actions` float32 [T-1, action_dim]; with `state_key`: `state` float32 [T, state_dim].

    Actions, the upstream convention (one action per frame transition): clip frames f_0..f_{T-1}
    are parquet rows r_k = r_0 + k * frame_stride, and actions[k] is the `action_key` row r_k, the
    command issued at frame f_k that leads to f_{k+1} (LeRobot's and GR00T's per-frame action),
    for k = 0..T-2. The last frame's own action is not part of the sample. The Cosmos action nets
    consume exactly T-1 actions for T frames (13 frames, 12 actions; Predict2.5 §6.2).
    With frame_stride s > 1 a transition spans the rows r_k .. r_k + s - 1: an absolute
    dimension (a target pose or joint position, GR00T's default) takes row r_k, a relative one
    (a per-frame delta) the sum of those s rows, the motion from f_k to f_{k+1}. `action_kind`:
    "auto" reads which dimensions are relative from meta/modality.json (`"absolute": false`,
    lerobot_format.md §4.1; without the file every dimension is absolute), "absolute" or "delta"
    set all of them.

    Normalization, per dimension (`action_norm`, framework/data/action_norm.py): "min_max" into
    [-1, 1] (default: GR00T's mode for every embodiment), "q01_q99", "mean_std" or "none"; `state`
    uses the same mode. Statistics are meta/stats.json's entry for the key (what LeRobot and GR00T
    ship); when it lacks the entry (or the mode's fields) they are computed once over every row of
    the dataset and written into meta/stats.json, as GR00T does. They describe single rows: summed
    deltas (frame_stride > 1) are normalized with them after summing, so they may leave [-1, 1].
    `action_normalization` describes the mode and numbers, for inference.
    """

    unit = "episodes"

    def __init__(
        self,
        dataset_dir: str | Path,
        camera: str | None = None,
        num_frames: int = 13,
        video_size: tuple[int, int] = (256, 320),
        frame_stride: int = 1,
        action_key: str | None = "action",
        state_key: str | None = None,
        action_norm: str = "min_max",
        action_kind: str = "auto",
        split: str | None = None,
        text: str = "none",
        fps: float | None = None,
        resize_mode: str = "resize",
        max_text_tokens: int = 512,
        text_dim: int = 1024,
        check: str = "header",
        max_bad_fraction: float = 0.1,
        max_retries: int = 10,
        keep_in_memory: bool = False,
        decode_threads: int = 2,
    ) -> None:
        if text not in TEXT_MODES:
            raise ValueError(f"text {text!r} is unknown; use one of {TEXT_MODES}")
        if action_kind not in ACTION_KINDS:
            raise ValueError(f"action_kind {action_kind!r} is unknown; use one of {ACTION_KINDS}")
        super().__init__(
            dataset_dir,
            num_frames,
            video_size,
            resize_mode,
            frame_stride,
            max_text_tokens,
            text_dim,
            decode_threads,
            check,
            max_bad_fraction,
            max_retries,
            keep_in_memory,
        )
        self.meta = LeRobotMeta(self.dataset_dir)
        self.camera = self.meta.camera_key(camera)
        self.action_key, self.state_key, self.split, self.text = action_key, state_key, split, text
        self.action_dim = self.meta.vector_dim(action_key) if action_key else 0
        self.state_dim = self.meta.vector_dim(state_key) if state_key else 0
        if not action_key or action_kind == "auto":
            self._delta = self.meta.delta_dims(action_key) if action_key else np.zeros(0, bool)
        else:
            self._delta = np.full(self.action_dim, action_kind == "delta")
        self.norm_mode = action_norm
        ActionNorm(action_norm, {k: [0.0] for k in NEEDS.get(action_norm, ())})  # mode check
        self.fps = float(fps) if fps else self.meta.fps
        self.task_column = (
            GR00T_TASK_COLUMN if GR00T_TASK_COLUMN in self.meta.features else "task_index"
        )
        self._norms: dict[str, ActionNorm] = {}
        self._rows: dict[int, dict[str, np.ndarray]] = {}
        self._offsets = np.zeros(1, dtype=np.int64)

    # ---- normalization ------------------------------------------------------------------------
    def normalizer(self, key: str) -> ActionNorm:
        """The normalization of vector feature `key` (statistics from meta/stats.json, computed
        and stored there once when missing)."""
        if key not in self._norms:
            need = NEEDS.get(self.norm_mode, ())
            stats = self.meta.stats().get(key, {})
            if any(k not in stats for k in need):
                stats = self._store_stats(key)
            self._norms[key] = ActionNorm(self.norm_mode, stats)
        return self._norms[key]

    @property
    def action_normalization(self) -> dict[str, Any]:
        """{"mode", and its numbers}: apply the same to raw actions at inference."""
        return self.normalizer(self.action_key).describe() if self.action_key else {"mode": "none"}

    def _store_stats(self, key: str) -> dict:
        import json

        from framework.io import atomic_write_text

        rows = self.meta.read_rows(self.meta.episodes, [key])
        values = np.concatenate([r[key].reshape(len(r[key]), -1) for r in rows.values()])
        entry = feature_stats(values)
        path = self.dataset_dir / "meta" / "stats.json"
        stats = {**self.meta.stats(), key: entry}
        try:
            atomic_write_text(path, json.dumps(stats, indent=2))
            logger.info("wrote %s statistics of %d rows to %s", key, len(values), path)
        except OSError as err:  # a read-only dataset: use them, recompute next time
            logger.warning("could not store %s statistics in %s (%s)", key, path, err)
        return entry

    # ---- indexing -----------------------------------------------------------------------------
    def _index(self, check: str) -> tuple[list[dict], list[tuple[str, str]]]:
        episodes = self.meta.split_episodes(self.split)
        if not episodes:
            raise LeRobotFormatError(f"{self.dataset_dir} lists no episode in split {self.split}")
        keys = [k for k in (self.action_key, self.state_key) if k]
        self._rows = self._read_rows(episodes, ["timestamp", self.task_column, *keys])
        candidates = [
            {
                "name": f"episode {ep.index}",
                "episode": ep.index,
                "video": str(ep.videos[self.camera][0]),
            }
            for ep in episodes
        ]
        by_index = {ep.index: ep for ep in episodes}
        samples, skipped = self._sift(
            candidates, lambda c: self._problem(by_index[c["episode"]], check), key="name"
        )
        self._offsets = np.concatenate([[0], np.cumsum([s["windows"] for s in samples])])
        self.summary += f"; {int(self._offsets[-1])} windows of {self.span} frames"
        return samples, skipped

    def _read_rows(self, episodes, columns: list[str]) -> dict[int, dict[str, np.ndarray]]:
        """Rows per episode: the state normalized, the actions raw [N, D] (a stride's deltas
        are summed before normalizing; `transitions`)."""
        rows = self.meta.read_rows(episodes, columns)
        for r in rows.values():
            if self.task_column in r:  # DreamGen writes the task as a one-element list
                r[self.task_column] = r[self.task_column].reshape(len(r[self.task_column]), -1)[
                    :, 0
                ]
            if self.action_key in r:
                r[self.action_key] = r[self.action_key].reshape(len(r[self.action_key]), -1)
            if self.state_key in r:
                norm = self.normalizer(self.state_key)
                r[self.state_key] = norm(r[self.state_key].reshape(len(r[self.state_key]), -1))
        return rows

    def transitions(self, raw: np.ndarray, row: int, count: int) -> np.ndarray:
        """float32 [count, D]: the normalized actions of `count` clip transitions from `row` of
        an episode's raw action rows (class docstring: absolute dimensions take the first row
        of each transition, relative ones the sum of its frame_stride rows)."""
        s = self.frame_stride
        picked = np.asarray(raw[row : row + count * s : s], dtype=np.float64)
        if len(picked) < count:
            raise ValueError(f"{len(picked)} actions from row {row}, fewer than {count}")
        if s > 1 and self._delta.any():
            block = np.asarray(raw[row : row + count * s], dtype=np.float64)
            if len(block) < count * s:
                raise ValueError(f"{len(block)} action rows from row {row}, fewer than {count * s}")
            summed = block.reshape(count, s, -1).sum(1)
            picked[:, self._delta] = summed[:, self._delta]
        return self.normalizer(self.action_key)(picked)

    def frame_of(self, from_s: float, timestamp: float) -> int:
        """The video frame of a row: LeRobot decodes the frame at from_timestamp + timestamp
        (lerobot_format.md §3.4); frames sit at i / fps."""
        return round((float(from_s) + float(timestamp)) * self.meta.fps)

    def _problem(self, ep, check: str) -> tuple[str, dict]:
        rows = self._rows.get(ep.index)
        if rows is None:
            return "missing data", {}
        length = min(ep.length, len(rows["timestamp"]))
        short = f"too short (<{self.span} frames)"
        if length < self.span:
            return short, {}
        video, from_s = ep.videos[self.camera]
        if not video.is_file():
            return "missing video", {}
        last = self.frame_of(from_s, rows["timestamp"][length - 1])
        if check != "exists":
            try:
                have = probe_video(video).num_frames
            except VideoError:
                return "unreadable video", {}
            if have <= last:
                length -= last - have + 1  # frames the video lacks
                if length < self.span:
                    return f"video shorter than its rows ({have} frames)", {}
        info = {"from_s": from_s, "frames": length, "windows": length - self.span + 1}
        return "", info

    def _counts_as_bad(self, reason: str) -> bool:
        return not reason.startswith("too short")

    # ---- loading ------------------------------------------------------------------------------
    def __len__(self) -> int:
        self.samples  # noqa: B018  (indexes on first use)
        return int(self._offsets[-1])

    def _unit(self, index: int) -> int:
        return int(np.searchsorted(self._offsets, index, side="right")) - 1

    def _random_index(self, unit: int) -> int:
        return int(self._offsets[unit]) + int(
            torch.randint(self.samples[unit]["windows"], ()).item()
        )

    def window(self, index: int) -> tuple[int, int]:
        """(episode_index, first row) of sample `index`."""
        if not 0 <= index < len(self):
            raise IndexError(f"sample {index} out of range for {len(self)} windows")
        unit = self._unit(index)
        return self.samples[unit]["episode"], index - int(self._offsets[unit])

    def _load(self, index: int) -> dict[str, Any]:
        episode, row = self.window(index)
        entry, rows = self.samples[self._unit(index)], self._rows[episode]
        start = self.frame_of(entry["from_s"], rows["timestamp"][row])
        video, _ = self._clip(entry["video"], lambda n: start)
        task = int(rows[self.task_column][row])
        sample = {
            "video": video,
            "fps": self.fps / self.frame_stride,
            **self._conditioning(self._text(task), self.meta.tasks.get(task, "")),
        }
        stride, t = self.frame_stride, self.num_frames
        if self.action_key:
            acts = self.transitions(rows[self.action_key], row, t - 1)
            sample["actions"] = torch.from_numpy(np.ascontiguousarray(acts))
        if self.state_key:
            state = rows[self.state_key][row : row + self.span : stride]
            sample["state"] = torch.from_numpy(np.ascontiguousarray(state))
        return sample

    def _text(self, task: int) -> np.ndarray:
        if self.text == "t5":
            return load_t5_pickle(task_embedding_path(self.dataset_dir, task), self.text_dim)
        return np.zeros((0, self.text_dim), dtype=np.float32)

    # ---- held-out items (framework/data/heldout.py) -------------------------------------------
    def heldout_items(self, num_items: int, num_frames: int) -> list[HeldOutItem]:
        """The first frames of the first episodes of info.json's "val" (else "test") split, else
        of the dataset's own episodes, with their task as the prompt. Episodes that share an mp4
        (v3) are read from their own start."""
        splits = self.meta.info.get("splits") or {}
        held = next((s for s in ("val", "test") if s in splits), self.split)
        episodes = self.meta.split_episodes(held)

        def load(ep) -> HeldOutItem:
            video, from_s = ep.videos[self.camera]
            rows = self._read_rows(
                [ep], ["timestamp", *([self.action_key] * bool(self.action_key))]
            )
            if ep.index not in rows or not len(rows[ep.index]["timestamp"]):
                raise ValueError(f"episode {ep.index} has no readable rows")
            # Row 0's frame, as training windows find theirs (GR00T's files start at 1/fps).
            first = self.frame_of(from_s, rows[ep.index]["timestamp"][0])
            frames = self._episode_frames(video, first, num_frames)
            conditions = {}
            if self.action_key:
                acts = self.episode_actions(ep.index, self.num_frames - 1, rows[ep.index])
                conditions = {"actions": torch.from_numpy(acts)[None]}
            task = ep.tasks[0] if ep.tasks else ""
            index = {t: i for i, t in self.meta.tasks.items()}.get(task, -1)
            emb = self._text(index) if index >= 0 else np.zeros((0, self.text_dim), np.float32)
            emb = emb if len(emb) else np.zeros((1, self.text_dim), np.float32)
            return HeldOutItem(
                name=f"episode_{ep.index:06d}",
                video=frames,
                text_emb=torch.from_numpy(np.asarray(emb, dtype=np.float32))[None],
                prompt=task,
                fps=self.fps / self.frame_stride,
                source=str(video),
                conditions=conditions,
            )

        return load_items(episodes, num_items, load, f"{self.dataset_dir} ({held or 'all'})")

    def episode_actions(
        self, episode: int, count: int | None = None, rows: dict | None = None
    ) -> np.ndarray:
        """float32 [count, D]: the normalized actions of episode `episode` from its first row,
        one per transition at this dataset's frame_stride, as a training window starting there
        gets them (held-out items; generation from a LeRobot episode). `count` defaults to
        every whole transition the episode holds; ValueError when it holds fewer."""
        if rows is None:
            ep = next((e for e in self.meta.episodes if e.index == episode), None)
            if ep is None:
                raise ValueError(f"{self.dataset_dir} has no episode {episode}")
            rows = self._read_rows([ep], [self.action_key]).get(episode)
            if rows is None:
                raise ValueError(f"episode {episode}'s rows are missing or unreadable")
        raw = rows[self.action_key]
        whole = (len(raw) - 1) // self.frame_stride  # transitions between frames it has
        count = whole if count is None else count
        if count > whole or count < 1:
            raise ValueError(
                f"episode {episode} has {len(raw)} rows: {whole} transitions at frame_stride "
                f"{self.frame_stride}, fewer than the {count} needed"
            )
        return np.ascontiguousarray(self.transitions(raw, 0, count), dtype=np.float32)

    def _episode_frames(self, video: Path, first: int, num_frames: int) -> torch.Tensor:
        from framework.data.video import ClipReader

        with ClipReader(video, self.video_size, self.resize_mode, self.decode_threads) as r:
            frames = r.read(first, num_frames, self.frame_stride)
        return torch.from_numpy(frames).permute(3, 0, 1, 2)[None].contiguous()
