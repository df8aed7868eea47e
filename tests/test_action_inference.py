"""Actions for generation and evaluation: held-out items carry their window's actions, and
video2world / batch JSON / best-of-N read actions from files, Bridge annotations and LeRobot
episodes, normalized as the training samples are (checked against the datasets' own samples)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from data_prep.synthetic_bridge import synthetic_bridge_dataset
from data_prep.synthetic_lerobot import ensure_synthetic_lerobot
from framework.config import ConfigError
from framework.data.lerobot import LeRobotDataset
from framework.inference import video2world as v2w
from framework.inference.conditions import read_actions

BRIDGE = dict(num_videos=3, source_frames=9, size=(32, 40), num_val=1, num_frames=5)


@pytest.fixture(scope="module")
def lerobot(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("lerobot") / "set"
    return ensure_synthetic_lerobot(root, num_episodes=3, num_frames=9, size=16, num_val=1)


@pytest.fixture(scope="module")
def bridge(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bridge") / "set"
    synthetic_bridge_dataset(root, **BRIDGE, video_size=(16, 20))
    return root


@pytest.mark.parametrize("mode, stride", [("min_max", 1), ("mean_std", 2)])
def test_lerobot_episode_actions_are_the_training_samples(lerobot, mode, stride):
    ds = LeRobotDataset(
        lerobot, num_frames=4, video_size=(16, 16), frame_stride=stride, action_norm=mode
    )
    node = {"action_key": "action", "action_norm": mode, "frame_stride": stride}
    got = read_actions(f"{lerobot}:1", node)
    first = next(i for i in range(len(ds)) if ds.window(i) == (1, 0))
    want = ds[first]["actions"]
    assert got.shape[0] == 1 and got.shape[1] >= len(want)
    torch.testing.assert_close(got[0, : len(want)], want)
    # Held-out items (the val split: episode 2) carry their first window's actions, what eval
    # and sample hooks roll out.
    item = ds.heldout_items(1, 1)[0]
    assert item.name == "episode_000002"
    val = next(i for i in range(len(ds)) if ds.window(i) == (2, 0))
    torch.testing.assert_close(item.conditions["actions"][0], ds[val]["actions"])
    train = LeRobotDataset(lerobot, num_frames=4, video_size=(16, 16), split="train")
    assert {train.window(i)[0] for i in range(len(train))} == {0, 1}
    with pytest.raises(ConfigError, match="has no episode 7"):
        read_actions(f"{lerobot}:7", node)


def test_bridge_annotation_and_heldout_actions(bridge):
    ds = synthetic_bridge_dataset(bridge, **BRIDGE, video_size=(16, 20), actions=True)
    ann = Path(ds.window(0)[0])
    torch.testing.assert_close(read_actions(ann)[0, :4], ds[0]["actions"])
    item = ds.heldout_items(1, 1)[0]
    split, _, stem = item.name.partition("_")
    val = synthetic_bridge_dataset(bridge, **BRIDGE, video_size=(16, 20), actions=True, split=split)
    index = next(i for i in range(len(val)) if Path(val.window(i)[0]).stem == stem)
    torch.testing.assert_close(item.conditions["actions"][0], val[index]["actions"])
    online = synthetic_bridge_dataset(
        bridge, **BRIDGE, video_size=(16, 20), actions=True, text="online"
    )
    assert "t5_text_embeddings" not in online[0] and online[0]["caption"] == ""
    assert online.heldout_items(1, 1)[0].text == [""]  # the model embeds the empty caption


def test_batch_json_items_read_each_kind_of_actions(lerobot, bridge, tmp_path):
    video = next(lerobot.glob("videos/**/*.mp4"))
    npy = tmp_path / "a.npy"
    np.save(npy, np.ones((6, 3), np.float32))
    ann = next((bridge / "annotation" / "train").glob("*.json"))
    entries = [
        {"input_video": str(video), "prompt": "x", "actions": str(npy)},
        {
            "input_video": str(video),
            "actions": f"{lerobot}:0",
            "output_video": str(tmp_path / "b.mp4"),
        },
        {"input_video": str(video), "actions": str(ann), "output_video": str(tmp_path / "c.mp4")},
        {"input_video": str(video), "actions": str(tmp_path / "missing.npy")},
    ]
    path = tmp_path / "batch.json"
    path.write_text(json.dumps(entries))
    items, rejected = v2w.read_batch(path, tmp_path, {"action_norm": "min_max"})
    assert [it.conditions["actions"].shape[2] for it in items] == [3, 3, 7]
    assert len(rejected) == 1 and "missing.npy does not exist" in rejected[0][1]
