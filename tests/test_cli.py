"""The command line, run as a user runs it: exit codes and one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "launch.train", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=300,
    )


def test_list_shows_every_experiment_with_description():
    out = run("--list")
    assert out.returncode == 0, out.stderr
    for name in ("groot_gr1_480", "groot_gr1_480_14b", "groot_gr1_480_lora", "tiny_gr1"):
        assert name in out.stdout
    assert "predict2_video2world_training_2b_groot_gr1_480" in out.stdout


def test_dryrun_prints_yaml_and_parameter_table_and_writes_nothing(tmp_path):
    out = run("groot_gr1_480", "optim.lr=1e-4", "--dryrun", env={"OUTPUT_ROOT": str(tmp_path)})
    assert out.returncode == 0, out.stderr
    assert "lr: 0.0001" in out.stdout
    assert "1,956,413,440" in out.stdout  # the 2B net (upstream/cosmos_predict2.md §4.4)
    assert list(tmp_path.iterdir()) == []


def test_seeds_spelling_works():
    out = run(
        "--",
        "experiment=predict2_video2world_training_2b_groot_gr1_480",
        "train.max_steps=3",
        "--dryrun",
    )
    assert out.returncode == 0, out.stderr
    assert "max_steps: 3" in out.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["groot_gr1_48"], "unknown experiment 'groot_gr1_48'; did you mean groot_gr1_480"),
        (["groot_gr1_480", "optim.lrr=1"], "optim.lrr: no such key; did you mean optim.lr?"),
        (["groot_gr1_480", "optim.lr=fast"], "optim.lr: expected a float, got 'fast'"),
        (["groot_gr1_480", "optim.lr="], "optim.lr: expected a float"),
        (["groot_gr1_480", "train.max_steps=[1"], "cannot parse override"),
        (["groot_gr1_480", "--bogus"], "unknown option --bogus"),
    ],
)
def test_user_errors_exit_2_with_one_line(args, message):
    start = time.monotonic()
    out = run(*args, "--dryrun")
    assert out.returncode == 2, out.stdout + out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], out.stderr
    assert time.monotonic() - start < 30  # generous on a loaded CI box; ~1 s measured


def test_missing_official_checkpoint_names_the_download_command(tmp_path):
    out = run(
        "groot_gr1_480",
        env={"OUTPUT_ROOT": str(tmp_path / "out"), "CHECKPOINTS": str(tmp_path / "checkpoints")},
    )
    assert out.returncode == 2, out.stderr[-2000:]
    errors = [line for line in out.stderr.splitlines() if "ERROR" in line]
    assert len(errors) == 1
    assert (
        "hf download nvidia/Cosmos-Predict2-2B-Video2World --local-dir "
        f"{tmp_path}/checkpoints/nvidia/Cosmos-Predict2-2B-Video2World"
    ) in errors[0]
