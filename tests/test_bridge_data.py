"""Bridge layout: BridgeDataset (windows, short episodes, bad files as for GR1, held-out items),
data_prep.bridge (unpack, counts, T5 pickles, resume), data_prep.validate on it, and the
synthetic Bridge generator (determinism, stale folders, visible motion).

Test videos encode the frame index in their grey level (tests/test_data.py), so the window a
sample holds can be read back from its pixels.
"""

from __future__ import annotations

import io
import json
import logging
import os
import pickle
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from data_prep import bridge, synthetic_bridge, validate
from framework.data.bridge import BridgeDataset, read_annotation
from framework.data.dataset import BadDataError
from framework.data.safe_load import save_t5_pickle
from framework.data.video import write_video
from tests.test_data import _Evil, decoded_indices, index_frames

SIZE = (32, 40)  # source videos; the dataset reads them at VIDEO
VIDEO = (16, 20)
EPISODES = {"train": {"0": 12, "1": 10, "2": 5}, "val": {"0": 9, "1": 4, "2": 11}}
TEXTS = {"0": "move the red block to the left", "1": "put the spoon in the pot", "2": "open"}


def write_episode(root: Path, split: str, stem: str, frames: int, state: int | None = None) -> Path:
    """annotation/<split>/<stem>.json (+ .pickle) and videos/<split>/<stem>/rgb.mp4."""
    video = f"videos/{split}/{stem}/rgb.mp4"
    (root / video).parent.mkdir(parents=True, exist_ok=True)
    write_video(root / video, index_frames(frames, *SIZE), fps=5)
    ann = {
        "episode_id": int(stem) if stem.isdigit() else stem,
        "texts": [TEXTS.get(stem, "wave")],
        "videos": [{"video_path": video}],
        "state": [[0.0] * 6 for _ in range(frames if state is None else state)],
    }
    path = root / "annotation" / split / f"{stem}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(ann))
    rng = np.random.default_rng(len(stem) + frames)
    save_t5_pickle(rng.standard_normal((5, 1024)).astype(np.float32), path.with_suffix(".pickle"))
    return path


