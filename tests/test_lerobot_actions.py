"""LeRobot actions against their frames: held-out items start at the frame their first row's
timestamp names (GR00T files start at 1/fps), and with a frame stride s a relative (delta) action
dimension is the sum of the s rows a clip transition spans while an absolute one is subsampled
(GR00T's `absolute` flag in meta/modality.json; lerobot_format.md §4.1)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from framework.data.action_norm import ActionNorm
from framework.data.lerobot import LeRobotDataset
from framework.data.lerobot_writer import write_lerobot
from tests.test_data import decoded_indices
from tests.test_lerobot import LENGTHS, SIZE, episodes, gr00t_folder


@pytest.mark.parametrize("stride", [1, 2])
def test_heldout_item_starts_at_its_first_rows_frame_in_gr00t_files(tmp_path, stride):
    root = tmp_path / "gr00t"
    actions = gr00t_folder(root, n=10, video_frames=11)
    ds = LeRobotDataset(
        root,
        camera="ego_view",
        num_frames=4,
        video_size=SIZE,
        frame_stride=stride,
        action_norm="none",
    )
    item = ds.heldout_items(1, 4)[0]
    first_window = ds[0]
    want = [1 + stride * k for k in range(4)]  # row r is the frame at (r + 1) / fps
    assert decoded_indices(item.video[0].numpy()) == want
    assert decoded_indices(first_window["video"].numpy()) == want
    held = item.conditions["actions"][0].numpy()
    np.testing.assert_array_equal(held, first_window["actions"].numpy())
    np.testing.assert_array_equal(held, actions[: 3 * stride : stride].astype(np.float32))


def test_heldout_item_of_a_shared_v3_file_matches_its_first_window(tmp_path):
    root = tmp_path / "v3"
    write_lerobot(root, episodes(), fps=10, version="v3.0", episodes_per_file=3)
    ds = LeRobotDataset(root, camera="top", num_frames=4, video_size=SIZE)
    items = ds.heldout_items(3, 4)
    starts = np.cumsum([0, *LENGTHS])  # global frame numbers: the three share one mp4
    for e, item in enumerate(items):
        window = ds[sum(n - 3 for n in LENGTHS[:e])]  # episode e's first window
        assert decoded_indices(item.video[0].numpy()) == list(range(starts[e], starts[e] + 4))
        assert decoded_indices(window["video"].numpy()) == decoded_indices(item.video[0].numpy())
        np.testing.assert_array_equal(item.conditions["actions"][0], window["actions"])


def _modality(root, action_slices: list[dict]) -> None:
    path = root / "meta/modality.json"
    modality = json.loads(path.read_text())
    modality["action"] = {f"part{i}": s for i, s in enumerate(action_slices)}
    path.write_text(json.dumps(modality))


def test_frame_stride_sums_relative_actions_and_subsamples_absolute_ones(tmp_path):
    src = episodes()
    relative, absolute = tmp_path / "relative", tmp_path / "absolute"
    write_lerobot(relative, src, fps=10, absolute_actions=False)
    write_lerobot(absolute, src, fps=10)
    assert json.loads((relative / "meta/modality.json").read_text())["action"]["action"] == {
        "start": 0,
        "end": 3,
        "absolute": False,
    }
    kw = dict(num_frames=3, video_size=(16, 20), frame_stride=3, action_norm="none")

    def check(ds, summed_dims):
        for i in range(len(ds)):
            episode, row = ds.window(i)
            raw = src[episode].actions.astype(np.float64)
            want = np.stack([raw[row + 3 * k] for k in range(2)])
            sums = np.stack([raw[row + 3 * k : row + 3 * k + 3].sum(0) for k in range(2)])
            want[:, summed_dims] = sums[:, summed_dims]
            np.testing.assert_allclose(ds[i]["actions"].numpy(), want, rtol=1e-6, atol=1e-6)

    check(LeRobotDataset(relative, **kw), [0, 1, 2])
    check(LeRobotDataset(absolute, **kw), [])  # GR00T's default: absolute
    check(LeRobotDataset(absolute, **kw, action_kind="delta"), [0, 1, 2])
    check(LeRobotDataset(relative, **kw, action_kind="absolute"), [])
    # Per dimension, as modality.json slices the action vector: 0 absolute, 1-2 relative.
    _modality(absolute, [{"start": 0, "end": 1}, {"start": 1, "end": 3, "absolute": False}])
    check(LeRobotDataset(absolute, **kw), [1, 2])
    with pytest.raises(ValueError, match="action_kind 'sum' is unknown"):
        LeRobotDataset(relative, **kw | {"action_kind": "sum"})

    # Normalized after summing, with the per-row statistics; held-out items and
    # episode_actions give a window-at-row-0's actions.
    ds = LeRobotDataset(relative, num_frames=3, video_size=(16, 20), frame_stride=3)
    norm = ActionNorm("min_max", ds.meta.stats()["action"])
    raw = src[1].actions.astype(np.float64)
    want = norm(np.stack([raw[0:3].sum(0), raw[3:6].sum(0)]))
    first_of_1 = LENGTHS[0] - 6
    np.testing.assert_allclose(ds[first_of_1]["actions"].numpy(), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ds.episode_actions(1, 2), want, rtol=1e-5, atol=1e-6)
    assert ds.episode_actions(1).shape == ((LENGTHS[1] - 1) // 3, 3)
    with pytest.raises(ValueError, match="fewer than the 4 needed"):
        ds.episode_actions(1, 4)
