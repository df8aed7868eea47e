"""Best-of-N a new user can read and try (issue 30 item 9): items numbered from 1 with matching
anchors, the input frame (or input video, the ground truth) beside the candidates, rejected items
labelled by name, and a shipped tiny critic to run the pipeline offline."""

from __future__ import annotations

import numpy as np
from PIL import Image

from data_prep import tiny_critic
from framework.data.video import write_video
from framework.inference import html_report
from framework.inference.critic import critic_class


def test_items_show_their_input_and_are_numbered_from_one(tmp_path):
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "in.png")
    write_video(tmp_path / "clip.mp4", np.zeros((4, 16, 16, 3), np.uint8), fps=16)
    items = [
        {"name": "a", "input": str(tmp_path / "in.png"), "status": "ok", "candidates": []},
        {"name": "b", "input": str(tmp_path / "clip.mp4"), "status": "ok", "candidates": []},
        {"name": "c", "input": str(tmp_path / "gone.png"), "status": "failed", "reason": "x"},
    ]
    page = html_report.render({"items": items}, tmp_path)
    assert '<section class="item" id="item-1"' in page and "<h2>1. a" in page
    assert '<img src="in.png" alt="input frame">' in page
    assert '<video src="clip.mp4"' in page and "the ground truth after the given frames" in page
    assert page.count('class="cand input"') == 2  # nothing for a missing input
    assert "<h2>3. c" in page and "FAILED: x" in page


def test_the_shipped_tiny_critic_is_a_reason1_folder(tmp_path, capsys):
    folder = tmp_path / "tiny-reason1"
    assert tiny_critic.main([str(folder)]) == 0
    assert f"--checkpoint_dir {folder}" in capsys.readouterr().out
    for name in ("config.json", "chat_template.json", "preprocessor_config.json"):
        assert (folder / name).is_file(), name
    critic_class("cosmos_reason1").check(str(folder))  # what best_of_n checks before generating
