"""LeRobot datasets: the writer's v2.1 / v3.0 output follows the documented layout
(../shared/spec/lerobot_format.md §2-3, checked with plain pyarrow/json, not our reader), reads back
with LeRobotDataset bit-exactly for actions and within codec tolerance for frames (two cameras,
H.264 and AV1), a GR00T-demo-shaped v2.0 folder made by hand reads as GR00T reads it, and actions
are normalized per dimension with statistics stored in meta/stats.json.

Frames encode a global frame number in their grey level (tests/test_data.py), so the frames a
sample holds can be read back from its pixels across episodes sharing one v3 mp4.
"""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from torch.utils.data import DataLoader

from framework.data.lerobot import LeRobotDataset
from framework.data.lerobot_meta import LeRobotFormatError
from framework.data.lerobot_writer import Episode, write_lerobot
from framework.data.video import write_video
from tests.test_data import STEP, decoded_indices

LENGTHS = (12, 9, 15)  # frames per episode; grey levels stay below 255 (36 frames x STEP 6)
SIZE = (32, 40)
TASKS = ("pick the cube", "open the drawer", "pick the cube")
HAS_AV1 = "libsvtav1" in av.codecs_available and "libdav1d" in av.codecs_available


def grey(first: int, n: int, invert: bool = False) -> np.ndarray:
    levels = STEP * (first + np.arange(n))
    frames = np.broadcast_to(levels[:, None, None, None], (n, *SIZE, 3)).astype(np.uint8)
    return 255 - frames if invert else frames.copy()


def episodes() -> list[Episode]:
    rng = np.random.default_rng(0)
    out, first = [], 0
    for e, n in enumerate(LENGTHS):
        out.append(
            Episode(
                {"top": grey(first, n), "wrist": grey(first, n, invert=True)},
                task=TASKS[e],
                actions=rng.standard_normal((n, 3)).astype(np.float32),
                state=rng.standard_normal((n, 4)).astype(np.float32),
            )
        )
        first += n
    return out


CASES = [("v2.1", "h264", 1), ("v3.0", "h264", 2)]
CASES += [("v3.0", "av1", 3), ("v2.1", "av1", 1)] if HAS_AV1 else []


@pytest.fixture(scope="module", params=CASES, ids=lambda c: f"{c[0]}-{c[1]}-{c[2]}")
def written(request, tmp_path_factory) -> tuple[Path, str]:
    version, codec, per_file = request.param
    root = tmp_path_factory.mktemp("lerobot") / "ds"
    write_lerobot(
        root, episodes(), fps=10, version=version, codec=codec, episodes_per_file=per_file
    )
    return root, version


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean())
    return 99.0 if mse == 0 else 10 * np.log10(255.0**2 / mse)


def test_round_trip_actions_exact_frames_within_codec(written):
    root, _ = written
    src = episodes()
    ds = LeRobotDataset(
        root,
        camera="wrist",
        num_frames=4,
        video_size=SIZE,
        action_norm="none",
        state_key="observation.state",
    )
    assert len(ds) == sum(n - 3 for n in LENGTHS)
    assert (ds.action_dim, ds.state_dim) == (3, 4)
    starts = np.cumsum([0, *LENGTHS])
    for i in range(len(ds)):
        episode, row = ds.window(i)
        s = ds[i]
        assert s["actions"].dtype == torch.float32 and s["actions"].shape == (3, 3)
        assert np.array_equal(s["actions"].numpy(), src[episode].actions[row : row + 3])
        assert np.array_equal(s["state"].numpy(), src[episode].state[row : row + 4])
        want = src[episode].videos["wrist"][row : row + 4]
        got = s["video"].permute(1, 2, 3, 0).numpy()
        assert psnr(got, want) > 30, (i, psnr(got, want))
        assert decoded_indices(255 - got) == list(
            range(starts[episode] + row, starts[episode] + row + 4)
        )
        assert s["caption"] == TASKS[episode] and s["fps"] == 10.0
    top = LeRobotDataset(
        root, camera="observation.images.top", num_frames=3, video_size=(16, 20), frame_stride=2
    )
    episode, row = top.window(5)
    assert decoded_indices(top[5]["video"].numpy()) == [
        starts[episode] + row + k for k in (0, 2, 4)
    ]


def test_batches_carry_actions_and_captions(written):
    root, _ = written
    ds = LeRobotDataset(root, num_frames=5, video_size=(16, 20))
    batch = next(iter(DataLoader(ds, batch_size=2)))
    assert batch["actions"].shape == (2, 4, 3) and batch["video"].shape == (2, 3, 5, 16, 20)
    assert batch["caption"] == [TASKS[0], TASKS[0]]
    assert batch["t5_text_embeddings"].abs().sum() == 0  # text="none": the action recipe's zeros


