"""framework.data.latent_cache: build with a deterministic toy tokenizer, train-side reads match."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from framework.data.dataset import VideoDataset
from framework.data.latent_cache import LatentCache, build_latent_cache, clip_to_unit_range
from framework.data.video import read_clip
from tests.test_data import make_dataset_dir


class PoolTokenizer:
    """Deterministic stand-in for the VAE: keep frames 0,4,8,..., 4x4 average pooling."""

    def __init__(self, factor: int = 4) -> None:
        self.factor = factor
        self.identity = {"name": "pool", "factor": factor}

    def latent_frames(self, pixel_frames: int) -> int:
        return 1 + (pixel_frames - 1) // 4

    def pixel_frames(self, latent_frames: int) -> int:
        return 4 * (latent_frames - 1) + 1

    def encode(self, video: torch.Tensor) -> torch.Tensor:  # [B,3,T,H,W] in [-1,1]
        x = video[:, :, ::4]
        b, c, t, h, w = x.shape
        x = x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)
        x = F.avg_pool2d(x, self.factor)
        return x.reshape(b, t, c, h // self.factor, w // self.factor).permute(0, 2, 1, 3, 4)


SETTINGS = {"num_frames": 9, "video_size": (32, 48)}


def _encode_window(video_path: str, start: int, tok: PoolTokenizer) -> torch.Tensor:
    frames = read_clip(video_path, start, SETTINGS["num_frames"], size=SETTINGS["video_size"])
    return tok.encode(clip_to_unit_range(torch.from_numpy(frames).permute(3, 0, 1, 2)))[0]


@pytest.fixture()
def built(tmp_path):
    root = make_dataset_dir(tmp_path / "ds", {"a": 13, "b": 9, "c": 11}, fps=16)
    ds = VideoDataset(root, **SETTINGS)
    tok = PoolTokenizer()
    cache = build_latent_cache(
        ds, tok, tmp_path / "cache", windows_per_video=3, shard_size=2, progress=False
    )
    return root, cache, tok


def test_cached_latent_equals_on_the_fly_encode(built):
    root, cache_dir, tok = built
    ds = VideoDataset(root, latent_cache_dir=cache_dir, expected_identity=tok.identity, **SETTINGS)
    assert len(list(Path(cache_dir).glob("latents-*.safetensors"))) >= 2  # several shards
    torch.manual_seed(0)
    for i, entry in enumerate(ds.samples):
        n = {"a": 13, "b": 9, "c": 11}[Path(entry["video"]).stem]
        starts = sorted({0, (n - 9) // 2, n - 9} if n > 9 else {0})
        refs = [_encode_window(entry["video"], s, tok) for s in starts]
        seen = set()
        for _ in range(12):
            s = ds[i]
            assert "video" not in s and s["latent"].dtype == torch.float32
            assert tuple(s["latent"].shape) == (3, 3, 8, 12)
            assert s["fps"] == pytest.approx(16.0)
            assert tuple(s["t5_text_embeddings"].shape) == (512, 1024)
            match = [k for k, r in enumerate(refs) if torch.equal(s["latent"], r)]
            assert match, "cached latent differs from the on-the-fly encode of every window"
            seen.add(match[0])
        assert seen == set(range(len(refs)))  # every cached window is drawn


def test_other_tokenizer_identity_refused(built):
    root, cache_dir, tok = built
    other = PoolTokenizer(factor=2)
    with pytest.raises(ValueError, match="was made by tokenizer .*pool.*rebuild"):
        LatentCache(cache_dir, expected_identity=other.identity)
    with pytest.raises(ValueError, match="was made by tokenizer"):
        VideoDataset(root, latent_cache_dir=cache_dir, expected_identity=other.identity, **SETTINGS)
    # building into the same folder with another tokenizer is refused too
    ds = VideoDataset(root, **SETTINGS)
    with pytest.raises(ValueError, match="holds a cache made with"):
        build_latent_cache(ds, other, cache_dir, windows_per_video=3, progress=False)


def test_other_clip_settings_refused(built):
    root, cache_dir, tok = built
    with pytest.raises(ValueError, match="the dataset asks"):
        VideoDataset(
            root,
            num_frames=9,
            video_size=(32, 32),
            latent_cache_dir=cache_dir,
            expected_identity=tok.identity,
        )


def test_rebuild_resumes_without_reencoding(built):
    root, cache_dir, tok = built
    shards = sorted(p.name for p in Path(cache_dir).glob("latents-*.safetensors"))
    calls = []

    class Counting(PoolTokenizer):
        def encode(self, video):
            calls.append(1)
            return super().encode(video)

    ds = VideoDataset(root, **SETTINGS)
    build_latent_cache(ds, Counting(), cache_dir, windows_per_video=3, shard_size=2, progress=False)
    assert not calls
    assert sorted(p.name for p in Path(cache_dir).glob("latents-*.safetensors")) == shards
