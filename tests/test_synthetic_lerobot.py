"""The synthetic pick-and-place set as LeRobot with ground-truth actions: render_episode draws
exactly what render_video draws, the state follows what the video shows (the carried cube sits
under the gripper state), actions are the state's per-frame deltas, and the set reads back through
LeRobotDataset with its per-task T5 pickles and either camera."""

from __future__ import annotations

import json

import numpy as np
import pytest

from data_prep import synthetic
from data_prep.synthetic_lerobot import ensure_synthetic_lerobot, synthetic_lerobot_dataset


def test_render_episode_is_render_video_plus_the_gripper_state():
    task = ("red", "blue", "green")
    frames, state = synthetic.render_episode(task, 17, 32, np.random.default_rng(1), texture=3.0)
    assert np.array_equal(
        frames, synthetic.render_video(task, 17, 32, np.random.default_rng(1), texture=3.0)
    )
    actions = synthetic.gripper_actions(state)
    assert np.array_equal(actions[:-1], state[1:] - state[:-1]) and not actions[-1].any()
    track = synthetic.track_cube(frames, "red")
    carried = [t for t in range(17) if state[t, 2] == 0.0]  # fingers closed: the cube moves along
    assert len(carried) >= 4
    first = carried[0]
    for t in carried:  # the cube moves as the gripper state does (the palm hides its top edge)
        moved = np.subtract(track[t], track[first])
        np.testing.assert_allclose(moved, state[t, :2] - state[first, :2], atol=1.5 / 32)
    assert np.abs(state[carried[-1], :2] - state[first, :2]).max() > 0.2  # a real carry


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic_lerobot") / "set"
    ensure_synthetic_lerobot(root, num_episodes=3, num_frames=9, size=32, version="v3.0")
    return root


def test_reads_back_with_actions_text_and_both_cameras(root):
    kw = dict(num_episodes=3, source_frames=9, size=32, version="v3.0")
    ds = synthetic_lerobot_dataset(
        root,
        **kw,
        num_frames=5,
        video_size=(32, 32),
        action_norm="none",
        text="t5",
        state_key="observation.state",
    )
    assert len(ds) == 3 * 5 and ds.action_dim == 3 and ds.state_dim == 3
    s = ds[6]
    np.testing.assert_allclose(s["actions"].numpy(), np.diff(s["state"].numpy(), axis=0), atol=1e-6)
    assert s["caption"].startswith("pick up the ") and s["t5_text_embeddings"].abs().sum() > 0
    assert int(s["t5_text_mask"].sum()) > 3
    front = synthetic_lerobot_dataset(root, **kw, camera="front", num_frames=5, video_size=(32, 32))
    a, b = s["video"].float(), front[6]["video"].float()
    assert (a - b.flip(-2)).abs().mean() < 4  # the front camera is the top view upside down
    info = json.loads((root / "meta/info.json").read_text())
    assert info["features"]["action"]["names"] == ["dy", "dx", "dopening"]
    with pytest.raises(FileExistsError, match="not .*num_frames"):
        ensure_synthetic_lerobot(root, num_episodes=3, num_frames=11, size=32, version="v3.0")


def test_strided_actions_are_the_state_change_between_clip_frames(root):
    """The set's actions are per-frame deltas (modality.json says relative): with a frame stride
    the reader sums a transition's rows, so each action is exactly the gripper's move from one
    clip frame to the next, what the video shows; subsampling them would not be."""
    kw = dict(num_episodes=3, source_frames=9, size=32, version="v3.0", num_frames=4)
    kw |= dict(video_size=(32, 32), frame_stride=2, action_norm="none")
    ds = synthetic_lerobot_dataset(root, **kw, state_key="observation.state")
    assert len(ds) == 3 * 3
    for i in range(len(ds)):
        s = ds[i]
        moves = np.diff(s["state"].numpy(), axis=0)
        np.testing.assert_allclose(s["actions"].numpy(), moves, atol=1e-6)
    sub = synthetic_lerobot_dataset(
        root, **kw, state_key="observation.state", action_kind="absolute"
    )
    assert not np.allclose(sub[1]["actions"].numpy(), np.diff(sub[1]["state"].numpy(), axis=0))