def test_layout_follows_the_documented_format(written):
    """Spec §2 (v2.1) and §3 (v3.0): paths from the templates, columns and types, metadata."""
    root, version = written
    info = json.loads((root / "meta/info.json").read_text())
    assert info["codebase_version"] == version and info["fps"] == 10
    assert info["total_episodes"] == 3 and info["total_frames"] == sum(LENGTHS)
    assert info["features"]["action"] == {
        "dtype": "float32",
        "shape": [3],
        "names": [f"motor_{i}" for i in range(3)],
    }
    assert info["features"]["observation.images.top"]["dtype"] == "video"
    if version == "v2.1":
        lines = (root / "meta/episodes.jsonl").read_text().splitlines()
        assert [json.loads(x) for x in lines][1] == {
            "episode_index": 1,
            "tasks": [TASKS[1]],
            "length": 9,
        }
        tasks = [json.loads(x) for x in (root / "meta/tasks.jsonl").read_text().splitlines()]
        assert tasks == [{"task_index": 0, "task": TASKS[0]}, {"task_index": 1, "task": TASKS[1]}]
        stats = [
            json.loads(x) for x in (root / "meta/episodes_stats.jsonl").read_text().splitlines()
        ]
        assert stats[2]["stats"]["action"]["count"] == [15]
        data = root / "data/chunk-000/episode_000001.parquet"
        for e in range(3):
            assert (
                root / f"videos/chunk-000/observation.images.wrist/episode_{e:06d}.mp4"
            ).is_file()
        modality = json.loads((root / "meta/modality.json").read_text())
        assert modality["action"] == {"action": {"start": 0, "end": 3}}
        assert modality["video"]["top"] == {"original_key": "observation.images.top"}
    else:
        ep = pq.read_table(
            next((root / "meta/episodes").glob("chunk-*/file-*.parquet"))
        ).to_pylist()
        assert [r["length"] for r in ep] == list(LENGTHS)
        assert [r["dataset_from_index"] for r in ep] == [0, 12, 21]
        r = ep[1]
        key = "videos/observation.images.top"
        chunk, index = r[f"{key}/chunk_index"], r[f"{key}/file_index"]
        file = root / f"{key}/chunk-{chunk:03d}/file-{index:03d}.mp4"
        assert file.is_file() and r["tasks"] == [TASKS[1]]
        per_file = 2 if r["videos/observation.images.top/from_timestamp"] > 0 else None
        if per_file:
            assert r["videos/observation.images.top/from_timestamp"] == pytest.approx(1.2)
            assert r["videos/observation.images.top/to_timestamp"] == pytest.approx(2.1)
        assert "stats/action/mean" in r
        tasks = pq.read_table(root / "meta/tasks.parquet")
        meta = json.loads(tasks.schema.metadata[b"pandas"])
        assert meta["index_columns"] == ["task"]
        assert tasks.column("task").to_pylist() == list(TASKS[:2])
        data = root / f"data/chunk-000/file-{r['data/file_index']:03d}.parquet"
    table = pq.read_table(data)
    assert table.schema.field("action").type == pa.list_(pa.float32(), 3)
    assert table.schema.field("timestamp").type == pa.float32()
    for name in ("frame_index", "episode_index", "index", "task_index"):
        assert table.schema.field(name).type == pa.int64()
    rows = table.to_pydict()
    i = rows["episode_index"].index(1)
    assert rows["index"][i] == 12 and rows["frame_index"][i] == 0 and rows["task_index"][i] == 1
    assert rows["timestamp"][i + 3] == pytest.approx(0.3)
    stats = json.loads((root / "meta/stats.json").read_text())
    assert stats["action"]["count"] == [sum(LENGTHS)] and len(stats["action"]["q99"]) == 3
    assert np.array(stats["observation.images.top"]["mean"]).shape == (3, 1, 1)
    pixels = np.concatenate([e.videos["top"] for e in episodes()]).reshape(-1, 3) / 255.0
    for stat, want in (("mean", pixels.mean(0)), ("std", pixels.std(0)), ("max", pixels.max(0))):
        got = np.array(stats["observation.images.top"][stat]).reshape(3)
        np.testing.assert_allclose(got, want, atol=1e-9)