@pytest.fixture(scope="module")
def layout(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bridge")
    for split, episodes in EPISODES.items():
        for stem, frames in episodes.items():
            write_episode(root, split, stem, frames)
    return root


@pytest.fixture
def copy(layout, tmp_path) -> Path:
    """A private copy of the layout that a test may damage."""
    return Path(shutil.copytree(layout, tmp_path / "bridge"))


def dataset(root: Path, **kw) -> BridgeDataset:
    return BridgeDataset(root, **{"num_frames": 4, "video_size": VIDEO, **kw})


# ---- windows --------------------------------------------------------------------------------
def test_every_window_of_every_episode_in_order(layout):
    ds = dataset(layout)
    assert len(ds) == 9 + 7 + 2  # N - 3 windows per episode of N frames
    ds = dataset(layout, num_frames=6)
    assert len(ds) == 7 + 5  # episode "2" (5 frames) is too short for 6
    ann = str(layout / "annotation" / "train" / "{}.json")
    want = [(ann.format(0), s) for s in range(7)] + [(ann.format(1), s) for s in range(5)]
    assert [ds.window(i) for i in range(len(ds))] == want
    for i in (0, 6, 7, 11):
        assert decoded_indices(ds[i]["video"].numpy()) == list(range(want[i][1], want[i][1] + 6))
    with pytest.raises(IndexError):
        ds[len(ds)]


def test_sample_keys_padding_and_fps(layout):
    ds = dataset(layout, frame_stride=3, fps=4.0, max_text_tokens=16)
    assert len(ds) == (12 - 9) + (10 - 9)  # span (4-1)*3+1 = 10
    s = ds[1]
    assert s["video"].dtype == torch.uint8 and tuple(s["video"].shape) == (3, 4, *VIDEO)
    assert decoded_indices(s["video"].numpy()) == [1, 4, 7, 10]
    emb, mask = s["t5_text_embeddings"], s["t5_text_mask"]
    assert emb.dtype == torch.float32 and tuple(emb.shape) == (16, 1024)
    assert emb[:5].abs().sum(1).gt(0).all() and emb[5:].abs().sum() == 0  # zero-padded
    assert mask.dtype == torch.int64 and mask.tolist() == [1] * 5 + [0] * 11
    assert isinstance(s["fps"], float) and s["fps"] == pytest.approx(4.0 / 3)
    assert s["padding_mask"].dtype == torch.float32 and tuple(s["padding_mask"].shape) == (
        1,
        16,
        20,
    )
    assert s["padding_mask"].abs().sum() == 0
    assert s["image_size"].tolist() == [16, 20, 16, 20] and s["num_frames"] == 4
    assert s["bad_replaced"] == 0
    batch = next(iter(DataLoader(ds, batch_size=2)))
    assert tuple(batch["video"].shape) == (2, 3, 4, *VIDEO)
    assert tuple(batch["t5_text_embeddings"].shape) == (2, 16, 1024)


def test_keep_in_memory_gives_the_same_windows(layout):
    plain, kept = (
        dataset(layout, frame_stride=2),
        dataset(layout, frame_stride=2, keep_in_memory=True),
    )
    assert len(plain) == len(kept) == 6 + 4
    for i in range(len(plain)):
        assert torch.equal(plain[i]["video"], kept[i]["video"])


def test_short_episodes_are_reported_but_not_bad(copy, caplog):
    for stem in ("3", "4", "5"):
        write_episode(copy, "train", stem, 6)
    with caplog.at_level(logging.INFO):
        ds = dataset(copy, num_frames=8, max_bad_fraction=0.1)
        assert len(ds) == 5 + 3
    assert ds.summary == "6 episodes, 4 skipped (4 too short (<8 frames)); 8 windows of 8 frames"
    assert "WARNING" not in caplog.text  # short episodes are normal in Bridge
    with pytest.raises(BadDataError, match="no usable episodes.*6 too short"):
        len(dataset(copy, num_frames=13))


# ---- bad files --------------------------------------------------------------------------------
def test_bad_files_skipped_at_indexing_and_code_never_runs(copy, tmp_path, caplog):
    marker = tmp_path / "pwned"
    train = copy / "annotation" / "train"
    for stem in ("evil", "garbage", "trunc", "novideo", "nopickle", "badjson", "escape"):
        write_episode(copy, "train", stem, 10)
    (train / "evil.pickle").write_bytes(pickle.dumps([_Evil(str(marker))]))
    (copy / "videos/train/garbage/rgb.mp4").write_bytes(os.urandom(3000))
    whole = (copy / "videos/train/trunc/rgb.mp4").read_bytes()
    (copy / "videos/train/trunc/rgb.mp4").write_bytes(whole[: len(whole) // 2])
    shutil.rmtree(copy / "videos/train/novideo")
    (train / "nopickle.pickle").unlink()
    (train / "badjson.json").write_text('{"videos": [')
    ann = json.loads((train / "escape.json").read_text())
    ann["videos"][0]["video_path"] = "../../etc/passwd"
    (train / "escape.json").write_text(json.dumps(ann))
    with caplog.at_level(logging.WARNING):
        ds = dataset(copy, max_bad_fraction=0.9)
        assert len(ds) == 9 + 7 + 2
    reasons = {Path(path).stem: why for path, why in ds.skipped}
    assert reasons == {
        "evil": "bad embedding",
        "garbage": "unreadable video",
        "trunc": reasons["trunc"],
        "novideo": "missing video",
        "nopickle": "no embedding",
        "badjson": "bad annotation",
        "escape": "bad annotation",
    }
    assert reasons["trunc"] in ("unreadable video", "too short (<4 frames)")
    assert ds.summary.startswith("10 episodes, 7 skipped")
    assert "badjson.json: bad annotation" in caplog.text
    # a refused pickle is never executed, by the dataset nor by the held-out items
    shutil.rmtree(copy / "annotation" / "val")
    assert [item.name for item in ds.heldout_items(20, 3)] == ["train_0", "train_1", "train_2"]
    assert not marker.exists()
    # too many bad episodes stop the run at start-up (the short one does not count)
    with pytest.raises(BadDataError, match=r"samples.*max_bad_fraction 50%"):
        len(dataset(copy, max_bad_fraction=0.5))


def test_load_time_failures_replaced_by_other_episodes(copy):
    write_episode(copy, "train", "3", 10)
    write_episode(copy, "train", "4", 10)
    write_episode(copy, "train", "5", 9, state=12)  # the video is shorter than its annotation
    (copy / "videos/train/3/rgb.mp4").write_bytes(os.urandom(3000))
    ds = dataset(copy, check="exists", max_bad_fraction=0.5)
    assert len(ds) == 9 + 7 + 2 + 7 + 7 + 9  # "exists": lengths from len(state) alone
    first = {Path(ds.window(i)[0]).stem: i for i in reversed(range(len(ds)))}
    with pytest.warns(UserWarning, match="3/rgb.mp4"):
        s = ds[first["3"] + 2]
    assert s["bad_replaced"] >= 1 and tuple(s["video"].shape) == (3, 4, *VIDEO)
    last_of_5 = first["5"] + 8  # frames 8..11 of a 9-frame video
    with pytest.warns(UserWarning, match="has 9 frames, the window from 8 needs 4"):
        ds[last_of_5]
    torch.manual_seed(0)
    drawn = {Path(ds.window(ds._replacement())[0]).stem for _ in range(60)}
    assert drawn == {"0", "1", "2", "4"}  # a failed episode is not drawn again
    # with the header read, the video's own length caps the episode: no failing window
    assert len(dataset(copy, max_bad_fraction=0.5)) == 9 + 7 + 2 + 7 + 6


def test_heldout_items_from_val_else_own_split(copy):
    ds = dataset(copy, frame_stride=2, fps=4.0)
    items = ds.heldout_items(2, 5)  # span 9: val "1" (4 frames) is skipped
    assert [i.name for i in items] == ["val_0", "val_2"]
    assert items[0].prompt == TEXTS["0"] and items[1].prompt == "open"
    assert tuple(items[0].video.shape) == (1, 3, 5, *VIDEO)
    assert decoded_indices(items[1].video[0].numpy()) == [0, 2, 4, 6, 8]
    assert tuple(items[0].text_emb.shape) == (1, 5, 1024) and items[0].fps == 2.0
    for embedded in (copy / "annotation" / "val").glob("*.pickle"):
        embedded.unlink()  # as after upstream's script, which embeds only train
    assert [i.name for i in ds.heldout_items(5, 5)] == ["train_0", "train_1"]
    shutil.rmtree(copy / "annotation" / "val")
    assert [i.name for i in ds.heldout_items(1, 5)] == ["train_0"]


# ---- data_prep.bridge -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def t5_dir(tmp_path_factory) -> Path:
    from data_prep.small_t5 import make_small_t5

    return make_small_t5(list(TEXTS.values()), tmp_path_factory.mktemp("t5") / "text_encoder")


def _run(root: Path, t5_dir: Path, *extra: str) -> int:
    return bridge.main(
        ["--dataset_path", str(root), "--t5", str(t5_dir), "--device", "cpu", "--no_progress"]
        + list(extra)
    )


def test_bridge_command_writes_official_pickles_and_resumes(copy, t5_dir, capsys):
    from framework.models.text import T5TextEncoder

    for pickle_file in (copy / "annotation").glob("*/*.pickle"):
        pickle_file.unlink()
    (copy / "annotation/val/2.json").write_text("not json")
    assert _run(copy, t5_dir, "--num_frames", "10") == 0
    out = capsys.readouterr().out
    assert "wrote 5 embeddings, kept 0" in out and "val/2.json is not valid JSON" in out
    rows = [line.split() for line in out.splitlines()]
    table = {row[0]: row[1:] for row in rows if row and row[0] in ("train", "val")}
    # episodes, bad json, no text, no video, short, windows, emb ok/missing/refused
    assert table["train"] == ["3", "0", "0", "0", "1", "4", "0", "3", "0"]
    assert table["val"] == ["2", "1", "0", "0", "2", "0", "0", "2", "0"]
    encoder = T5TextEncoder(t5_dir, device="cpu")
    emb, lengths = encoder.encode([TEXTS["1"]])
    with open(copy / "annotation/train/1.pickle", "rb") as f:
        stored = pickle.load(f)  # a file this test's command wrote
    assert isinstance(stored, list) and len(stored) == 1 and stored[0].dtype == np.float16
    want = emb[0, : int(lengths[0])].numpy().astype(np.float16)
    np.testing.assert_allclose(stored[0].astype(np.float32), want.astype(np.float32), atol=2e-3)
    # resumable: nothing left to do, then only a damaged pickle is redone
    assert _run(copy, t5_dir, "--t5", str(copy / "no_t5_needed")) == 0
    assert "0 embeddings to write, 5 present" in capsys.readouterr().out
    (copy / "annotation/train/0.pickle").write_bytes(b"junk")
    before = (copy / "annotation/train/1.pickle").stat().st_mtime_ns
    assert _run(copy, t5_dir, "--splits", "train") == 0
    assert "wrote 1 embeddings, kept 2" in capsys.readouterr().out
    assert (copy / "annotation/train/1.pickle").stat().st_mtime_ns == before
    assert len(BridgeDataset(copy, num_frames=4, video_size=VIDEO)) == 9 + 7 + 2


def test_bridge_command_user_errors(tmp_path, layout, t5_dir, capsys):
    assert _run(tmp_path / "missing", t5_dir) == 2
    assert _run(layout, t5_dir, "--splits", "test") == 2
    (tmp_path / "empty").mkdir()
    assert _run(tmp_path / "empty", t5_dir) == 2
    assert _run(layout, t5_dir, "--overwrite", "--t5", str(tmp_path / "no_t5")) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
    assert len(errors) == 4
    assert "missing does not exist" in errors[0] and "no test folder" in errors[1]
    assert "annotation does not exist; download" in errors[2] and "no_t5" in errors[3]
    for module in (bridge, synthetic_bridge):
        with pytest.raises(SystemExit) as exit_:
            module.main(["--help"])
        assert exit_.value.code == 0 and module.__name__ in capsys.readouterr().out


def _tar(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_archive_unpacked_into_the_layout_and_unsafe_members_refused(layout, tmp_path, capsys):
    top = "opensource_robotdata/bridge/"
    files = {
        top + str(p.relative_to(layout)): p.read_bytes()
        for p in sorted(layout.rglob("*"))
        if p.is_file() and "train" in p.parts
    }
    archive = _tar(tmp_path / "bridge_train_data.tar.gz", files)
    root = tmp_path / "datasets" / "bridge"
    args = ["--dataset_path", str(root), "--archive", str(archive), "--skip_t5", "--no_progress"]
    assert bridge.main(args) == 0
    assert (root / "annotation/train/0.json").is_file() and (root / "videos/train/1").is_dir()
    assert not (root / "opensource_robotdata").exists() and not (root / ".unpacking").exists()
    assert bridge.main(args) == 0
    assert "is not unpacked again" in capsys.readouterr().out
    # unpacked by hand but not moved: moved the same way, other robots' folders left alone
    by_hand = tmp_path / "by_hand"
    shutil.copytree(layout, by_hand / top)
    (by_hand / "opensource_robotdata" / "rt1").mkdir()
    assert bridge.main(["--dataset_path", str(by_hand), "--skip_t5"]) == 0
    assert (by_hand / "annotation/val/2.json").is_file()
    assert sorted(p.name for p in (by_hand / "opensource_robotdata").iterdir()) == ["rt1"]
    evil = _tar(tmp_path / "evil.tar.gz", {top + "../../../escaped.txt": b"x"})
    assert bridge.main(["--dataset_path", str(tmp_path / "e"), "--archive", str(evil)]) == 2
    assert "cannot unpack" in capsys.readouterr().err
    assert not list(tmp_path.rglob("escaped.txt"))


# ---- data_prep.validate ---------------------------------------------------------------------
def test_validate_reads_the_bridge_layout(copy, tmp_path, capsys):
    assert validate.main([str(copy), "--num_frames", "5", "--quick"]) == 0
    out = capsys.readouterr().out
    assert "6 episodes (train, val), 6 ok, 0 with problems, 1 too short" in out
    assert "5 usable for training" in out
    marker = tmp_path / "pwned"
    (copy / "annotation/train/1.pickle").write_bytes(pickle.dumps([_Evil(str(marker))]))
    (copy / "videos/val/0/rgb.mp4").write_bytes(os.urandom(2000))
    (copy / "annotation/val/2.json").write_text("[")
    assert validate.main([str(copy), "--num_frames", "5"]) == 1
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line}
    assert not marker.exists()
    assert "bad embedding" in lines["train/1.json"] and "unreadable" in lines["val/0.json"]
    assert "bad annotation" in lines["val/2.json"]
    assert "too short: 5 < 5" not in lines["train/2.json"] and lines["train/2.json"].endswith("ok")
    assert validate.main([str(copy), "--num_frames", "40", "--splits", "train"]) == 1
    assert "0 usable for training" in capsys.readouterr().out


# ---- synthetic Bridge -----------------------------------------------------------------------
SYNTH = dict(num_videos=3, num_val=1, num_frames=9, size=[32, 40], num_short=1, short_frames=5)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Path:
    return synthetic_bridge.ensure_synthetic_bridge(tmp_path_factory.mktemp("s") / "syn", **SYNTH)


def test_synthetic_bridge_is_deterministic_and_readable(synthetic, tmp_path):
    again = synthetic_bridge.ensure_synthetic_bridge(tmp_path / "again", **SYNTH)
    names = sorted(str(p.relative_to(synthetic)) for p in synthetic.rglob("*") if p.is_file())
    assert names == sorted(str(p.relative_to(again)) for p in again.rglob("*") if p.is_file())
    for name in names:
        if name.endswith((".json", ".pickle")):
            assert (synthetic / name).read_bytes() == (again / name).read_bytes(), name
    ann = read_annotation(synthetic / "annotation/train/0.json", synthetic)
    assert ann.video == synthetic / "videos/train/0/rgb.mp4" and ann.num_frames == 9
    assert ann.text.startswith("move the ") and " block to the " in ann.text
    ds = BridgeDataset(synthetic, num_frames=9, video_size=(24, 30))
    assert len(ds) == 3 and ds.summary.startswith("4 episodes, 1 skipped (1 too short")
    ds_val = BridgeDataset(synthetic, split="val", num_frames=9, video_size=(24, 30))
    assert (
        ds.heldout_items(1, 9)[0].prompt
        == read_annotation(synthetic / "annotation/val/0.json", synthetic).text
        == ds_val.heldout_items(1, 9)[0].prompt
    )


def test_synthetic_block_moves_visibly_at_24x30(synthetic):
    ds = BridgeDataset(synthetic, num_frames=9, video_size=(24, 30))
    for i in range(len(ds)):
        block, start, target = json.loads(Path(ds.window(i)[0]).read_text())["task"].values()
        frames = ds[i]["video"].permute(1, 2, 3, 0).numpy()
        track = synthetic_bridge.track_block(frames, block)
        assert track[0] is not None and track[-1] is not None
        begin, end = synthetic_bridge.PLACES[start], synthetic_bridge.PLACES[target]
        assert np.allclose(track[0], begin, atol=0.08) and np.allclose(track[-1], end, atol=0.08)


def test_stale_or_foreign_synthetic_folder_refused(synthetic, tmp_path, layout):
    assert synthetic_bridge.ensure_synthetic_bridge(synthetic, **SYNTH) == synthetic  # reused
    with pytest.raises(FileExistsError, match=rf"num_videos.*rm -rf {synthetic}"):
        synthetic_bridge.ensure_synthetic_bridge(synthetic, **{**SYNTH, "num_videos": 4})
    stale = Path(shutil.copytree(synthetic, tmp_path / "stale"))
    marker = json.loads((stale / "synthetic.json").read_text())
    (stale / "synthetic.json").write_text(json.dumps({**marker, "render_version": 0}))
    with pytest.raises(FileExistsError, match="render_version"):
        synthetic_bridge.synthetic_bridge_dataset(stale, **_as_dataset_args(SYNTH))
    # a Bridge folder of the user's own is read as it is, never written to
    ds = synthetic_bridge.synthetic_bridge_dataset(layout, num_frames=4, video_size=VIDEO)
    assert len(ds) == 9 + 7 + 2 and not (layout / "synthetic.json").exists()
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "x").write_text("")
    with pytest.raises(FileExistsError, match="no complete synthetic Bridge set"):
        synthetic_bridge.ensure_synthetic_bridge(tmp_path / "half", **SYNTH)


def _as_dataset_args(params: dict) -> dict:
    return {
        "num_videos": params["num_videos"],
        "source_frames": params["num_frames"],
        "size": params["size"],
        "num_val": params["num_val"],
        "num_short": params["num_short"],
        "short_frames": params["short_frames"],
    }
