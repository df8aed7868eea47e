"""data_prep.latent_cache: the command builds a cache from an experiment-style config or a factory,
and training samples read from it equal an on-the-fly encode with the same tokenizer."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from data_prep import latent_cache as cli
from framework.config import L
from framework.data.dataset import VideoDataset
from framework.data.safe_load import save_t5_pickle
from framework.data.video import read_clip, write_video
from framework.models.tokenizers import PixelTokenizer


def _folder(root, lengths=(9, 13)):
    gen = torch.Generator().manual_seed(0)
    (root / "videos").mkdir(parents=True)
    for i, n in enumerate(lengths):
        frames = torch.randint(0, 256, (n, 32, 48, 3), generator=gen, dtype=torch.uint8)
        write_video(root / "videos" / f"v{i}.mp4", frames.numpy(), fps=12.0)
        save_t5_pickle(torch.randn(4 + i, 1024).numpy(), root / "t5_xxl" / f"v{i}.pickle")
    return root


def _config(root, cache_dir=None):
    dataset = L(VideoDataset)(
        dataset_dir=str(root), num_frames=5, video_size=[16, 24], latent_cache_dir=cache_dir
    )
    return OmegaConf.create(
        {"data": {"dataset": dataset}, "model": {"tokenizer": L(PixelTokenizer)(spatial=4)}}
    )


def test_from_config_builds_uncached_dataset_and_tokenizer_only(tmp_path):
    root = _folder(tmp_path / "d")
    dataset, tok = cli.from_config(_config(root, cache_dir=str(tmp_path / "old_cache")))
    assert isinstance(tok, PixelTokenizer) and tok.identity == "pixel-s4-t1"
    assert dataset.cache is None and len(dataset) == 2


def test_cli_with_factory_then_dataset_reads_equal_latents(tmp_path, capsys):
    root = _folder(tmp_path / "d")
    out = tmp_path / "cache"
    args = [
        "--tokenizer",
        "framework.models.tokenizers.PixelTokenizer",
        "--dataset_dir",
        str(root),
        "--num_frames",
        "5",
        "--video_size",
        "16",
        "24",
        "--output",
        str(out),
        "--device",
        "cpu",
        "--windows_per_video",
        "1",
    ]
    cli.main(args)
    assert (out / "cache.json").is_file() and list(out.glob("latents-*.safetensors"))
    shards_before = sorted(p.stat().st_mtime_ns for p in out.glob("latents-*"))
    cli.main(args)  # resumable: nothing left to encode, no shard rewritten
    assert sorted(p.stat().st_mtime_ns for p in out.glob("latents-*")) == shards_before

    tok = PixelTokenizer()  # the factory's defaults: spatial 8
    cached = VideoDataset(
        root,
        num_frames=5,
        video_size=(16, 24),
        latent_cache_dir=out,
        expected_identity=tok.identity,
    )
    plain = VideoDataset(root, num_frames=5, video_size=(16, 24))
    for i in range(len(plain)):
        with_cache = cached[i]
        assert "video" not in with_cache
        # one window per video starts at frame 0; decode that window on the fly
        frames = read_clip(plain.samples[i]["video"], 0, 5, size=(16, 24))
        video = torch.from_numpy(frames).permute(3, 0, 1, 2)
        expected = tok.encode(video.unsqueeze(0))[0]
        torch.testing.assert_close(with_cache["latent"], expected, rtol=0, atol=0)
        torch.testing.assert_close(with_cache["t5_text_embeddings"], plain[i]["t5_text_embeddings"])


def test_cli_needs_an_experiment_or_a_tokenizer(tmp_path, capsys):
    with pytest.raises(SystemExit):
        cli.main(["--output", str(tmp_path / "c")])
    assert "experiment name or --tokenizer" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    assert "safetensors" in capsys.readouterr().out
