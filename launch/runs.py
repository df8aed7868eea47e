"""Where a training run stands, read from its job folder: the latest checkpoint's step, a local
launch still holding the folder's lock (both framework/jobs.py's), and the SLURM job recorded
for it.

The launchers use this to skip finished runs, resume unfinished ones and never start a second
copy of a run that is still going.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from framework.config import ConfigError
from framework.jobs import latest_step, launch_lock_holder

JOBS_FILE = "slurm_jobs.txt"  # in <job folder>/logs: the SLURM job ids submitted for it
# squeue states of a job that is still going, or will run again.
ACTIVE_STATES = {
    "PENDING",
    "CONFIGURING",
    "RUNNING",
    "COMPLETING",
    "REQUEUED",
    "REQUEUE_HOLD",
    "REQUEUE_FED",
    "RESIZING",
    "SUSPENDED",
    "STAGE_OUT",
    "SIGNALING",
}


class LaunchError(ConfigError):
    """A launcher mistake a user can fix (one line, exit 2)."""


@dataclass
class Run:
    """One training run: the arguments of `python -m launch.train` and its job folder."""

    name: str
    job_dir: Path
    argv: list[str]  # EXP, overrides, --module M
    max_steps: int = 0
    overrides: list[str] = field(default_factory=list)  # the user's, without job.group/name
    swept: dict[str, str] = field(default_factory=dict)  # swept key -> this run's value
    strategy: str = "none"


@dataclass
class State:
    kind: str  # "new", "partial", "finished" or "running"
    step: int | None = None
    detail: str = ""  # who runs it: "pid 123" or "SLURM job 45_1"

    def __str__(self) -> str:
        return f"{self.kind} ({self.detail})" if self.detail else self.kind


def state_of(run: Run) -> State:
    """Running (locally or on SLURM) wins over what the checkpoints say."""
    step = latest_step(run.job_dir)
    holder = launch_lock_holder(run.job_dir)
    if holder:
        return State("running", step, f"pid {holder}")
    job = active_job(run.job_dir)
    if job:
        return State("running", step, f"SLURM job {job}")
    # The trainer's own rule: nothing to train once the checkpoint's step reaches max_steps.
    if step is not None and step >= run.max_steps:
        return State("finished", step)
    return State("partial" if step else "new", step)


# --- SLURM jobs: ids appended to <job folder>/logs/slurm_jobs.txt, asked of squeue ------------


def record_job(job_dir: Path, job_id: str) -> None:
    logs = job_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with open(logs / JOBS_FILE, "a") as f:
        f.write(f"{job_id}\n")


def recorded_job(job_dir: Path) -> str | None:
    path = job_dir / "logs" / JOBS_FILE
    ids = path.read_text().split() if path.is_file() else []
    return ids[-1] if ids else None


def job_state(job_id: str) -> str | None:
    """squeue's state of `job_id` ("123" or "123_4"); None when SLURM no longer lists it."""
    squeue = shutil.which("squeue")
    if squeue is None:
        return None  # not on a SLURM machine: no job of ours can be running here
    done = subprocess.run(
        [squeue, "-h", "-o", "%T", "-j", job_id], capture_output=True, text=True, env=os.environ
    )
    if done.returncode != 0:
        if "invalid job id" in done.stderr.lower():
            return None  # ended long ago and forgotten by the controller
        why = (done.stderr.strip() or "no message").splitlines()[-1]
        raise LaunchError(
            f"cannot ask SLURM about job {job_id} (squeue: {why}); fix squeue, or "
            f"cancel that job and remove its id from logs/{JOBS_FILE}."
        )
    states = done.stdout.split()
    return states[0] if states else None


def active_job(job_dir: Path) -> str | None:
    """The SLURM job recorded for this folder when it is still pending or running."""
    job_id = recorded_job(job_dir)
    if job_id is None:
        return None
    return job_id if job_state(job_id) in ACTIVE_STATES else None