def test_min_max_normalization_and_stored_statistics(tmp_path):
    root = tmp_path / "ds"
    src = episodes()
    write_lerobot(root, src, fps=10)
    ds = LeRobotDataset(root, num_frames=3, video_size=(16, 20))  # default: GR00T's min_max
    raw = np.concatenate([e.actions for e in src]).astype(np.float64)
    lo, hi = raw.min(0), raw.max(0)
    episode, row = ds.window(4)
    want = 2 * (src[episode].actions[row : row + 2] - lo) / (hi - lo) - 1
    np.testing.assert_allclose(ds[4]["actions"].numpy(), want, rtol=1e-5, atol=1e-6)
    assert ds.action_normalization["min"] == pytest.approx(lo.tolist())
    # Statistics absent from meta/stats.json: computed once, stored there, then read back.
    stats_file = root / "meta/stats.json"
    stats = json.loads(stats_file.read_text())
    stats["action"] = {"count": stats["action"]["count"]}
    stats_file.write_text(json.dumps(stats))
    ds = LeRobotDataset(root, num_frames=3, video_size=(16, 20), action_norm="mean_std")
    got = ds[4]["actions"].numpy()
    np.testing.assert_allclose(
        got, (src[episode].actions[row : row + 2] - raw.mean(0)) / raw.std(0), rtol=1e-4, atol=1e-5
    )
    assert json.loads(stats_file.read_text())["action"]["mean"] == pytest.approx(
        raw.mean(0).tolist()
    )


def gr00t_folder(root: Path, n: int = 10, fps: int = 20, video_frames: int | None = None):
    """A GR00T-demo-shaped v2.0 folder (spec §4.2): no codebase_version, float64 list<double>
    vectors, timestamps from 1/fps (row r is video frame r + 1), no frame_index, `video_info`,
    the instruction in annotation.human.action.task_description, a "valid" task. Returns the
    actions [n, 2] (= the state)."""
    (root / "videos/chunk-000/observation.images.ego_view").mkdir(parents=True)
    write_video(
        root / "videos/chunk-000/observation.images.ego_view/episode_000000.mp4",
        grey(0, video_frames or n + 1),
        fps=fps,
    )
    actions = np.arange(n * 2, dtype=np.float64).reshape(n, 2)
    table = pa.table(
        {
            "observation.state": pa.array(actions.tolist(), pa.list_(pa.float64())),
            "action": pa.array(actions.tolist(), pa.list_(pa.float64())),
            "timestamp": (np.arange(n) + 1) / fps,
            "annotation.human.action.task_description": np.full(n, 1),
            "annotation.human.validity": np.zeros(n, dtype=np.int64),
            "task_index": np.zeros(n, dtype=np.int64),
            "episode_index": np.zeros(n, dtype=np.int64),
            "index": np.arange(n),
        }
    )
    (root / "data/chunk-000").mkdir(parents=True)
    pq.write_table(table, root / "data/chunk-000/episode_000000.parquet")
    info = {
        "robot_type": "GR1ArmsOnly",
        "fps": float(fps),
        "chunks_size": 1000,
        "data_path": "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet",
        "video_path": "videos/chunk-{episode_chunk:03d}/{video_key}/"
        "episode_{episode_index:06d}.mp4",
        "features": {
            "observation.images.ego_view": {
                "dtype": "video",
                "shape": [32, 40, 3],
                "video_info": {"video.fps": float(fps)},
            },
            "observation.state": {"dtype": "float64", "shape": [2]},
            "action": {"dtype": "float64", "shape": [2]},
            "annotation.human.action.task_description": {"dtype": "int64", "shape": [1]},
        },
    }
    (root / "meta").mkdir()
    (root / "meta/info.json").write_text(json.dumps(info))
    (root / "meta/episodes.jsonl").write_text(
        json.dumps({"episode_index": 0, "tasks": ["valid", "pick the pear"], "length": n}) + "\n"
    )
    (root / "meta/tasks.jsonl").write_text(
        '{"task_index": 0, "task": "valid"}\n{"task_index": 1, "task": "pick the pear"}\n'
    )
    return actions


def test_gr00t_demo_shaped_v20(tmp_path):
    """The GR00T demo's quirks read as GR00T reads them (gr00t_folder)."""
    root = tmp_path / "gr00t"
    actions = gr00t_folder(root)
    ds = LeRobotDataset(
        root, camera="ego_view", num_frames=4, video_size=(16, 20), action_norm="none"
    )
    s = ds[2]
    assert s["caption"] == "pick the pear"
    assert decoded_indices(s["video"].numpy()) == [3, 4, 5, 6]  # row r is the frame at (r+1)/fps
    assert s["actions"].dtype == torch.float32
    assert np.array_equal(s["actions"].numpy(), actions[2:5].astype(np.float32))
    assert ds.meta.version == "v2.0"
    # min_max statistics are computed from the rows and stored, as GR00T does without stats.json
    LeRobotDataset(root, camera="ego_view", num_frames=4, video_size=(16, 20))[0]
    stored = json.loads((root / "meta/stats.json").read_text())["action"]
    assert stored["max"] == [18.0, 19.0]


