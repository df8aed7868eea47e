"""Issue 25's "Done when": a LeRobot v2.1 and a v3.0 dataset made here (several episodes, two
cameras, H.264 and AV1 video) train the tiny action model through the stock CLI
(`python -m launch.train tiny_lerobot_action_folder ...`, the camera and action width chosen on the
command line), each run ending with finite losses and a checkpoint holding the action embedders.
Also `--check` on that experiment and on the Bridge action recipes names the right fetch command."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from data_prep.synthetic import caption, gripper_actions, render_episode, tasks
from framework.data.lerobot_writer import Episode, write_lerobot

ROOT = Path(__file__).resolve().parent.parent
HAS_AV1 = "libsvtav1" in av.codecs_available and "libdav1d" in av.codecs_available
STEPS = 3


def pick_and_place(num_episodes: int = 4, num_frames: int = 9, size: int = 32) -> list[Episode]:
    """Synthetic pick-and-place episodes seen by two cameras, with the gripper's delta actions."""
    rng = np.random.default_rng(3)
    out = []
    for i in range(num_episodes):
        task = tasks()[i * 5 % len(tasks())]
        frames, state = render_episode(task, num_frames, size, rng)
        videos = {"top": frames, "wrist": np.ascontiguousarray(frames[:, :, ::-1])}
        out.append(Episode(videos, caption(*task[:2]), gripper_actions(state), state))
    return out


def train(root: Path, runs: Path, name: str) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        "-m",
        "launch.train",
        "tiny_lerobot_action_folder",
        f"data.dataset.dataset_dir={root}",
        "data.dataset.camera=wrist",
        "model.net.action_dim=3",
        f"job.name={name}",
        f"train.max_steps={STEPS}",
        f"checkpoint.save_iter={STEPS}",
        "data.batch_size=2",
        "logging.every=1",
        "hooks.eval.num_items=1",
        "hooks.eval.num_steps=2",
        "hooks.eval.every=0",
        "~hooks.sample",
        "~hooks.progress",
        "~hooks.loss_curve",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OUTPUT_ROOT": str(runs), "OMP_NUM_THREADS": "2"}
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
@pytest.mark.parametrize(
    "version,codec", [("v2.1", "h264"), ("v3.0", "av1" if HAS_AV1 else "h264")]
)
def test_tiny_action_model_trains_on_a_lerobot_folder_through_the_cli(tmp_path, version, codec):
    root = tmp_path / "lerobot"
    write_lerobot(root, pick_and_place(), fps=16, version=version, codec=codec, episodes_per_file=2)
    info = json.loads((root / "meta/info.json").read_text())
    assert info["codebase_version"] == version and info["total_episodes"] == 4
    assert info["features"]["observation.images.wrist"]["info"]["video.codec"] == codec
    with av.open(str(next(root.glob("videos/**/*.mp4")))) as container:
        assert container.streams.video[0].codec_context.name in {codec, f"lib{codec}", "libdav1d"}

    done = train(root, tmp_path / "runs", f"cli_{version}")
    assert done.returncode == 0, done.stderr[-3000:]
    job = tmp_path / "runs/worldtune/tiny_action" / f"cli_{version}"
    rows = [json.loads(x) for x in (job / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "loss" in r]
    losses = [r["loss"] for r in steps]
    assert len(losses) == STEPS and all(math.isfinite(x) for x in losses), losses
    assert steps[-1]["bad_samples"] == 0
    ckpt = job / "checkpoints/model" / f"iter_{STEPS:09d}.pt"
    sd = torch.load(ckpt, weights_only=True)
    assert sd["net.action_embedder_B_D.fc1.weight"].shape[1] == 3  # 3-dim actions, 1 per frame
    assert all(torch.isfinite(v).all() for v in sd.values() if v.is_floating_point())
    # The run read the chosen camera of this folder, and scored its held-out episode.
    cfg = (job / "config.yaml").read_text()
    assert f"dataset_dir: {root}" in cfg and "camera: wrist" in cfg
    after = json.loads((job / "eval_after.json").read_text())
    assert math.isfinite(after["psnr"]) and after["items"][0]["name"] == "episode_000000"


def test_check_names_each_datasets_fetch_command(tmp_path, monkeypatch, capsys):
    """`--check` (the end of `--dryrun`, the start of `make train`): the Bridge action recipes
    point at the IRASim archive and data_prep.bridge without T5, the LeRobot experiment at a
    LeRobot folder; the 2.5 recipe's online text encoder is needed for training, not only for
    generation."""
    from launch import train as launch

    monkeypatch.setenv("DATASETS", str(tmp_path / "data"))
    monkeypatch.setenv("CHECKPOINTS", str(tmp_path / "ckpts"))
    bridge = tmp_path / "data" / "bridge"
    layout = (
        f"python -m data_prep.bridge --archive {bridge}/bridge_train_data.tar.gz "
        f"--dataset_path {bridge} --skip_t5"
    )
    for exp in ("predict2_5_bridge_action_256x320", "predict2_bridge_action_480x640"):
        assert launch.main([exp, "--check"]) == launch.USER_ERROR
        err = capsys.readouterr().err
        lines = [x for x in err.splitlines() if x.strip().startswith("data.dataset.dataset_dir")]
        assert len(lines) == 1 and f"wget -P {bridge} https://" in lines[0], err
        assert layout in lines[0] and "t5_embed" not in err
        assert f"  {layout}" in err.splitlines()  # in the "to fetch them all" list
        text = next(x for x in err.splitlines() if "model.text_encoder" in x)
        # Reason1 embeds the empty caption every step; Predict2's net trained on zero text
        # generates from an empty prompt without T5.
        online = exp.startswith("predict2_5")
        needed = "only generating with a non-empty prompt needs it"
        assert (needed in text) != online, text
    # The instruction recipe reads the same archive and embeds its instructions (no --skip_t5).
    assert launch.main(["bridge_57frames", "--check"]) == launch.USER_ERROR
    err = capsys.readouterr().err
    assert f"--dataset_path {bridge}`" in err and "--skip_t5" not in err

    folder = tmp_path / "mine"
    args = ["tiny_lerobot_action_folder", f"data.dataset.dataset_dir={folder}", "--check"]
    assert launch.main(args) == launch.USER_ERROR
    err = capsys.readouterr().err
    assert "put a LeRobot v2.x or v3.0 dataset there" in err and "t5_embed" not in err
    (folder / "videos").mkdir(parents=True)  # a folder, but no meta/info.json
    assert launch.main(args) == launch.USER_ERROR
    assert f"{folder}/meta/info.json (absent)" in capsys.readouterr().err
    write_lerobot(tmp_path / "ok", pick_and_place(1, 5, 16), fps=16)
    assert launch.main([args[0], f"data.dataset.dataset_dir={tmp_path / 'ok'}", "--check"]) == 0
