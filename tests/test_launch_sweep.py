"""Sweep expansion and naming, the plan, the local launcher end to end (toy experiment, a few
seconds a run), re-runs that skip, resume or leave alone, and the report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser

import tests.toy_experiments  # noqa: F401  (registers toy_regression)
from framework.config import ConfigError
from framework.jobs import note_pid, take_launch_lock
from launch import sweep
from launch.sweep_report import report

ROOT = Path(__file__).resolve().parents[1]
TOY = ["toy_regression", "--module", "tests.toy_experiments"]


def test_expand_is_hydras_cartesian_product_first_key_slowest():
    points, swept = sweep.expand(["a=1,2", "+b.c=range(3)", "d=x", "e=choice(u,'v w')"])
    assert len(points) == 12
    assert points[0] == ["a=1", "+b.c=0", "d=x", "e=u"]
    assert points[-1][:3] == ["a=2", "+b.c=2", "d=x"]
    assert swept[4] == {"a": "1", "b.c": "2", "e": "u"}
    # Each point is plain override syntax again: the quoted value comes back whole.
    last = OverridesParser.create().parse_overrides(points[-1])
    assert [ov.value() for ov in last] == [2, 2, "x", "v w"]


def test_interval_and_bad_syntax_are_refused():
    with pytest.raises(ConfigError, match="interval\\(\\) needs a search algorithm"):
        sweep.expand(["optim.lr=interval(0,1)"])
    with pytest.raises(ConfigError, match="cannot parse override"):
        sweep.expand(["a=[1,2"])


def test_run_names_are_readable_and_distinct():
    names = sweep.run_names(
        [{"optim.lr": "0.001", "train.seed": "0"}, {"optim.lr": "0.002", "train.seed": "1"}]
    )
    assert names == ["lr=0.001_seed=0", "lr=0.002_seed=1"]
    # Two swept keys ending alike keep their full names; odd characters become '-'.
    names = sweep.run_names([{"optim.lr": "1", "sched.lr": "[1, 2]"}])
    assert names == ["optim.lr=1_sched.lr=1-2"]
    long = sweep.run_names([{"k": "x" * 150}, {"k": "x" * 150 + "y"}])
    assert len(set(long)) == 2 and all(len(n) < 100 for n in long)
    assert long == sweep.run_names([{"k": "x" * 150}, {"k": "x" * 150 + "y"}])


def test_plan_puts_every_run_under_one_sweep_folder(tmp_path):
    ov = [f"job.output_root={tmp_path}", "optim.lr=1e-3,2e-3", "train.seed=range(2)"]
    plan = sweep.plan("toy_regression", ov)
    assert plan.name == "toy_regression-lr-seed"
    assert plan.dir == tmp_path / "worldtune_tests" / "toy_regression-lr-seed"
    assert [r.name for r in plan.runs] == [
        "lr=0.001_seed=0",
        "lr=0.001_seed=1",
        "lr=0.002_seed=0",
        "lr=0.002_seed=1",
    ]
    assert all(r.job_dir.parent == plan.dir for r in plan.runs)
    assert plan.runs[1].argv[-2:] == [
        'job.group="toy_regression-lr-seed"',
        'job.name="lr=0.001_seed=1"',
    ]
    named = sweep.plan("toy_regression", ov, name="lrs")
    assert named.dir.name == "lrs" and named.runs[0].job_dir.parent.name == "lrs"


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["optim.lr=1"], "no override has several values"),
        (["optim.lr=1,2", "job.name=x"], "job.name would be the same for every run"),
        (["optim.lr=1,2", "job.group=a,b"], "job.group names the sweep's folders"),
        (["optim.lrr=1,2"], "optim.lrr: no such key; did you mean optim.lr?"),
    ],
)
def test_plan_errors(overrides, message):
    with pytest.raises(ConfigError, match=message):
        sweep.plan("toy_regression", overrides)


@pytest.fixture
def cli(tmp_path, monkeypatch, capsys):
    """launch.sweep's main in this process (its training runs are subprocesses); returns
    (exit code, stdout, stderr)."""
    monkeypatch.setenv("OUTPUT_ROOT", str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # one thread a run, as conftest.py sets here
    monkeypatch.chdir(ROOT)

    def call(*args: str) -> tuple[int, str, str]:
        code = sweep.main(list(args))
        out, err = capsys.readouterr()
        return code, out, err

    return call


def test_user_errors_are_one_line_and_exit_2(tmp_path, cli):
    for args, message in [
        (["optim.lr=1,2"], "name the experiment first"),
        ([*TOY, "optim.lr=1,2", "--launcher", "pbs"], "argument --launcher: invalid choice"),
        ([*TOY, "optim.lr=1,2", "--nodes", "2"], "are for --launcher slurm"),
        ([*TOY, "optim.lr=1,2", "--nproc", "0"], "--nproc and --parallelism must be at least 1"),
        ([*TOY, "optim.lr=1,2", "--nproc", "2"], "parallel.strategy=none; add parallel"),
        ([*TOY, "optim.lr=1,2", "--nproc", "2", "--launcher=slurm"], "--nproc is for --launcher"),
        (["--report", str(tmp_path / "nowhere")], "is not a folder"),
    ]:
        code, _, err = cli(*args)
        assert code == 2 and err.count("\n") == 1 and err.startswith("error: "), err
        assert message in err


@pytest.mark.slow
def test_dry_prints_the_plan_and_the_array_script(tmp_path):
    # The real command line, once: `python -m launch.sweep`.
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "launch.sweep",
            *TOY,
            "optim.lr=1e-3,2e-3",
            "--dry",
            "parallel.strategy=ddp",
            "--launcher=slurm",
            "--nodes=2",
            "--parallelism=1",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT), "OUTPUT_ROOT": str(tmp_path)},
    )
    assert done.returncode == 0, done.stderr
    assert "sweep toy_regression-lr: 2 runs of toy_regression" in done.stdout
    assert "lr=0.001  new" in done.stdout and "#SBATCH --array=0-1%1" in done.stdout
    assert not any(tmp_path.iterdir())


def metrics(job_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (job_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_local_sweep_runs_skips_resumes_and_reports(tmp_path, cli):
    args = [*TOY, "optim.lr=1e-2,2e-2", "train.max_steps=4", "checkpoint.save_iter=2"]
    code, out, err = cli(*args)
    assert code == 0, out + err
    folder = tmp_path / "worldtune_tests" / "toy_regression-lr"
    jobs = [folder / "lr=0.01", folder / "lr=0.02"]
    assert "[1/2] lr=0.01: training to step 4" in out
    rows = [line.split() for line in out.splitlines() if line.startswith("lr=")]
    assert [r[:4] for r in rows] == [
        ["lr=0.01", "0.01", "finished", "4"],
        ["lr=0.02", "0.02", "finished", "4"],
    ]
    assert float(rows[0][4]) == pytest.approx(metrics(jobs[0])[-1]["loss"], rel=1e-3)
    assert (folder / "loss_curves.png").stat().st_size > 0
    index = json.loads((folder / "sweep.json").read_text())
    assert [r["job_dir"] for r in index["runs"]] == [str(j) for j in jobs]

    code, out, _ = cli(*args)
    assert code == 0 and "lr=0.01: finished at step 4; skipped" in out
    assert "nothing to do: of 2 runs, 2 are finished and 0 still going." in out
    assert all((j / "overrides.txt").read_text().count("# started") == 1 for j in jobs)

    # A run still held by another launch is left alone; the other one resumes to step 6.
    lock = take_launch_lock(jobs[0])
    note_pid(lock, os.getpid())
    longer = [*args[:-2], "train.max_steps=6", "checkpoint.save_iter=2"]
    code, out, _ = cli(*longer)
    lock.close()
    assert code == 0
    assert f"lr=0.01: running (pid {os.getpid()}) at step 4; skipped" in out
    assert "[1/1] lr=0.02: resuming from step 4 to step 6" in out
    assert [m["step"] for m in metrics(jobs[1])] == [1, 2, 3, 4, 5, 6]
    assert [m["step"] for m in metrics(jobs[0])] == [1, 2, 3, 4]

    code, out, _ = cli("--report", str(folder))
    assert code == 0 and "lowest final loss:" in out


def test_report_of_plain_job_folders(tmp_path):
    # 60 points: a smoothed line; 2 points: the points themselves.
    for name, losses in (("a", [3.0 - i / 60 for i in range(60)]), ("b", [4.0, 1.0])):
        job = tmp_path / name
        job.mkdir()
        lines = [{"step": i + 1, "loss": v} for i, v in enumerate(losses)]
        lines.append({"step": 1, "eval/psnr": 15.0 + len(name)})  # the hook's every-N scores
        if name == "a":
            lines.append({"step": 2, "eval_after/psnr": 20.0, "eval_before/psnr": 10.0})
        (job / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    text = report(tmp_path)
    assert "after/psnr" in text and "before/psnr" not in text
    row_a = next(line for line in text.splitlines() if line.startswith("a "))
    row_b = next(line for line in text.splitlines() if line.startswith("b "))
    assert "20" in row_a and "16" not in row_a  # final scores replace the running ones
    assert "16" in row_b  # a run without final scores shows its latest eval/*
    assert "lowest final loss: b (1)" in text
    assert (tmp_path / "loss_curves.png").is_file()
