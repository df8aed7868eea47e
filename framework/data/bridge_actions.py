"""Bridge with actions: the archive layout and per-transition actions of upstream's
action-conditioned Video2World recipes (Predict2 `ActionConditionedDataset`, Predict2.5
`Dataset_3D`, both adapted from IRASim; spec cosmos_predict2_5.md §6.3, §6.6).

Layout: the same IRASim archive as the instruction recipe (framework/data/bridge.py,
`python -m data_prep.bridge --archive ...`): `annotation/{train,val,test}/<id>.json` with, per
frame, `state` [x, y, z, roll, pitch, yaw, ...] (end effector, world frame) and
`continuous_gripper_state` (0 open, 1 closed on real Bridge), and `videos[0].video_path`. No T5
pickle is needed: upstream feeds the net no instruction (Predict2: zero T5 embeddings; Predict2.5:
the empty caption), which is `text="none"` (zero embeddings) or `text="online"` (no embeddings:
the model's text encoder embeds the empty caption) here.

Action k of a window of frames f_0..f_{T-1} (k = 0..T-2; T-1 actions, one per transition; with
`frame_stride` s the frames are s source frames apart, upstream's `sequence_interval`):
    xyz     = R_k^T (p_{k+1} - p_k)          translation in the gripper frame of f_k
    rpy     = euler(R_k^T R_{k+1})           relative rotation, ZYX: R = Rz(yaw) Ry(pitch) Rx(roll)
    gripper = g_{k+1}
with `accumulate=True` relative to f_0 instead of f_k (upstream's `accumulate_action`, off in both
recipes). Then x20 on xyz and rpy, x1 on the gripper (`c_act_scaler`); no other normalization
(`action_norm="scale"`, the upstream one; "none" gives the raw deltas).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from framework.data.action_norm import ActionNorm
from framework.data.bridge import BridgeDataset, read_annotation
from framework.data.heldout import HeldOutItem

BRIDGE_ACTION_SCALE = [20.0] * 6 + [1.0]  # upstream's c_act_scaler / _ACTION_SCALER
ACTION_NAMES = ["x", "y", "z", "roll", "pitch", "yaw", "gripper"]


def euler_to_matrix(rpy: np.ndarray) -> np.ndarray:
    """[..., 3] (roll, pitch, yaw) -> [..., 3, 3] rotation Rz(yaw) @ Ry(pitch) @ Rx(roll)."""
    rpy = np.asarray(rpy, dtype=np.float64)
    (cr, cp, cy), (sr, sp, sy) = np.cos(np.moveaxis(rpy, -1, 0)), np.sin(np.moveaxis(rpy, -1, 0))
    rows = [
        [cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
        [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
        [-sp, cp * sr, cp * cr],
    ]
    return np.stack([np.stack(r, axis=-1) for r in rows], axis=-2)


def matrix_to_euler(m: np.ndarray) -> np.ndarray:
    """[..., 3, 3] -> [..., 3] (roll, pitch, yaw) of R = Rz Ry Rx, each in (-pi, pi]; near gimbal
    lock (cos(pitch) < 1e-6) yaw = 0, as upstream's rotm2euler."""
    sy = np.hypot(m[..., 0, 0], m[..., 1, 0])
    lock = sy < 1e-6
    roll = np.where(
        lock, np.arctan2(-m[..., 1, 2], m[..., 1, 1]), np.arctan2(m[..., 2, 1], m[..., 2, 2])
    )
    pitch = np.arctan2(-m[..., 2, 0], sy)
    yaw = np.where(lock, 0.0, np.arctan2(m[..., 1, 0], m[..., 0, 0]))
    out = np.stack([roll, pitch, yaw], axis=-1)
    return np.where(out <= -np.pi, out + 2 * np.pi, out)  # atan2 gives [-pi, pi]


def bridge_actions(state: np.ndarray, gripper: np.ndarray, accumulate: bool = False) -> np.ndarray:
    """Raw (unscaled) float64 [N-1, 7] actions between consecutive rows of `state` [N, >=6] and
    `gripper` [N] (the module docstring's formula)."""
    state = np.asarray(state, dtype=np.float64)[:, :6]
    gripper = np.asarray(gripper, dtype=np.float64).reshape(-1)
    rot = euler_to_matrix(state[:, 3:6])
    ref = np.zeros(len(state) - 1, dtype=np.int64) if accumulate else np.arange(len(state) - 1)
    ref_t = np.swapaxes(rot[ref], -1, -2)
    xyz = np.einsum("nij,nj->ni", ref_t, state[1:, :3] - state[ref, :3])
    rpy = matrix_to_euler(ref_t @ rot[1:])
    return np.concatenate([xyz, rpy, gripper[1:, None]], axis=1)


