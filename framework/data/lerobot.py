"""LeRobot dataset (v2.0/v2.1 and v3.0; GR00T / DreamGen flavours) as world-model training clips:
one camera's frames, the episode's task text and the per-transition actions.

Metadata and parquet rows: framework/data/lerobot_meta.py (pyarrow, no `lerobot` package). Frames:
the camera's mp4 through PyAV (framework/data/video.py; AV1 needs FFmpeg's libdav1d, which PyAV's
wheels bundle). A row's frame is the video frame at `from_timestamp + timestamp` (v3 episodes share
an mp4; LeRobot and GR00T fetch frames by the parquet timestamps), so a GR00T file whose
timestamps start at 1/fps reads one frame later, as GR00T does.

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
    for k = 0..T-2. With frame_stride > 1 the rows in between are skipped, not summed. The last
    frame's own action is not part of the sample. The Cosmos action nets consume exactly T-1
    actions for T frames (13 frames, 12 actions; Predict2.5 §6.2).

    Normalization, per dimension (`action_norm`, framework/data/action_norm.py): "min_max" into
    [-1, 1] (default: GR00T's mode for every embodiment), "q01_q99", "mean_std" or "none"; `state`
    uses the same mode. Statistics are meta/stats.json's entry for the key (what LeRobot and GR00T
    ship); when it lacks the entry (or the mode's fields) they are computed once over every row of
    the dataset and written into meta/stats.json, as GR00T does. `action_normalization` describes
    the mode and numbers, for inference.
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
        rows = self.meta.read_rows(episodes, columns)
        for r in rows.values():  # DreamGen writes the task as a one-element list
            r[self.task_column] = r[self.task_column].reshape(len(r[self.task_column]), -1)[:, 0]
        for key in (self.action_key, self.state_key):
            if key:
                norm = self.normalizer(key)
                for r in rows.values():
                    r[key] = norm(r[key].reshape(len(r[key]), -1))
        return rows

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
        first = round(from_s * self.meta.fps)
        last = first + round(float(rows["timestamp"][length - 1]) * self.meta.fps)
        if check != "exists":
            try:
                have = probe_video(video).num_frames
            except VideoError:
                return "unreadable video", {}
            if have <= last:
                length -= last - have + 1  # frames the video lacks
                if length < self.span:
                    return f"video shorter than its rows ({have} frames)", {}
        info = {"first_frame": first, "frames": length, "windows": length - self.span + 1}
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
        start = entry["first_frame"] + round(float(rows["timestamp"][row]) * self.meta.fps)
        video, _ = self._clip(entry["video"], lambda n: start)
        task = int(rows[self.task_column][row])
        sample = {
            "video": video,
            "fps": self.fps / self.frame_stride,
            **self._conditioning(self._text(task), self.meta.tasks.get(task, "")),
        }
        stride, t = self.frame_stride, self.num_frames
        if self.action_key:
            acts = rows[self.action_key][row : row + (t - 1) * stride : stride]
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
            frames = self._episode_frames(video, from_s, num_frames)
            conditions = self._heldout_actions(ep) if self.action_key else {}
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

    def _heldout_actions(self, ep) -> dict[str, torch.Tensor]:
        """{"actions": [1, num_frames - 1, D]}: the normalized actions of the episode's first
        training-length window (what an action-conditioned model generates from its first
        frame), strided as in training."""
        rows = self._read_rows([ep], [self.task_column, self.action_key])[ep.index]
        acts = rows[self.action_key][
            : (self.num_frames - 1) * self.frame_stride : self.frame_stride
        ]
        if len(acts) < self.num_frames - 1:
            raise ValueError(f"episode {ep.index} has {len(acts)} actions, fewer than a window's")
        return {"actions": torch.from_numpy(np.ascontiguousarray(acts, np.float32))[None]}

    def _episode_frames(self, video: Path, from_s: float, num_frames: int) -> torch.Tensor:
        from framework.data.video import ClipReader

        with ClipReader(video, self.video_size, self.resize_mode, self.decode_threads) as r:
            frames = r.read(round(from_s * self.meta.fps), num_frames, self.frame_stride)
        return torch.from_numpy(frames).permute(3, 0, 1, 2)[None].contiguous()
