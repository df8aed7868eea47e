"""The sbatch script renderer, the command line of launch.slurm, the run-state helpers and the
private cluster's start-up checks; no SLURM needed (tests/test_slurm.py uses a real one)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from framework.jobs import latest_step, note_pid, take_launch_lock
from framework.jobs import launch_lock_holder as lock_holder
from launch import local_slurm, runs
from launch.runs import LaunchError, Run, State, state_of
from launch.slurm import SlurmOptions, main, render_script

ROOT = Path(__file__).resolve().parents[1]


def a_run(tmp_path: Path, name: str = "r0", max_steps: int = 10) -> Run:
    return Run(
        name=name,
        job_dir=tmp_path / name,
        max_steps=max_steps,
        argv=["tiny_gr1", "optim.lr=0.001", 'job.name="a b"'],
    )


def bash_syntax_ok(script: str, tmp_path: Path) -> None:
    path = tmp_path / "job.sbatch"
    path.write_text(script)
    done = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_one_run_on_four_nodes_of_eight_gpus(tmp_path):
    opts = SlurmOptions(
        nodes=4,
        gpus_per_node=8,
        time="4:00:00",
        partition="gpu",
        account="lab",
        qos="high",
        job_name="big",
    )
    run = a_run(tmp_path)
    script = render_script(
        [run],
        opts,
        python="/venv/bin/python",
        workdir=Path("/repo"),
        env={"DATASETS": "/data", "UNRELATED": "x"},
    )
    header = [line for line in script.splitlines() if line.startswith("#SBATCH")]
    assert header == [
        "#SBATCH --job-name=big",
        "#SBATCH --nodes=4",
        "#SBATCH --ntasks-per-node=1",
        "#SBATCH --gpus-per-node=8",
        "#SBATCH --exclusive",
        "#SBATCH --mem=0",
        "#SBATCH --time=4:00:00",
        "#SBATCH --partition=gpu",
        "#SBATCH --account=lab",
        "#SBATCH --qos=high",
        f"#SBATCH --output={run.job_dir}/logs/slurm-%j.out",
        "#SBATCH --open-mode=append",
        "#SBATCH --signal=B:USR1@300",
        "#SBATCH --requeue",
    ]
    assert "cd /repo\nexport DATASETS=/data\n" in script and "UNRELATED" not in script
    assert f"job_dir={run.job_dir}\nargs=(tiny_gr1 optim.lr=0.001 'job.name=\"a b\"')" in script
    # One agent per node, c10d rendezvous on the first node, 8 processes each.
    assert 'head_node=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)' in script
    assert "/venv/bin/python -m torch.distributed.run" in script
    assert '--nnodes="$SLURM_NTASKS" --nproc-per-node=8' in script
    assert '--rdzv-backend=c10d --rdzv-endpoint="$head_node:$port"' in script
    assert 'srun --kill-on-bad-exit=1 --output="$job_dir/logs/%j_node%t.out"' in script
    # Whole nodes: every CPU of the node to its one task (srun would give it one).
    assert "export SRUN_CPUS_PER_TASK=$((SLURM_CPUS_ON_NODE / 1))" in script
    # The signal: the shell traps USR1 and hands it to the step; the agents ignore it.
    assert "trap on_usr1 USR1" in script and 'kill -USR1 "$srun_pid"' in script
    assert 'trap "" USR1;' in script
    assert 'scontrol requeue "$SLURM_JOB_ID"' in script
    assert 'rm -f "$job_dir/PREEMPTED"' in script
    bash_syntax_ok(script, tmp_path)


def test_job_array_with_a_parallelism_limit(tmp_path):
    runs_ = [a_run(tmp_path, f"r{i}") for i in range(3)]
    script = render_script(runs_, SlurmOptions(), output="/s/logs/%A_%a.out", array_parallelism=2)
    assert "#SBATCH --array=0-2%2" in script and "#SBATCH --output=/s/logs/%A_%a.out" in script
    assert 'case "$SLURM_ARRAY_TASK_ID" in' in script
    for i, run in enumerate(runs_):
        assert f"  {i})  # r{i}\n    job_dir={run.job_dir}\n" in script
    # CPU jobs: no GPUs, no whole nodes, one process per node.
    assert "--gpus-per-node" not in script and "--exclusive" not in script
    assert "SRUN_CPUS_PER_TASK" not in script and "--mem" not in script
    assert "--nproc-per-node=1" in script
    bash_syntax_ok(script, tmp_path)


def test_options_no_requeue_extra_sbatch_and_setup(tmp_path):
    opts = SlurmOptions(
        requeue=False,
        signal_secs=90,
        cpus_per_task=16,
        mem="0",
        port=29400,
        sbatch=["--reservation=mine"],
        setup=["module load cuda/12"],
    )
    script = render_script([a_run(tmp_path)], opts)
    assert "#SBATCH --no-requeue" in script and "scontrol requeue" not in script
    assert "#SBATCH --signal=B:USR1@90" in script and "#SBATCH --reservation=mine" in script
    assert "#SBATCH --cpus-per-task=16" in script and "#SBATCH --mem=0" in script
    assert "export SRUN_CPUS_PER_TASK=$SLURM_CPUS_PER_TASK" in script
    assert "\nmodule load cuda/12\n" in script and "\nport=29400\n" in script
    bash_syntax_ok(script, tmp_path)


@pytest.mark.parametrize(
    "opts, message",
    [
        (SlurmOptions(nodes=0), "--nodes must be at least 1"),
        (SlurmOptions(gpus_per_node=-1), "--gpus-per-node"),
        (SlurmOptions(signal_secs=70000), "--signal-secs"),
        (SlurmOptions(sbatch=["reservation=x"]), "--sbatch=--reservation=mine"),
    ],
)
def test_bad_options(opts, message):
    with pytest.raises(LaunchError, match=message):
        opts.check()


def test_dry_prints_a_cluster_script_and_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("OUTPUT_ROOT", str(tmp_path / "runs"))
    assert main(["groot_gr1_480", "--nodes", "4", "--gpus-per-node", "8", "--dry"]) == 0
    script = capsys.readouterr().out
    assert script.startswith("#!/bin/bash\n") and "#SBATCH --nodes=4" in script
    assert f"job_dir={tmp_path}/runs/" in script and "args=(groot_gr1_480)" in script
    assert '--nnodes="$SLURM_NTASKS" --nproc-per-node=8' in script
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--nodes", "2"], "name the experiment first"),
        (["tiny_gr1", "--nodez", "2"], "unrecognized arguments: --nodez"),
        (["tiny_gr1", "--nodes", "two"], "--nodes: invalid int value"),
        (["tiny_gr1", "--nodes", "2"], "parallel.strategy=none; add parallel.strategy=ddp"),
        (["tiny_gr1", "optim.lrr=1", "--dry"], "optim.lrr: no such key"),
        (["tiny_gr99", "--dry"], "unknown experiment"),
    ],
)
def test_user_errors_are_one_line_and_exit_2(args, message, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err, err


@pytest.mark.slow
def test_the_command_line_entry(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "launch.slurm", "tiny_gr1", "--nodes", "2"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 2 and "parallel.strategy=none" in done.stderr


def test_submitting_without_slurm_says_where_to_run(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("OUTPUT_ROOT", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no sbatch on this PATH
    assert main(["tiny_gr1"]) == 2
    assert "sbatch not found: run this on a SLURM login node" in capsys.readouterr().err


# --- where a run stands ---------------------------------------------------------------------


def write_checkpoint(job_dir: Path, step: int) -> None:
    (job_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    (job_dir / "checkpoints" / "latest_checkpoint.txt").write_text(f"iter_{step:09d}.pt\n")


def test_state_new_partial_finished(tmp_path):
    run = a_run(tmp_path, max_steps=10)
    assert state_of(run) == State("new", None)
    write_checkpoint(run.job_dir, 4)
    assert latest_step(run.job_dir) == 4 and state_of(run).kind == "partial"
    write_checkpoint(run.job_dir, 10)
    assert state_of(run) == State("finished", 10)


def test_a_held_lock_means_running(tmp_path):
    run = a_run(tmp_path)
    lock = take_launch_lock(run.job_dir)
    note_pid(lock, 4242)
    assert lock_holder(run.job_dir) == "4242" and take_launch_lock(run.job_dir) is None
    assert str(state_of(run)) == "running (pid 4242)"
    lock.close()
    assert lock_holder(run.job_dir) is None and state_of(run).kind == "new"


def fake_squeue(tmp_path: Path, monkeypatch, body: str) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "squeue").write_text(f"#!/bin/sh\n{body}\n")
    (bin_dir / "squeue").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")


def test_a_recorded_slurm_job_that_is_pending_means_running(tmp_path, monkeypatch):
    run = a_run(tmp_path)
    write_checkpoint(run.job_dir, 10)
    runs.record_job(run.job_dir, "77_1")
    fake_squeue(tmp_path, monkeypatch, 'test "$5" = 77_1 && echo PENDING')
    assert str(state_of(run)) == "running (SLURM job 77_1)"
    fake_squeue(
        tmp_path, monkeypatch, 'echo "slurm_load_jobs error: Invalid job id specified" >&2; exit 1'
    )
    assert state_of(run).kind == "finished"  # forgotten by SLURM: the checkpoint decides
    fake_squeue(tmp_path, monkeypatch, "echo 'Unable to contact slurm controller' >&2; exit 1")
    with pytest.raises(LaunchError, match="cannot ask SLURM about job 77_1"):
        state_of(run)


def test_missing_slurm_names_the_install_command(tmp_path, monkeypatch):
    monkeypatch.setattr(local_slurm, "_find", lambda name: None)
    with pytest.raises(local_slurm.SlurmUnavailable, match=r"run `make install-test-system`"):
        local_slurm.LocalSlurm(tmp_path).start()


def test_install_script_lists_the_slurm_packages():
    text = (ROOT / "launch" / "install_system.sh").read_text()
    assert "--no-install-recommends slurmctld slurmd slurm-client munge" in text
    if shutil.which("bash"):
        assert (
            subprocess.run(["bash", "-n", str(ROOT / "launch" / "install_system.sh")]).returncode
            == 0
        )
