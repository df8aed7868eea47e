"""The SLURM launchers on a real SLURM: a private single-node cluster on 127.0.0.1 (its own
slurm.conf, munge key and socket in a temporary folder; daemons ended by PID at the end).

A machine without SLURM fails these tests with the command that installs it
(`make install-test-system`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from launch.local_slurm import LocalSlurm, SlurmUnavailable, missing_programs
from tests.test_dist import COMMON, assert_same_training, job, losses, train_single

pytestmark = [pytest.mark.dist, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[1]
# The tiny default experiment at test size: 4 clips, 2 per batch, no eval/sample/plot hooks.
TINY = [
    "data.dataset.num_videos=4",
    "data.batch_size=2",
    "~hooks.eval",
    "~hooks.sample",
    "~hooks.loss_curve",
    "~hooks.progress",
    "logging.every=1",
    "checkpoint.save_iter=100",
]


@pytest.fixture(scope="session")
def slurm(tmp_path_factory):
    missing = missing_programs()
    if missing:
        pytest.fail(
            f"SLURM is not installed ({', '.join(missing)} missing); run "
            "`make install-test-system` (it apt-installs slurmctld slurmd slurm-client munge).",
            pytrace=False,
        )
    cluster = LocalSlurm(tmp_path_factory.mktemp("slurm"))
    try:
        cluster.start()
    except SlurmUnavailable as err:
        pytest.fail(str(err), pytrace=False)
    saved = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(cluster.conf)
    try:
        yield cluster
    finally:
        cluster.stop()
        if saved is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = saved


@pytest.fixture(scope="session")
def datasets(tmp_path_factory) -> Path:
    """The synthetic clips tiny_gr1 reads with TINY, made once (so array tasks do not race)."""
    from data_prep.synthetic import ensure_synthetic_dataset

    root = tmp_path_factory.mktemp("datasets")
    ensure_synthetic_dataset(
        root / "synthetic_gr1", num_videos=4, num_frames=33, size=64, texture=0.0
    )
    return root


def env_for(out: Path, datasets: Path | None = None) -> dict[str, str]:
    # One thread a process, as conftest.py sets for this one: on 2 busy cores a second
    # intra-op thread made tiny_gr1 steps ~5x slower.
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OUTPUT_ROOT": str(out), "OMP_NUM_THREADS": "1"}
    if datasets is not None:
        env["DATASETS"] = str(datasets)
    return env


def launch(module: str, *args: str, env: dict) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def job_info(job_id: str) -> dict[str, str]:
    out = subprocess.run(
        ["scontrol", "show", "job", job_id], capture_output=True, text=True, check=True
    ).stdout
    return dict(word.split("=", 1) for word in out.split() if "=" in word)


def wait_done(job_id: str, timeout: float = 180) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while subprocess.run(
        ["squeue", "-h", "-j", job_id], capture_output=True, text=True
    ).stdout.strip():
        assert time.monotonic() < deadline, f"SLURM job {job_id} still queued or running"
        time.sleep(0.5)
    return job_info(job_id)


def submitted(job_dir: Path) -> list[str]:
    return (job_dir / "logs" / "slurm_jobs.txt").read_text().split()


def test_two_tasks_train_as_two_nodes_like_one_process(slurm, tmp_path):
    # Two SLURM tasks on the one node, each a torchrun agent of one process: a 2-node world
    # (gloo, c10d rendezvous) with 4 samples per rank matches one process with 8.
    launch(
        "launch.slurm",
        "toy_regression",
        "--module",
        "tests.toy_experiments",
        f"job.output_root={tmp_path}",
        "job.name=two",
        "data.batch_size=4",
        *COMMON,
        "parallel.strategy=ddp",
        "--nodes=1",
        "--tasks-per-node=2",
        env=env_for(tmp_path),
    )
    run = job(tmp_path, "two")
    (job_id,) = submitted(run)
    info = wait_done(job_id)
    assert info["JobState"] == "COMPLETED", (run / "logs" / f"slurm-{job_id}.out").read_text()
    assert sorted(losses(run)) == list(range(1, 9))
    assert_same_training(run, train_single(tmp_path / "single"))
    logs = run / "logs"
    assert "rank0" in (logs / f"{job_id}_node0.out").read_text()
    assert (logs / f"{job_id}_node1.out").is_file()
    # One folder of rank files per task.
    assert len(list((logs / f"ranks_{job_id}").glob("node*/*/attempt_0/0/stderr.log"))) == 2


def _queued_array_then_wait(slurm, args, env, tmp_path):
    first = launch("launch.sweep", *args, env=env)
    assert "submitted SLURM job array" in first.stdout
    sweep = tmp_path / "worldtune" / "tiny_gr1-lr"
    assert "#SBATCH --array=0-2%2" in (sweep / "logs" / "array.sbatch").read_text()
    index = json.loads((sweep / "sweep.json").read_text())
    assert [r["swept"] for r in index["runs"]] == [
        {"optim.lr": v} for v in ("0.001", "0.002", "0.003")
    ]
    jobs = [Path(r["job_dir"]) for r in index["runs"]]
    array_id = submitted(jobs[0])[0].split("_")[0]
    assert [submitted(j) for j in jobs] == [[f"{array_id}_{i}"] for i in range(3)]

    # The same command while the array is queued or running submits nothing; --wait waits.
    again = launch("launch.sweep", *args, env=env)
    for i in range(3):
        assert f"lr=0.00{i + 1}: running (SLURM job {array_id}_{i}); skipped" in again.stdout
    assert "submitted" not in again.stdout
    waiting = subprocess.Popen(
        [sys.executable, "-m", "launch.sweep", *args, "--wait"],
        cwd=ROOT,
        env={**env, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        head = []
        while not head or "waiting for" not in head[-1]:
            line = waiting.stdout.readline()
            assert line, "".join(head)
            head.append(line)
        assert "waiting for 3 runs to end" in head[-1], "".join(head)
        slurm._run("scontrol", "update", "PartitionName=debug", "State=UP")
        tail, _ = waiting.communicate(timeout=240)
    finally:
        waiting.kill()
    assert waiting.returncode == 0, "".join(head) + tail
    return sweep, jobs, array_id, "".join(head) + tail


def test_sweep_as_a_job_array(slurm, datasets, tmp_path):
    args = [
        "tiny_gr1",
        "optim.lr=1e-3,2e-3,3e-3",
        "train.max_steps=3",
        *TINY,
        "--launcher=slurm",
        "--parallelism=2",
        "--signal-secs=30",
    ]
    env = env_for(tmp_path, datasets)
    # The partition is down while the array is submitted, so the re-runs below meet every task
    # still queued however fast the machine is; it comes up once --wait waits.
    slurm._run("scontrol", "update", "PartitionName=debug", "State=DOWN")
    try:
        sweep, jobs, array_id, done = _queued_array_then_wait(slurm, args, env, tmp_path)
    finally:
        slurm._run("scontrol", "update", "PartitionName=debug", "State=UP")
    rows = [line for line in done.splitlines() if line.startswith("lr=0.00")]
    rows = [row for row in rows if "skipped" not in row]
    assert len(rows) == 3 and all(" finished " in row for row in rows), done
    assert (sweep / "loss_curves.png").stat().st_size > 0
    for job_dir in jobs:
        assert len(submitted(job_dir)) == 1
        assert sorted(losses(job_dir)) == [1, 2, 3]

    again = launch("launch.sweep", *args, env=env)
    assert "nothing to do: of 3 runs, 3 are finished and 0 still going." in again.stdout
    assert all(len(submitted(j)) == 1 for j in jobs)


def test_signal_requeue_resume_same_losses(slurm, datasets, tmp_path):
    # The uninterrupted reference trains outside SLURM while the SLURM job runs.
    steps = ["train.max_steps=16", *TINY]
    env = env_for(tmp_path, datasets)
    reference = subprocess.Popen(
        [sys.executable, "-m", "launch.train", "tiny_gr1", *steps, "job.name=reference"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    launch("launch.slurm", "tiny_gr1", *steps, "job.name=requeued", "--signal-secs=60", env=env)
    run = tmp_path / "worldtune" / "tiny" / "requeued"
    (job_id,) = submitted(run)
    deadline = time.monotonic() + 120
    while not (run / "metrics.jsonl").is_file() or len(losses(run)) < 2:
        assert time.monotonic() < deadline, "the SLURM job logged no step"
        time.sleep(0.1)
    # What SLURM does --signal-secs before the time limit: SIGUSR1 to the batch shell only.
    subprocess.run(["scancel", "--batch", "--signal=USR1", job_id], check=True)
    info = wait_done(job_id)
    log = (run / "logs" / f"slurm-{job_id}.out").read_text()
    assert info["JobState"] == "COMPLETED" and info["Restarts"] == "1", log
    assert "requeueing job" in log and "(restart 1)" in log
    assert (run / "overrides.txt").read_text().count("# started") == 2
    assert not (run / "PREEMPTED").exists()
    stopped_at = int(log.split("stopped at step ")[1].split()[0])
    assert 2 <= stopped_at < 16  # it stopped early, and went on from there
    assert reference.wait(timeout=180) == 0, reference.stderr.read()[-3000:]
    ref = tmp_path / "worldtune" / "tiny" / "reference"
    assert losses(run) == losses(ref)  # bit for bit: same data, RNG and optimizer state