def read_states(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(state [N, >=6], continuous_gripper_state [N]) of one episode json; ValueError naming the
    file when either is missing or malformed."""
    ann = json.loads(Path(path).read_text(encoding="utf-8"))
    try:
        state = np.asarray(ann["state"], dtype=np.float64)
        gripper = np.asarray(ann["continuous_gripper_state"], dtype=np.float64).reshape(-1)
    except (KeyError, TypeError, ValueError):
        raise ValueError(
            f"{path} lacks a numeric 'state' / 'continuous_gripper_state'; the action recipe "
            "needs both per frame"
        ) from None
    if state.ndim != 2 or state.shape[1] < 6 or len(gripper) < len(state):
        raise ValueError(
            f"{path}: 'state' must be [N, >=6] and 'continuous_gripper_state' [>=N]; got "
            f"{list(state.shape)} and {len(gripper)}"
        )
    return state, gripper[: len(state)]


class BridgeActionDataset(BridgeDataset):
    """BridgeDataset windows plus their actions: upstream's action-conditioned Bridge data.

    Sample keys: those of BridgeDataset (`video` uint8 [3,T,H,W], `fps` = `fps` / `frame_stride`,
    text keys, ...), `caption` str (texts[0] with `text="t5"`, "" with `text="none"`: upstream's
    empty caption), and `actions` float32 [T-1, 7] = (x, y, z, roll, pitch, yaw, gripper) of each
    frame transition, scaled as upstream (module docstring). `action_dim` is 7.

    Defaults are the Predict2.5 recipe's: 13 frames (12 actions, 4 per latent frame), 256x320,
    fps 4; Predict2's is the same at 480x640. Episodes whose json lacks the states are "bad
    actions" and count against `max_bad_fraction` like other damage.
    """

    action_dim = len(ACTION_NAMES)

    def __init__(
        self,
        dataset_dir: str | Path,
        split: str = "train",
        num_frames: int = 13,
        video_size: tuple[int, int] = (256, 320),
        text: str = "none",
        action_norm: str = "scale",
        accumulate: bool = False,
        **kw: Any,
    ) -> None:
        if text not in ("none", "t5", "online") or action_norm not in ("scale", "none"):
            raise ValueError(
                f"text {text!r} / action_norm {action_norm!r}: use 'none'|'t5'|'online' and "
                "'scale' (upstream's x20) | 'none'"
            )
        super().__init__(dataset_dir, split, num_frames, video_size, **kw)
        self.uses_pickles, self.text, self.accumulate = text == "t5", text, accumulate
        self.normalizer = ActionNorm(action_norm, scale=BRIDGE_ACTION_SCALE)

    @property
    def action_normalization(self) -> dict[str, Any]:
        """{"mode", "scale"}: apply the same to raw actions at inference."""
        return self.normalizer.describe()

    def _problem(self, candidate: dict, check: str) -> tuple[str, dict]:
        reason, info = super()._problem(candidate, check)
        if reason:
            return reason, info
        try:
            state, gripper = read_states(candidate["annotation"])
            text = read_annotation(candidate["annotation"], self.dataset_dir).text
        except (ValueError, OSError):
            return "bad actions", {}
        caption = (text or "") if self.text == "t5" else ""
        return "", {**info, "state": state, "gripper": gripper, "caption": caption}

    def _text_embedding(self, pickle: str | Path):
        # "online": no embedding at all, the model encodes the (empty) caption itself, as
        # Predict2.5's recipe does with Reason1.
        return None if self.text == "online" else super()._text_embedding(pickle)

    def heldout_items(self, num_items: int, num_frames: int) -> list[HeldOutItem]:
        """BridgeDataset's held-out episodes with the actions of their first window
        (`conditions`, what an action-conditioned model generates from the first frame)."""
        items = super().heldout_items(num_items, num_frames)
        for item in items:
            split, _, stem = item.name.partition("_")
            state, gripper = read_states(self.dataset_dir / "annotation" / split / f"{stem}.json")
            rows = slice(0, self.span, self.frame_stride)
            raw = bridge_actions(state[rows], gripper[rows], self.accumulate)
            item.conditions = {"actions": torch.from_numpy(self.normalizer(raw))[None]}
            if self.text == "online":
                item.text_emb = None
        return items

    def _load(self, index: int) -> dict[str, Any]:
        sample = super()._load(index)
        _, start = self.window(index)
        entry = self.samples[self._unit(index)]
        rows = slice(start, start + self.span, self.frame_stride)
        raw = bridge_actions(entry["state"][rows], entry["gripper"][rows], self.accumulate)
        sample["actions"] = torch.from_numpy(self.normalizer(raw))
        sample["caption"] = entry["caption"]
        return sample
