"""The model's fps comes from the clips (issue 30 item 13): `model.fps` resolves to the training
folder's frame rate over the frame stride, config.yaml keeps the number for generation, and
`blocks.gr1_dataset` exposes stride, text length, keep-in-memory and resize mode."""

from __future__ import annotations

import numpy as np
import pytest

from experiments import blocks
from framework.config import apply_overrides, get, instantiate, load_all, to_yaml
from framework.data.video import write_video
from launch import train


def clips(root, rates):
    (root / "videos").mkdir(parents=True)
    frames = np.zeros((6, 16, 16, 3), dtype=np.uint8)
    for i, fps in enumerate(rates):
        write_video(root / "videos" / f"c{i}.mp4", frames, fps=fps)
    return root


def test_model_fps_is_the_clips_rate_over_the_stride(tmp_path):
    load_all()
    root = clips(tmp_path / "mine", [10, 10, 10])
    cfg = apply_overrides(
        get("groot_gr1_480"),
        [f"data.dataset.dataset_dir={root}", "data.dataset.frame_stride=2"],
    )
    assert cfg.model.fps == pytest.approx(5.0)
    assert "fps: 5.0" in to_yaml(cfg, resolve=True)  # what config.yaml, and generation, keep
    # Before the folder exists the upstream GR1 rate stands in (16 / stride).
    empty = apply_overrides(get("groot_gr1_480"), [f"data.dataset.dataset_dir={tmp_path}/none"])
    assert empty.model.fps == 16.0
    # An explicit value still wins.
    assert apply_overrides(get("groot_gr1_480"), ["model.fps=24"]).model.fps == 24


def test_clips_at_different_rates_are_one_line_error(tmp_path, capsys):
    root = clips(tmp_path / "mixed", [10, 25])
    code = train.main(["groot_gr1_480", f"data.dataset.dataset_dir={root}", "--check"])
    assert code == train.USER_ERROR
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "different frame rates" in err and "c1.mp4: 25" in err


def test_gr1_dataset_exposes_its_settings(tmp_path):
    root = clips(tmp_path / "d", [16])
    node = blocks.gr1_dataset(
        root=str(root),
        num_frames=3,
        video_size=(8, 8),
        frame_stride=2,
        max_text_tokens=77,
        keep_in_memory=True,
        resize_mode="center_crop",
    )
    ds = instantiate(node)
    assert (ds.frame_stride, ds.max_text_tokens, ds.keep_in_memory) == (2, 77, True)
    assert ds.resize_mode == "center_crop" and ds.span == 5
