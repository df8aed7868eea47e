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

# The job config names this package's classes: the user names it, as for training
# (framework/config/trust.py).
TRUST = ["--module", "tests.toy_family"]
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    from data_prep.synthetic import generate

    return generate(
        tmp_path_factory.mktemp("toy") / "data", num_videos=4, num_frames=5, size=16, num_val=1
    )


def train(
    data: Path, out: Path, name: str, *overrides: str, exp: str = "toy_family_job"
) -> subprocess.CompletedProcess:
    """`python -m launch.train EXP --module tests.toy_family ...`, as a user runs it."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TOY_DATA": str(data), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "launch.train", exp, "--module", "tests.toy_family"]
    cmd += [f"job.output_root={out}", f"job.name={name}", *overrides]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def losses(job: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (job / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


@pytest.mark.slow
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
                *TRUST,
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
    assert "psnr" in capsys.readouterr().out  # the score table
    video = tmp_path / "gen.mp4"
    assert (
        v2w.main(
            [
                *TRUST,
                "--checkpoint",
                ckpt,
                "--guidance",
                "0",
                "--num_steps",
                "2",
                "--save_path",
                str(video),
            ]
        )
        == 0
    )
    assert video.stat().st_size > 0


@pytest.mark.slow
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


def test_a_family_with_its_own_text_encoder_and_actions_through_the_stock_cli(data, tmp_path):
    """toy_action_job: captions encoded online by a byte-level encoder (no T5, no pickles read)
    and per-transition actions from the dataset; all added in tests/, no framework edit."""
    import numpy as np

    from framework.data.heldout import build_dataset
    from framework.models.family import family_of
    from tests import toy_family as toy

    out = tmp_path / "runs"
    train(data, out, "full", exp="toy_action_job")
    job = out / "worldtune_tests" / "toy_action" / "full"
    assert (job / "eval_before.json").is_file() and (job / "eval_after.json").is_file()
    assert len(list((job / "samples" / "iter_000000006").glob("*.mp4"))) == 1
    train(data, out, "resumed", "train.max_steps=3", exp="toy_action_job")
    train(data, out, "resumed", exp="toy_action_job")
    assert losses(out / "worldtune_tests" / "toy_action" / "resumed") == losses(job)

    # The dataset yields captions and actions, no embeddings; the family is the subclass's own.
    cfg = toy.toy_action_job()
    cfg.data.dataset.dataset_dir = str(data)
    sample = build_dataset(cfg.data.dataset)[0]
    assert "t5_text_embeddings" not in sample and isinstance(sample["caption"], str)
    assert tuple(sample["actions"].shape) == (2, 3)
    assert family_of(toy.ToyActionNet(12, text_dim=16)).name == "toy_action"
    assert family_of(toy.ToyNet(12)).name == "toy_edm"

    ckpt = str(job / "checkpoints" / "model" / "iter_000000006.pt")
    args = [*TRUST, "--checkpoint", ckpt, "--num_items", "1", "--num_steps", "2", "--guidance", "0"]
    assert ev.main(args) == 0
    # Held-out generation uses the item's own actions; from a file, the given ones, and other
    # actions give another video.
    held = tmp_path / "held.mp4"
    assert (
        v2w.main([*TRUST, "--checkpoint", ckpt, "--guidance", "0", "--save_path", str(held)]) == 0
    )
    clip = next((data / "val" / "videos").glob("*.mp4"))
    first = tmp_path / "gen.mp4"
    common = [*TRUST, "--checkpoint", ckpt, "--guidance", "0", "--num_steps", "2", "--prompt", "go"]
    common += ["--input_path", str(clip)]
    np.save(tmp_path / "a.npy", np.zeros((2, 3), dtype=np.float32))
    np.save(tmp_path / "b.npy", np.full((2, 3), 3.0, dtype=np.float32))
    assert v2w.main([*common, "--actions", str(tmp_path / "a.npy"), "--save_path", str(first)]) == 0
    other = tmp_path / "gen_b.mp4"
    assert v2w.main([*common, "--actions", str(tmp_path / "b.npy"), "--save_path", str(other)]) == 0
    assert first.read_bytes() != other.read_bytes()
    # Without actions the model says what it needs instead of generating without them.
    assert v2w.main([*common, "--save_path", str(tmp_path / "none.mp4")]) != 0
    assert not (tmp_path / "none.mp4").exists()
