"""The latent cache keeps upstream's sampling (windows across the whole video), resumes a killed
build, shows progress, and a stale cache (another VAE, other clip settings, a missing folder) is
refused with the command that rebuilds it; a tiny job trains from a cache with one override."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from data_prep import latent_cache as cli
from framework.config import ConfigError, apply_overrides, get, load_all
from framework.data.dataset import VideoDataset
from framework.data.latent_cache import LatentCache, build_latent_cache, window_starts
from tests.test_data import make_dataset_dir
from tests.test_latent_cache import SETTINGS, PoolTokenizer, _encode_window
from tests.test_world_model import StandInNet, make_model


def test_window_starts_cover_the_video_every_stride_frames_and_the_last_start():
    assert window_starts(30, 9, stride=4) == [0, 4, 8, 12, 16, 20, 21]
    assert window_starts(30, 9, stride=1) == list(range(22))  # every start, as upstream draws
    assert window_starts(29, 9, stride=4) == [0, 4, 8, 12, 16, 20]
    assert window_starts(8, 9, stride=4) == []
    assert window_starts(30, 9, windows=3) == [0, 10, 21]  # the fixed-count alternative


def test_every_strided_window_is_cached_and_drawn(tmp_path):
    root = make_dataset_dir(tmp_path / "ds", {"a": 21, "b": 9}, fps=16)
    tok = PoolTokenizer()
    out = build_latent_cache(
        VideoDataset(root, **SETTINGS), tok, tmp_path / "c", window_stride=4, progress=False
    )
    meta = json.loads((out / "cache.json").read_text())
    assert meta["window_stride"] == 4 and "windows_per_video" not in meta
    ds = VideoDataset(root, latent_cache_dir=out, **SETTINGS)
    for i, entry in enumerate(ds.samples):
        n = {"a": 21, "b": 9}[Path(entry["video"]).stem]
        starts = window_starts(n, 9, stride=4)
        keys = [key for _, key, _ in ds.cache.clips[Path(entry["video"]).stem]]
        assert sorted(int(k.rpartition("@")[2]) for k in keys) == starts
        refs = [_encode_window(entry["video"], s, tok) for s in starts]
        seen = set()
        torch.manual_seed(0)
        for _ in range(40):
            sample = ds[i]
            assert sample["latent_identity"] == json.dumps(tok.identity, sort_keys=True)
            seen |= {k for k, r in enumerate(refs) if torch.equal(sample["latent"], r)}
        assert seen == set(range(len(refs)))  # every cached window is drawn


def test_a_killed_build_resumes_where_it_stopped_and_shows_progress(tmp_path, capsys):
    root = make_dataset_dir(tmp_path / "ds", {"a": 21, "b": 17, "c": 13}, fps=16)
    ds = VideoDataset(root, **SETTINGS)

    class Dies(PoolTokenizer):
        calls = 0

        def encode(self, video):
            Dies.calls += 1
            if Dies.calls == 7:
                raise KeyboardInterrupt("killed")
            return super().encode(video)

    with pytest.raises(KeyboardInterrupt):
        build_latent_cache(ds, Dies(), tmp_path / "c", window_stride=4, shard_size=2)
    done = {k for v in LatentCache(tmp_path / "c").clips.values() for _, k, _ in v}
    assert len(done) == 6  # three full shards of two windows survived the kill
    shards = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "c").glob("latents-*")}

    class Counting(PoolTokenizer):
        calls = 0

        def encode(self, video):
            Counting.calls += 1
            return super().encode(video)

    build_latent_cache(ds, Counting(), tmp_path / "c", window_stride=4, shard_size=2)
    total = sum(len(window_starts(n, 9, stride=4)) for n in (21, 17, 13))
    assert Counting.calls == total - 6  # only the missing windows were encoded
    after = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "c").glob("latents-*")}
    assert all(after[name] == t for name, t in shards.items())  # finished shards untouched
    err = capsys.readouterr().err
    assert "latent cache" in err and "3/3" in err and f"windows={total - 6}" in err


def test_a_stale_cache_is_refused_with_the_command_that_rebuilds_it(tmp_path):
    root = make_dataset_dir(tmp_path / "ds", {"a": 13}, fps=16)
    out = tmp_path / "c"
    args = [
        "--tokenizer",
        "tests.test_latent_cache.PoolTokenizer",
        "--dataset_dir",
        str(root),
        "--num_frames",
        "9",
        "--video_size",
        "32",
        "48",
        "--output",
        str(out),
        "--device",
        "cpu",
    ]
    cli.main(args)
    assert json.loads((out / "cache.json").read_text())["command"].startswith(
        "python -m data_prep.latent_cache --tokenizer tests.test_latent_cache.PoolTokenizer"
    )
    # Other clip settings: refused when the dataset is built.
    with pytest.raises(ConfigError, match="python -m data_prep.latent_cache EXPERIMENT .*built by"):
        VideoDataset(root, num_frames=5, video_size=(32, 48), latent_cache_dir=out)
    # Another VAE: the latents carry the identity of theirs, the model refuses them.
    sample = VideoDataset(root, latent_cache_dir=out, **SETTINGS)[0]
    batch = {
        "latent": sample["latent"][None].repeat(1, 16, 1, 1, 1)[:, :48],
        "latent_identity": [sample["latent_identity"]],
    }
    with pytest.raises(ConfigError, match="was made by tokenizer .*rebuild the latent cache"):
        make_model(StandInNet(48), state_t=2).latents(batch)
    # A cache folder that is not there: an error naming the command, not a silent slow path.
    with pytest.raises(FileNotFoundError, match="build it with python -m data_prep.latent_cache"):
        VideoDataset(root, latent_cache_dir=tmp_path / "nowhere", **SETTINGS)


def test_a_job_trains_from_a_cache_with_one_override(tmp_path):
    from framework.trainer import Trainer

    load_all()
    common = [
        f"job.output_root={tmp_path}/runs",
        f"data.dataset.dataset_dir={tmp_path}/syn",
        "data.dataset.num_videos=4",
        "model.net.model_channels=64",
        "model.net.num_heads=1",
        "model.net.num_blocks=1",
        "data.batch_size=2",
    ]
    cache = tmp_path / "latents"
    cli.main(["tiny_gr1", *common, "--output", str(cache), "--device", "cpu"])
    meta = json.loads((cache / "cache.json").read_text())
    assert meta["window_stride"] == 4 and meta["identity"] == '"pixel-s2-t1"'
    run = [*common, "~hooks.eval", "~hooks.sample", "~hooks.loss_curve", "~hooks.progress"]
    cfg = apply_overrides(
        get("tiny_gr1"), [*run, "train.max_steps=2", f"+data.dataset.latent_cache_dir={cache}"]
    )
    t = Trainer(cfg)
    assert t.batches.dataset.cache is not None
    t.fit()
    assert t.step == 2
    # groot_gr1_480 takes it as one plain override (its dataset node has the key).
    g = apply_overrides(get("groot_gr1_480"), [f"data.dataset.latent_cache_dir={cache}"])
    assert g.data.dataset.latent_cache_dir == str(cache)
