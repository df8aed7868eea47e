"""Captions longer than the kept text length are cut with one warning that counts them and names
the keys to raise (issue 30 item 11), in the dataset and in the model."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from framework.data import text_length
from framework.data.dataset import VideoDataset
from framework.data.safe_load import save_t5_pickle
from framework.data.video import write_video
from framework.models.world_model import WorldModel


@pytest.fixture(autouse=True)
def fresh(monkeypatch):
    monkeypatch.setattr(text_length, "_warned", set())
    monkeypatch.setattr(text_length, "_calls", {})


def cut_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "are cut to" in r.getMessage()]


def test_dataset_counts_long_captions_once(tmp_path, caplog, monkeypatch):
    (tmp_path / "videos").mkdir()
    for i, n in enumerate([5, 40, 50]):
        frames = np.zeros((4, 16, 16, 3), dtype=np.uint8)
        write_video(tmp_path / "videos" / f"c{i}.mp4", frames, fps=16)
        save_t5_pickle(np.ones((n, 1024), np.float32), tmp_path / "t5_xxl" / f"c{i}.pickle")
    with caplog.at_level(logging.WARNING):
        ds = VideoDataset(tmp_path, num_frames=2, video_size=(16, 16), max_text_tokens=32)
        assert len(ds) == 3
        assert ds[1]["t5_text_mask"].sum() == 32  # cut, as before: now it is said
        assert len(VideoDataset(tmp_path, num_frames=2, video_size=(16, 16), max_text_tokens=32))
    said = cut_warnings(caplog)
    assert len(said) == 1
    assert said[0].startswith(f"2 of 3 captions in {tmp_path} have more than 32 tokens")
    assert "(the longest 50)" in said[0] and "data.dataset.max_text_tokens" in said[0]
    caplog.clear()
    monkeypatch.setattr(text_length, "_warned", set())  # as in a new process
    with caplog.at_level(logging.WARNING):
        assert len(VideoDataset(tmp_path, num_frames=2, video_size=(16, 16), max_text_tokens=64))
    assert cut_warnings(caplog) == []  # nothing over 64


def test_model_says_when_it_cuts_embeddings_or_prompts(caplog):
    emb = torch.zeros(2, 64, 8)
    emb[0, :40] = 1.0
    emb[1, :10] = 1.0
    model = SimpleNamespace(max_text_tokens=32)
    with caplog.at_level(logging.WARNING):
        out = WorldModel.embed_text(model, emb)
        WorldModel.embed_text(model, emb)
    assert out.shape == (2, 32, 8)
    said = cut_warnings(caplog)
    assert len(said) == 1 and said[0].startswith("1 of 2 captions in the text embeddings")
    assert "model.max_text_tokens" in said[0]

    class Encoder:  # the text-encoder protocol: (embeddings, true lengths)
        def encode(self, prompts):
            return torch.ones(len(prompts), 512, 8), torch.tensor([70, 3])

    prompts = SimpleNamespace(
        max_text_tokens=32, text_encoder_component=lambda: Encoder(), _device=lambda: "cpu"
    )
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        WorldModel.embed_text(prompts, ["a long one", "short"])
    said = cut_warnings(caplog)
    assert len(said) == 1 and "1 of 2 captions in the prompts" in said[0]
    assert "(the longest 70)" in said[0]


def test_nothing_is_said_when_nothing_is_cut(caplog):
    with caplog.at_level(logging.WARNING):
        text_length.check_embeddings(torch.ones(2, 32, 8), 32, "fits")
        assert text_length.warn_cut([3, 32], 32, "fits too") == 0
    assert cut_warnings(caplog) == []