def test_bad_and_short_episodes_and_config_errors(tmp_path):
    root = tmp_path / "ds"
    write_lerobot(root, episodes(), fps=10)
    (root / "videos/chunk-000/observation.images.top/episode_000002.mp4").unlink()
    ds = LeRobotDataset(
        root, camera="top", num_frames=10, video_size=(16, 20), max_bad_fraction=0.5
    )
    assert len(ds) == 3  # episode 0 only: 1 is too short (9 < 10), 2 lost its video
    assert "1 missing video" in ds.summary and "1 too short" in ds.summary
    with pytest.raises(LeRobotFormatError, match=r"no camera 'side'.*\['top', 'wrist'\]"):
        LeRobotDataset(root, camera="side")
    with pytest.raises(LeRobotFormatError, match="no vector feature 'actions'"):
        LeRobotDataset(root, action_key="actions")
    with pytest.raises(LeRobotFormatError, match="meta/info.json does not exist"):
        LeRobotDataset(tmp_path)
    with pytest.raises(FileExistsError, match="not empty"):
        write_lerobot(root, episodes(), fps=10)


def test_validate_lerobot_folders(tmp_path, capsys):
    from data_prep import validate

    root = tmp_path / "ds"
    write_lerobot(root, episodes(), fps=10, version="v2.1")
    assert validate.main([str(root), "--num_frames", "10"]) == 0
    out = capsys.readouterr().out
    assert "LeRobot v2.1, 3 episodes, 2 tasks, cameras top, wrist" in out
    assert "too short: 9 < 10 frames" in out
    write_video(root / "videos/chunk-000/observation.images.top/episode_000001.mp4", grey(0, 5))
    data = root / "data/chunk-000/episode_000002.parquet"
    table = pq.read_table(data)
    bad = table.column("action").combine_chunks().flatten().to_numpy().copy()
    bad[4] = np.nan
    column = pa.FixedSizeListArray.from_arrays(pa.array(bad), 3)
    pq.write_table(table.set_column(table.schema.get_field_index("action"), "action", column), data)
    assert validate.main([str(root), "--num_frames", "4"]) == 1
    out = capsys.readouterr().out
    assert "top: 5 frames, rows need 9" in out and "action has NaN or inf" in out


def test_experiment_block_builds_the_dataset(written):
    from experiments import blocks
    from framework.config import instantiate

    root, _ = written
    node = blocks.lerobot_dataset(str(root), camera="top", num_frames=4, video_size=(16, 20))
    ds = instantiate(node)
    assert isinstance(ds, LeRobotDataset) and ds[0]["actions"].shape == (3, 3)


def test_export_generated_videos_with_actions(tmp_path, capsys):
    """data_prep.lerobot_export: DreamGen-named mp4s + <stem>.npy actions -> LeRobot, read back."""
    from data_prep import lerobot_export

    gen, acts = tmp_path / "gen", tmp_path / "acts"
    gen.mkdir(), acts.mkdir()
    rng = np.random.default_rng(1)
    want = {}
    for i, (name, n) in enumerate([("0_pick_the_cup", 8), ("1_open_the_box", 6)]):
        write_video(gen / f"{name}.mp4", grey(10 * i, n), fps=16)
        want[name] = rng.standard_normal((n, 2)).astype(np.float32)
        np.save(acts / f"{name}.npy", want[name])
    out = tmp_path / "out"
    argv = ["--videos", str(gen), "--actions", str(acts), "--output", str(out), "--version", "v3.0"]
    assert lerobot_export.main(argv) == 0
    ds = LeRobotDataset(out, num_frames=6, video_size=SIZE, action_norm="none")
    assert ds.meta.fps == 16 and len(ds) == 3 + 1
    s = ds[3]
    assert s["caption"] == "open the box" and decoded_indices(s["video"].numpy()) == list(
        range(10, 16)
    )
    assert np.array_equal(s["actions"].numpy(), want["1_open_the_box"][:5])
    np.save(acts / "1_open_the_box.npy", np.zeros((6, 2), dtype=object))
    assert lerobot_export.main([*argv[:4], "--output", str(tmp_path / "o2")]) == 2
    assert "save a float [T, A] array" in capsys.readouterr().err
