"""A second model family that lives only in tests/ (tests/toy_family.py: a conv net, an EDM-style
objective with a learned logvar head, its own sampler) goes through the stock trainer, hooks and
command lines: train, checkpoint (logvar.* beside net.*), resume exactly, evaluate, generate."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from framework import eval as ev
from framework.inference import video2world as v2w

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    from data_prep.synthetic import generate

    return generate(
        tmp_path_factory.mktemp("toy") / "data", num_videos=4, num_frames=5, size=16, num_val=1
    )


def train(data: Path, out: Path, name: str, *overrides: str) -> subprocess.CompletedProcess:
    """`python -m launch.train toy_family_job --module tests.toy_family ...`, as a user runs it."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TOY_DATA": str(data), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "launch.train", "toy_family_job", "--module", "tests.toy_family"]
    cmd += [f"job.output_root={out}", f"job.name={name}", *overrides]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def losses(job: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (job / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


def test_a_family_defined_in_tests_trains_resumes_evaluates_and_generates(data, tmp_path, capsys):
    out = tmp_path / "runs"
    full = train(data, out, "full")
    job = out / "worldtune_tests" / "toy_family" / "full"
    assert "generate     python -m framework.inference.video2world --checkpoint" in full.stdout
    assert (job / "eval_before.json").is_file() and (job / "eval_after.json").is_file()
    assert len(list((job / "samples" / "iter_000000006").glob("*.mp4"))) == 1

    # The whole trainable state: the net and the objective's logvar head, each with its EMA.
    sd = torch.load(job / "checkpoints" / "model" / "iter_000000006.pt", weights_only=True)
    heads = {k.partition(".")[0] for k in sd}
    assert heads == {"net", "logvar", "net_ema", "logvar_ema"}
    assert not torch.equal(sd["logvar.0.weight"], sd["logvar_ema.0.weight"])
    optim = torch.load(job / "checkpoints" / "optim" / "iter_000000006.pt", weights_only=True)
    assert any(k.startswith("logvar.") for k in optim["state"])  # AdamW state by parameter name

    # Stopped at step 3 and resumed to 6: the same losses as the uninterrupted run.
    train(data, out, "resumed", "train.max_steps=3")
    train(data, out, "resumed")
    resumed = out / "worldtune_tests" / "toy_family" / "resumed"
    assert losses(resumed) == losses(job)

    # The stock command lines rebuild the model from the job's config.yaml.
    ckpt = str(job / "checkpoints" / "model" / "iter_000000006.pt")
    assert (
        ev.main(
            [
                "--checkpoint",
                ckpt,
                "--num_items",
                "1",
                "--num_steps",
                "2",
                "--guidance",
                "0",
                "--load_ema",
            ]
        )
        == 0
    )
    assert "mean" in capsys.readouterr().out
    video = tmp_path / "gen.mp4"
    assert (
        v2w.main(
            ["--checkpoint", ckpt, "--guidance", "0", "--num_steps", "2", "--save_path", str(video)]
        )
        == 0
    )
    assert video.stat().st_size > 0


def test_mfu_is_logged_for_a_sharded_net(data, tmp_path):
    """FSDP2 on two gloo processes: the family is found from the net's class, which fully_shard
    subclasses, so FLOPs (and MFU, given a peak) are still reported."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TOY_DATA": str(data), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone"]
    cmd += ["-m", "launch.train", "toy_family_job", "--module", "tests.toy_family"]
    cmd += [f"job.output_root={tmp_path}", "parallel.strategy=fsdp", "parallel.shard_size=-1"]
    cmd += ["data.batch_size=1", "train.max_steps=2", "+hooks.log.peak_flops=1e12"]
    cmd += ["~hooks.eval", "~hooks.sample", "train.ema.enabled=false"]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    job = tmp_path / "worldtune_tests" / "toy_family" / "toy_family_job"
    rows = [json.loads(line) for line in (job / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "loss" in r]
    assert steps and all(0 < r["mfu"] < 1 for r in steps)
