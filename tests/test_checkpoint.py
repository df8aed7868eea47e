"""Checkpoint files, resume after SIGKILL/SIGTERM, and saves interrupted half-way."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import tests.toy_experiments  # noqa: F401  (registers toy_regression)
from framework import io as io_mod
from framework.config import apply_overrides, get
from framework.trainer import EXIT_PREEMPTED, Trainer

ROOT = Path(__file__).resolve().parents[1]
PY = [sys.executable, "-c", "from tests.toy_experiments import main; main()", "toy_regression"]
# Noise drawn from the torch RNG every step, a worker process, accumulation and an epoch boundary
# (64 samples / (4 x 2) = 8 steps per epoch): what exact resume has to get right.
RUN = [
    "train.max_steps=12",
    "model.input_noise=0.1",
    "data.num_workers=1",
    "train.grad_accum=2",
    "checkpoint.save_iter=4",
]
KILL = "+hooks.zz_signal={_target_:tests.toy_experiments.SignalAtStep,step:%d,sig:%s}"


def train(out: Path, name: str, *overrides: str, armed: bool = False):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("TOY_SIGNAL_ARMED", None)
    if armed:
        env["TOY_SIGNAL_ARMED"] = "1"
    args = [*PY, f"job.output_root={out}", f"job.name={name}", *RUN, *overrides]
    return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def job(out: Path, name: str) -> Path:
    return out / "worldtune_tests" / "toy" / name


def losses(job_dir: Path) -> dict[int, float]:
    """Loss per step; a resumed run re-logs steps after its checkpoint, the last entry counts."""
    rows = [json.loads(line) for line in (job_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows}


def latest(job_dir: Path) -> str:
    return (job_dir / "checkpoints" / "latest_checkpoint.txt").read_text().strip()


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref")
    proc = train(out, "ref")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return job(out, "ref")


@pytest.mark.slow
def test_sigkill_then_restart_reproduces_losses_exactly(tmp_path, reference):
    killed = train(tmp_path, "crash", KILL % (6, "SIGKILL"), armed=True)
    assert killed.returncode == -9, killed.stderr[-3000:]
    crash = job(tmp_path, "crash")
    assert latest(crash) == "iter_000000004.pt"
    assert max(losses(crash)) == 6  # steps 5 and 6 ran and will be redone
    again = train(tmp_path, "crash", KILL % (6, "SIGKILL"))
    assert again.returncode == 0, again.stderr[-3000:]
    assert losses(crash) == losses(reference)  # exact float equality, every step
    a = torch.load(crash / "checkpoints/model/iter_000000012.pt", weights_only=True)
    b = torch.load(reference / "checkpoints/model/iter_000000012.pt", weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (crash / "overrides.txt").read_text().count("# started") == 2


@pytest.mark.slow
def test_sigterm_saves_and_exits_with_requeue_code(tmp_path, reference):
    stopped = train(tmp_path, "preempt", KILL % (5, "SIGTERM"), armed=True)
    assert stopped.returncode == EXIT_PREEMPTED == 75, stopped.stderr[-3000:]
    pre = job(tmp_path, "preempt")
    # The signal lands between steps 5 and 6; step 6 completes and is saved.
    assert latest(pre) == "iter_000000006.pt"
    assert "stop signal received" in stopped.stderr
    assert (pre / "PREEMPTED").read_text() == "6\n"
    resumed = train(tmp_path, "preempt")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert losses(pre) == losses(reference)
    assert not (pre / "PREEMPTED").exists()


def test_launch_train_runs_the_trainer_and_reports_config_mistakes(tmp_path, caplog):
    from launch.train import main

    base = [
        "toy_regression",
        "--module",
        "tests.toy_experiments",
        f"job.output_root={tmp_path}",
        "train.max_steps=2",
        "data.num_workers=0",
    ]
    assert main(base) == 0
    assert latest(job(tmp_path, "toy_regression")) == "iter_000000002.pt"
    with caplog.at_level(logging.INFO):
        assert main(base) == 0  # run again: resumes the finished job and says so
    assert "already at step 2 (train.max_steps=2): nothing to train" in caplog.text
    with caplog.at_level(logging.ERROR):
        bad = main([*base, "job.name=bad", "checkpoint.load_path=/no/such/model.pt"])
    assert bad == 2
    assert "checkpoint.load_path=/no/such/model.pt does not exist" in caplog.text


def _cfg(tmp_path, *overrides):
    return apply_overrides(get("toy_regression"), [f"job.output_root={tmp_path}", *RUN, *overrides])


def test_failure_during_save_leaves_previous_checkpoint_usable(tmp_path, monkeypatch):
    ref = Trainer(_cfg(tmp_path, "job.name=ref_inproc", "data.num_workers=0"))
    ref.fit()
    real_replace = os.replace

    def dies_on_step_8(src, dst):
        # The model, optim and scheduler files of step 8 are in place; the process "dies"
        # before the trainer file is renamed and before latest_checkpoint.txt is touched.
        if str(dst).endswith("trainer/iter_000000008.pt"):
            raise KeyboardInterrupt("killed while saving")
        real_replace(src, dst)

    monkeypatch.setattr(io_mod.os, "replace", dies_on_step_8)
    t = Trainer(_cfg(tmp_path, "job.name=dies", "data.num_workers=0"))
    with pytest.raises(KeyboardInterrupt):
        t.fit()
    monkeypatch.setattr(io_mod.os, "replace", real_replace)
    root = t.checkpointer.root
    assert latest(root.parent) == "iter_000000004.pt"
    # The interrupted write removed its own temporary file; a SIGKILL would leave one, which
    # the next save's prune removes (test_truncated_file_is_never_named_latest).
    assert not list(root.glob("*/*.tmp"))
    resumed = Trainer(_cfg(tmp_path, "job.name=dies", "data.num_workers=0"))
    assert resumed.step == 4
    resumed.fit()
    assert not list(root.glob("*/*.tmp"))
    for p, q in zip(resumed.model.net.parameters(), ref.model.net.parameters()):
        assert torch.equal(p, q)


def test_truncated_file_is_never_named_latest(tmp_path, monkeypatch):
    """A partial write (disk full, kill) raises before the rename; latest stays on step 4."""
    t = Trainer(_cfg(tmp_path, "job.name=trunc", "data.num_workers=0", "train.max_steps=8"))
    real_save = torch.save

    def half_write(obj, f, *args, **kwargs):
        name = str(getattr(f, "name", ""))
        if "/model/.iter_000000008.pt." in name and name.endswith(".tmp"):
            f.write(b"PK\x03\x04 truncated")
            raise OSError(28, "No space left on device")
        real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(io_mod.torch, "save", half_write)
    with pytest.raises(OSError, match="No space"):
        t.fit()
    monkeypatch.setattr(io_mod.torch, "save", real_save)
    assert latest(t.job_dir) == "iter_000000004.pt"
    assert not (t.checkpointer.root / "model" / "iter_000000008.pt").exists()
    assert Trainer(_cfg(tmp_path, "job.name=trunc", "data.num_workers=0")).step == 4
