"""Issue #26 item 10: the latent cache is keyed by content. A deleted shard, a video replaced in
place or a damaged shard is refused by training in one line naming the file and the command that
fixes it; re-running the builder encodes exactly the missing windows and never overwrites a
shard. Before, a rebuild overwrote the highest-numbered shard and exited 0 with clips missing, a
replaced video kept its old latents, and a truncated shard gave a traceback naming no file."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from data_prep import latent_cache as cli
from framework.config import ConfigError
from framework.data import latent_cache as lc
from framework.data.dataset import VideoDataset
from framework.data.latent_cache import window_starts
from framework.data.video import probe_video, write_video
from tests.test_data import make_dataset_dir
from tests.test_latent_cache import SETTINGS, PoolTokenizer, _encode_window

LENGTHS = {"a": 21, "b": 17, "c": 13}  # 4 + 3 + 2 windows of 9 frames every 4: 5 shards of 2


class Counting(PoolTokenizer):
    calls = 0

    def encode(self, video):
        Counting.calls += 1
        return super().encode(video)


def args(root: Path, out: Path) -> list[str]:
    return [
        *("--tokenizer", "tests.test_latent_cache_integrity.Counting"),
        *("--dataset_dir", str(root), "--output", str(out), "--device", "cpu"),
        *("--num_frames", "9", "--video_size", "32", "48", "--shard_size", "2"),
    ]


def build(root: Path, out: Path) -> None:
    """The command line, as a user runs it (its command is recorded for the refusals)."""
    Counting.calls = 0
    cli.main(args(root, out))


def shards(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.glob("latents-*.safetensors"))}


def train_side(root: Path, out: Path) -> VideoDataset:
    return VideoDataset(root, latent_cache_dir=out, **SETTINGS)


def assert_serves_current_videos(root: Path, out: Path) -> None:
    """Every window of every video as it is now is served, and nothing else."""
    ds = train_side(root, out)
    tok = PoolTokenizer()
    for i, entry in enumerate(ds.samples):
        n = probe_video(entry["video"]).num_frames
        refs = [_encode_window(entry["video"], s, tok) for s in window_starts(n, 9, stride=4)]
        assert len(ds.cache.clips[Path(entry["video"]).stem]) == len(refs)
        torch.manual_seed(0)
        seen = set()
        for _ in range(30):
            latent = ds[i]["latent"]
            match = [k for k, r in enumerate(refs) if torch.equal(latent, r)]
            assert match, f"{entry['video']}: a cached latent matches no window of the video"
            seen.add(match[0])
        assert seen == set(range(len(refs)))


def one_line(err: pytest.ExceptionInfo) -> str:
    text = str(err.value)
    assert "\n" not in text
    return text


@pytest.fixture()
def cache(tmp_path):
    root = make_dataset_dir(tmp_path / "ds", LENGTHS, size=(32, 48), fps=16)
    out = tmp_path / "cache"
    build(root, out)
    assert Counting.calls == 9 and len(shards(out)) == 5
    return root, out


def test_a_deleted_shard_is_refused_then_refilled_exactly(cache):
    root, out = cache
    before = shards(out)
    victim = sorted(before)[1]
    (out / victim).unlink()
    with pytest.raises(ConfigError) as err:
        train_side(root, out)
    msg = one_line(err)
    assert "does not cover the dataset" in msg and "lacks 2 of its 4 windows" in msg
    assert "--shard_size 2" in msg  # the recorded command that fills the gap
    build(root, out)
    assert Counting.calls == 2  # exactly the two windows of the deleted shard
    after = shards(out)
    assert all(after[name] == data for name, data in before.items() if name != victim)
    assert "latents-00005.safetensors" in after  # a new number, no shard overwritten
    assert_serves_current_videos(root, out)


def test_a_video_replaced_in_place_is_noticed(cache):
    root, out = cache
    noise = np.random.default_rng(1).integers(0, 256, (25, 32, 48, 3), dtype=np.uint8)
    write_video(root / "videos" / "a.mp4", noise, fps=16)  # same name, other bytes
    with pytest.raises(ConfigError) as err:
        train_side(root, out)
    msg = one_line(err)
    assert f"{root / 'videos' / 'a.mp4'} changed since the cache" in msg
    build(root, out)
    assert Counting.calls == len(window_starts(25, 9, stride=4))  # the new video's only
    # Keyed by content: a copy under a new name is served from the same windows, unencoded.
    (root / "videos" / "a2.mp4").symlink_to(root / "videos" / "a.mp4")
    (root / "t5_xxl" / "a2.pickle").symlink_to(root / "t5_xxl" / "a.pickle")
    assert_serves_current_videos(root, out)


def test_a_touched_video_is_hashed_again_not_refused(cache, monkeypatch):
    """Size and mtime decide whether a file is hashed at all; a differing mtime alone costs a
    hash, not a refusal, and the builder records the new time without encoding."""
    root, out = cache
    hashed = []
    real = lc.record_file
    monkeypatch.setattr(lc, "record_file", lambda p: hashed.append(Path(p).name) or real(p))
    train_side(root, out)
    assert hashed == []  # nothing hashed at a training start when nothing changed
    video = root / "videos" / "b.mp4"
    st = video.stat()
    os.utime(video, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert_serves_current_videos(root, out)
    assert hashed == ["b.mp4"]
    build(root, out)
    assert Counting.calls == 0 and hashed == ["b.mp4", "b.mp4"]
    hashed.clear()
    build(root, out)
    train_side(root, out)
    assert hashed == [] and Counting.calls == 0  # the new time was recorded


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_a_damaged_shard_names_the_file_and_the_fix(cache, damage, capsys):
    root, out = cache
    victim = out / "latents-00002.safetensors"
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"\x00" * 64)
    for step in (lambda: train_side(root, out), lambda: build(root, out)):
        with pytest.raises(ConfigError) as err:
            step()
        msg = one_line(err)
        assert str(victim) in msg and "is damaged" in msg and "delete it" in msg
        assert "python -m data_prep.latent_cache --tokenizer" in msg
    assert cli.command(args(root, out)) == 2  # the command line: one line, exit 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: latent cache shard") and str(victim) in err[-1]
    victim.unlink()
    build(root, out)
    assert Counting.calls == 2
    assert_serves_current_videos(root, out)


def test_a_cache_of_the_old_name_keyed_format_is_refused(cache):
    """Its windows cannot be tied to the videos' bytes: rebuild into a new folder."""
    import json

    from safetensors.torch import save

    root, out = cache
    for p in out.glob("latents-*.safetensors"):
        p.unlink()
    clips = [{"stem": "a", "start": 0, "fps": 16.0}]
    (out / "latents-00000.safetensors").write_bytes(
        save({"a@0": torch.zeros(3, 3, 8, 12)}, metadata={"clips": json.dumps(clips)})
    )
    with pytest.raises(ConfigError) as err:
        train_side(root, out)
    assert "was made by an older version" in one_line(err) and "--output NEW_FOLDER" in str(
        err.value
    )
