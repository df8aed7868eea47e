"""A user's own clips in the GR1 layout (issue 30 items 10, 12): t5_embed picks the encoder of the
experiment to train and covers val/; validate covers val/ and says when there is none; training
says once that evaluation without val/ uses training clips."""

from __future__ import annotations

import logging
import os

import pytest

from data_prep import t5_embed, validate
from framework.data.dataset import VideoDataset
from tests.test_data_prep import _dataset, _official


@pytest.fixture(scope="module")
def small_t5(tmp_path_factory):
    from data_prep.small_t5 import make_small_t5

    return make_small_t5(["move the cube"], tmp_path_factory.mktemp("t5") / "text_encoder")


def _metas(root, stems):
    (root / "metas").mkdir(parents=True)
    for stem in stems:
        (root / "metas" / f"{stem}.txt").write_text(f"move the {stem} cube")


def test_t5_embed_uses_the_experiments_encoder_and_embeds_val(tmp_path, small_t5, monkeypatch):
    data = tmp_path / "my_arm"
    _metas(data, ["a", "b"])
    _metas(data / "val", ["v"])
    monkeypatch.setenv("DATASETS", str(tmp_path / "ds"))
    # tiny_gr1's encoder is made with its synthetic set; before that, the error says how.
    args = [str(data), "--experiment", "tiny_gr1", "--device", "cpu", "--no_progress"]
    assert t5_embed.main(args) == 2
    (tmp_path / "ds" / "synthetic_gr1").mkdir(parents=True)
    os.symlink(small_t5, tmp_path / "ds" / "synthetic_gr1" / "text_encoder")
    assert t5_embed.main(args) == 0
    for path in (data / "t5_xxl" / "a.pickle", data / "val" / "t5_xxl" / "v.pickle"):
        assert _official(path).shape[1] == 1024


def test_t5_embed_missing_experiment_encoder_names_the_command(tmp_path, monkeypatch, capsys):
    _metas(tmp_path / "d", ["a"])
    monkeypatch.setenv("DATASETS", str(tmp_path / "ds"))
    assert t5_embed.main([str(tmp_path / "d"), "--experiment", "tiny_gr1"]) == 2
    err = capsys.readouterr().err
    assert f"python -m data_prep.synthetic {tmp_path}/ds/synthetic_gr1" in err
    assert t5_embed.main([str(tmp_path / "d"), "--experiment", "tiny_gr11"]) == 2
    assert "did you mean tiny_gr1" in capsys.readouterr().err


def test_validate_covers_val_and_notes_its_absence(tmp_path, capsys):
    root = _dataset(tmp_path / "d", ["a", "b"])
    assert validate.main([str(root), "--num_frames", "12"]) == 0
    assert "has no val/" in capsys.readouterr().out
    _dataset(root / "val", ["v"], frames=6)  # too short for the window: a problem
    assert validate.main([str(root), "--num_frames", "12"]) == 1
    out = capsys.readouterr().out
    assert f"held-out split {root / 'val'}" in out and "too short" in out


def test_training_without_val_says_evaluation_uses_training_clips(tmp_path, caplog):
    root = _dataset(tmp_path / "noval", ["a", "b"])
    ds = VideoDataset(root, num_frames=4, video_size=(16, 16))
    with caplog.at_level(logging.WARNING):
        assert len(ds.heldout_items(1, 4)) == 1
        ds.heldout_items(1, 4)
    said = [r for r in caplog.records if "no val/videos" in r.getMessage()]
    assert len(said) == 1 and "training clips" in said[0].getMessage()
    _dataset(root / "val", ["v"])  # with val/: nothing to say
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        items = VideoDataset(tmp_path / "noval", num_frames=4, video_size=(16, 16)).heldout_items(
            1, 4
        )
    assert items[0].name == "v" and not caplog.records
