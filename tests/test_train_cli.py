"""launch.train as a new user meets it (issue 30 items 3, 6, 7): --check lists every missing file
with its fetch command, --help and Hydra habits point somewhere, a start banner, one line per
mistake under torchrun, and Ctrl-C names the last checkpoint."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from launch import train

ROOT = Path(__file__).resolve().parent.parent
TOY = ["toy_regression", "--module", "tests.toy_experiments", "data.num_workers=0"]


def test_check_lists_every_missing_file_with_its_command(tmp_path, monkeypatch, capsys):
    ckpts, data = tmp_path / "ckpts", tmp_path / "data"
    monkeypatch.setenv("CHECKPOINTS", str(ckpts))
    monkeypatch.setenv("DATASETS", str(data))
    assert train.main(["groot_gr1_480", "--check"]) == train.USER_ERROR
    err = capsys.readouterr().err.splitlines()
    hub = f"{ckpts}/nvidia/Cosmos-Predict2-2B-Video2World"
    gr1 = f"{data}/benchmark_train/gr1"
    assert err[0] == "groot_gr1_480: 3 missing file(s) or folder(s) stop the run:"
    assert [line.split(":")[0].strip() for line in err[1:5]] == [
        "checkpoint.load_path",
        "model.tokenizer.path",
        "model.text_encoder",
        "data.dataset.dataset_dir",
    ]
    assert "(only generation needs it)" in err[3]
    assert err[5:] == [
        "to fetch them all:",
        f"  hf download nvidia/Cosmos-Predict2-2B-Video2World --local-dir {hub}",
        f"  hf download google-t5/t5-11b --local-dir {ckpts}/google-t5/t5-11b",
        f"  python -m data_prep.gr1 --download --dataset_path {gr1}",
    ]
    # The weights and an empty dataset folder: what is left is the layout's inside.
    (Path(hub) / "tokenizer").mkdir(parents=True)
    (Path(hub) / "tokenizer" / "tokenizer.pth").touch()
    (Path(hub) / "model-720p-16fps.pt").touch()
    (Path(gr1) / "videos").mkdir(parents=True)
    (Path(gr1) / "videos" / "a.mp4").touch()
    assert train.main(["groot_gr1_480", "--check"]) == train.USER_ERROR
    err = capsys.readouterr().err
    assert "1 missing" in err and f"{gr1}/t5_xxl (empty or absent)" in err
    assert f"python -m data_prep.t5_embed {gr1}" in err
    (Path(gr1) / "t5_xxl").mkdir()
    (Path(gr1) / "t5_xxl" / "a.pickle").touch()
    # Only the text encoder is missing: the run can start, generation would need it.
    assert train.main(["groot_gr1_480", "--check"]) == 0
    out = capsys.readouterr().out
    assert "the run can start; missing for generation" in out and "t5-11b" in out


def test_help_and_hydra_habits_point_to_what_works(capsys):
    with pytest.raises(SystemExit) as done:
        train.main(["--help"])
    assert done.value.code == 0
    usage = capsys.readouterr().out
    for word in ("--check", "--dryrun", "--module", "launch.sweep", "entry point", "Ctrl-C"):
        assert word in usage, word
    for habit, pointer in [
        (["-m", "tiny_gr1"], "launch.sweep"),
        (["--multirun"], "launch.sweep"),
        (["--cfg", "job"], "--dryrun"),
    ]:
        assert train.main(habit) == train.USER_ERROR
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and pointer in err and "Hydra" in err, err


def test_user_errors_print_on_rank_zero_only(monkeypatch, capsys):
    monkeypatch.setenv("RANK", "1")
    assert train.main(["tiny_gr1", "optim.lrr=1"]) == train.USER_ERROR
    assert capsys.readouterr().err == ""
    monkeypatch.setenv("RANK", "0")
    assert train.main(["tiny_gr1", "optim.lrr=1"]) == train.USER_ERROR
    assert capsys.readouterr().err.count("\n") == 1


def test_banner_says_what_the_run_does(tmp_path, capsys):
    args = [*TOY, f"job.output_root={tmp_path}", "train.max_steps=2"]
    assert train.main(args) == 0
    job = tmp_path / "worldtune_tests" / "toy" / "toy_regression"  # project/group/name
    first = capsys.readouterr().err.splitlines()[0]
    assert first.startswith("toy_regression: job folder ") and "1 process" in first
    assert "new run from scratch, 2 steps" in first
    assert train.main([*args[:-1], "train.max_steps=3"]) == 0
    first = capsys.readouterr().err.splitlines()[0]
    assert "resuming from iter_000000002.pt (checkpoints/latest_checkpoint.txt), 3 steps" in first
    assert str(job) in first


def test_make_train_says_what_a_sigkill_usually_is(tmp_path):
    """A SIGKILL (what the out-of-memory killer sends) leaves the process no last word: make
    says it, keeps the exit code, and the same command then resumes and finishes."""
    venv = Path(sys.executable).parent.parent
    kill = "'+hooks.zz={_target_:tests.toy_experiments.SignalAtStep,step:5,sig:SIGKILL}'"
    args = [*TOY, f"job.output_root={tmp_path}", "train.max_steps=8", "checkpoint.save_iter=2"]
    cmd = ["make", "-s", "-o", f"{venv}/.install-stamp", "train", f"VENV={venv}"]
    cmd += [f"EXP={args[0]}", "ARGS=" + " ".join([*args[1:], kill])]
    env = {**os.environ, "TOY_SIGNAL_ARMED": "1", "PYTHONPATH": str(ROOT)}
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2, out.stderr[-2000:]  # make's own code for a failed recipe
    last = [ln for ln in out.stderr.splitlines() if not ln.startswith("make")][-1]
    assert last.startswith("error: the training process was killed by SIGKILL")
    assert "out-of-memory killer" in last and "run the same command again" in last
    env.pop("TOY_SIGNAL_ARMED")
    again = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "resuming from iter_000000004.pt" in again.stderr
    assert "killed by SIGKILL" not in again.stderr


def test_make_train_with_several_processes_reports_a_mistake_in_one_line():
    venv = Path(sys.executable).parent.parent
    out = subprocess.run(
        ["make", "-s", "-o", f"{venv}/.install-stamp", "train", f"VENV={venv}", "NPROC=2"]
        + ["ARGS=optim.lrr=1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode != 0
    assert "torchrun" not in out.stdout + out.stderr  # stopped before starting ranks
    lines = [ln for ln in out.stderr.splitlines() if not ln.startswith("make")]
    assert lines == ["error: optim.lrr: no such key; did you mean optim.lr?"], out.stderr


@pytest.mark.slow
def test_ctrl_c_names_the_last_checkpoint_without_a_traceback(tmp_path):
    cmd = [sys.executable, "-m", "launch.train", *TOY, f"job.output_root={tmp_path}"]
    cmd += ["train.max_steps=1000000", "checkpoint.save_iter=20", "~hooks.progress"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stderr=subprocess.PIPE, text=True)
    job = tmp_path / "worldtune_tests" / "toy" / "toy_regression"
    latest = job / "checkpoints" / "latest_checkpoint.txt"
    deadline = time.monotonic() + 240
    while not latest.is_file() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == train.INTERRUPTED, err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("stopped by Ctrl-C; the last checkpoint is ") and "iter_0" in last
    assert "run the same command again to resume from it" in last
    assert os.path.isfile(latest)
