"""A shorter run of the whole default flow: data made, trained, evaluated, a video generated."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import av
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_default_job_trains_evaluates_and_generates(tmp_path):
    env = {
        **os.environ,
        "DATASETS": str(tmp_path / "datasets"),
        "OUTPUT_ROOT": str(tmp_path / "runs"),
    }
    steps = [
        "train.max_steps=60",
        "sched.cycle_lengths=[60]",
        "checkpoint.save_iter=30",
        "hooks.sample.every=30",
        "hooks.eval.num_items=2",
        "hooks.eval.num_steps=8",
        "hooks.sample.num_steps=8",
        "~hooks.progress",
    ]
    run = subprocess.run(
        [sys.executable, "-m", "launch.train", "tiny_gr1", *steps],
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    job = tmp_path / "runs" / "worldtune" / "tiny" / "tiny_gr1"
    latest = (job / "checkpoints" / "latest_checkpoint.txt").read_text().strip()
    assert latest == "iter_000000060.pt"
    for sub in ("model", "optim", "scheduler", "trainer"):
        assert (job / "checkpoints" / sub / "iter_000000060.pt").is_file()
    assert len(list((job / "samples" / "iter_000000060").glob("*.mp4"))) == 2
    assert (job / "loss_curve.png").is_file()
    before = json.loads((job / "eval_before.json").read_text())
    after = json.loads((job / "eval_after.json").read_text())
    assert after["latent_l2"] < before["latent_l2"] and after["psnr"] > before["psnr"]
    rows = [json.loads(line) for line in (job / "metrics.jsonl").open()]
    losses = [r["edm_loss"] for r in rows if "edm_loss" in r]
    assert losses[-1] < losses[0]
    assert f"checkpoint   {job / 'checkpoints' / 'model' / 'iter_000000060.pt'}" in run.stdout

    # The model rebuilt from the job's config.yaml alone (the job folder next to the checkpoint).
    scored = subprocess.run(
        [
            sys.executable,
            "-m",
            "framework.eval",
            "--checkpoint",
            str(job / "checkpoints" / "model" / "iter_000000030.pt"),
            # Other settings than the run's frozen eval set: a set of their own (the same name
            # with other settings is refused, docs/eval.md).
            "--name",
            "quick",
            "--num_items",
            "1",
            "--num_steps",
            "2",
            "--guidance",
            "0",
            "--output",
            str(tmp_path / "eval.json"),
        ],
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert scored.returncode == 0, scored.stderr[-3000:]
    assert json.loads((tmp_path / "eval.json").read_text())["runs"][0]["result"]["num_items"] == 1

    gen = subprocess.run(
        [
            sys.executable,
            "-m",
            "framework.inference.video2world",
            "--guidance",
            "0",
            "--num_steps",
            "8",
        ],
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert gen.returncode == 0, gen.stderr[-3000:]
    with av.open(str(tmp_path / "output" / "generated_video.mp4")) as video:
        frames = [f.to_ndarray(format="rgb24") for f in video.decode(video=0)]
    assert len(frames) == 5 and frames[0].shape == (24, 24, 3)
