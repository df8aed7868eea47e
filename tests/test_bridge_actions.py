"""Bridge with actions (framework/data/bridge_actions.py): the rotation convention and the
relative-action formula against upstream's documented rules written out here step by step
(elementary matrices, R = Rz Ry Rx, learnopencv's rotm2euler, x20 scaler), a hand-checked case,
and BridgeActionDataset on the synthetic Bridge set (no pickles needed, actions per transition).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from data_prep.synthetic_bridge import synthetic_bridge_dataset
from framework.data.bridge_actions import (
    BRIDGE_ACTION_SCALE,
    BridgeActionDataset,
    bridge_actions,
    euler_to_matrix,
    matrix_to_euler,
)
from framework.data.dataset import BadDataError


def rx(a):
    return np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])


def ry(b):
    return np.array([[math.cos(b), 0, math.sin(b)], [0, 1, 0], [-math.sin(b), 0, math.cos(b)]])


def rz(c):
    return np.array([[math.cos(c), -math.sin(c), 0], [math.sin(c), math.cos(c), 0], [0, 0, 1]])


def reference_euler(r: np.ndarray) -> list[float]:
    """The documented rotm2euler: R = Rz Ry Rx, singular when sqrt(r00^2 + r10^2) < 1e-6."""
    sy = math.sqrt(r[0, 0] ** 2 + r[1, 0] ** 2)
    if sy >= 1e-6:
        angles = [
            math.atan2(r[2, 1], r[2, 2]),
            math.atan2(-r[2, 0], sy),
            math.atan2(r[1, 0], r[0, 0]),
        ]
    else:
        angles = [math.atan2(-r[1, 2], r[1, 1]), math.atan2(-r[2, 0], sy), 0.0]
    return [a + 2 * math.pi if a <= -math.pi else a for a in angles]


def reference_actions(state, gripper, accumulate=False) -> np.ndarray:
    out = []
    for k in range(1, len(state)):
        ref = 0 if accumulate else k - 1
        r_ref = rz(state[ref][5]) @ ry(state[ref][4]) @ rx(state[ref][3])
        r_cur = rz(state[k][5]) @ ry(state[k][4]) @ rx(state[k][3])
        xyz = r_ref.T @ (np.array(state[k][:3]) - np.array(state[ref][:3]))
        out.append([*xyz, *reference_euler(r_ref.T @ r_cur), gripper[k]])
    return np.array(out)


def test_rotation_convention_and_actions_match_the_documented_rules():
    rng = np.random.default_rng(0)
    rpy = rng.uniform(-3, 3, (20, 3)) * [1, 0.5, 1]
    for angles, m in zip(rpy, euler_to_matrix(rpy)):
        np.testing.assert_allclose(m, rz(angles[2]) @ ry(angles[1]) @ rx(angles[0]), atol=1e-12)
        np.testing.assert_allclose(matrix_to_euler(m), reference_euler(m), atol=1e-12)
    state = np.concatenate([rng.normal(0, 0.1, (9, 3)), rpy[:9]], axis=1)
    gripper = rng.uniform(0, 1, 9)
    for accumulate in (False, True):
        np.testing.assert_allclose(
            bridge_actions(state, gripper, accumulate),
            reference_actions(state, gripper, accumulate),
            atol=1e-10,
        )
    locked = euler_to_matrix(np.array([0.3, math.pi / 2, 0.2]))  # gimbal lock branch
    np.testing.assert_allclose(matrix_to_euler(locked), reference_euler(locked), atol=1e-9)


def test_hand_checked_action():
    """Gripper yawed 90 degrees moves +x in the world: -y in its own frame; turns 0.1 rad more."""
    state = [[0, 0, 0, 0, 0, math.pi / 2], [0.05, 0, 0, 0, 0, math.pi / 2 + 0.1]]
    raw = bridge_actions(np.array(state), np.array([0.0, 1.0]))
    np.testing.assert_allclose(raw, [[0, -0.05, 0, 0, 0, 0.1, 1.0]], atol=1e-12)
    assert BRIDGE_ACTION_SCALE == [20.0] * 6 + [1.0]


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bridge_actions") / "set"
    synthetic_bridge_dataset(
        root,
        num_videos=3,
        source_frames=9,
        size=(32, 40),
        num_val=1,
        num_frames=5,
        video_size=(16, 20),
    )
    return root


def test_synthetic_bridge_actions(synthetic):
    ds = synthetic_bridge_dataset(
        synthetic,
        num_videos=3,
        source_frames=9,
        size=(32, 40),
        num_val=1,
        actions=True,
        num_frames=5,
        video_size=(16, 20),
        frame_stride=2,
    )
    assert isinstance(ds, BridgeActionDataset) and ds.action_dim == 7
    assert len(ds) == 3  # one window of 9 frames at stride 2 per episode
    for i in range(len(ds)):
        s = ds[i]
        ann = json.loads(Path(ds.window(i)[0]).read_text())
        rows = slice(0, 9, 2)
        want = (
            bridge_actions(
                np.array(ann["state"])[rows], np.array(ann["continuous_gripper_state"])[rows]
            )
            * BRIDGE_ACTION_SCALE
        )
        assert s["actions"].dtype == torch.float32 and s["actions"].shape == (4, 7)
        np.testing.assert_allclose(s["actions"].numpy(), want, rtol=1e-6, atol=1e-6)
        assert s["video"].shape == (3, 5, 16, 20) and s["caption"] == ""
        assert s["t5_text_embeddings"].abs().sum() == 0
    moving = ds[0]["actions"][:, :2].abs().sum()
    assert moving > 0.1  # the arm moves: the actions are not all zero
    assert ds.action_normalization == {"mode": "scale", "scale": BRIDGE_ACTION_SCALE}


def test_no_pickles_needed_without_text(synthetic, tmp_path):
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(synthetic, root, ignore=shutil.ignore_patterns("*.pickle", "synthetic.json"))
    ds = BridgeActionDataset(root, num_frames=5, video_size=(16, 20))
    assert len(ds) == 3 * 5 and ds[0]["actions"].shape == (4, 7)
    assert ds.heldout_items(1, 5)[0].prompt == ""
    with pytest.raises(BadDataError, match="no usable episodes"):
        len(BridgeActionDataset(root, num_frames=5, video_size=(16, 20), text="t5"))
    ann = root / "annotation/train/0.json"
    data = json.loads(ann.read_text())
    del data["continuous_gripper_state"]
    ann.write_text(json.dumps(data))
    ds = BridgeActionDataset(root, num_frames=5, video_size=(16, 20), max_bad_fraction=0.5)
    assert len(ds) == 2 * 5 and "1 bad actions" in ds.summary


def test_experiment_block_builds_the_dataset(synthetic):
    from experiments import blocks
    from framework.config import instantiate

    ds = instantiate(blocks.bridge_action_dataset(str(synthetic), 5, (16, 20)))
    assert isinstance(ds, BridgeActionDataset) and ds[0]["actions"].shape == (4, 7)
