"""The job folder and its checkpoint files: the one module that knows their names and rules
(DESIGN contract 3). The trainer, inference, export, eval, LoRA files and the launchers ask here.

    <output_root>/<project>/<group>/<name>/          job_dir_of(cfg)
        config.yaml, overrides.txt, metrics.jsonl     what ran (written by the trainer)
        run.lock                                      JobLock: flock'ed while a run trains it
        PREEMPTED                                     the step a SIGTERM/SIGUSR1 run saved
        logs/local_launch.lock, logs/slurm_jobs.txt   the launchers' (launch/runs.py)
        checkpoints/                                  checkpoints_of(job)
            model/iter_{N:09d}.pt                     the official layout (`net.*`, ...)
            optim/iter_{N:09d}.pt  or  optim/iter_{N:09d}/   (format=dcp: a DCP folder)
            scheduler/iter_{N:09d}.pt, trainer/iter_{N:09d}.pt
            manifest/iter_{N:09d}.json                what the save wrote (framework.manifest)
            latest_checkpoint.txt                     one line: iter_{N:09d}.pt

An iteration is named `iter_{N:09d}.pt` everywhere (its folder and manifest drop or swap the
suffix). This module reads names and paths only; what a checkpoint holds is the trainer's.
"""

from __future__ import annotations

import fcntl
import os
import re
import socket
import time
from pathlib import Path
from typing import IO, Any

from framework.config import ConfigError

CONFIG = "config.yaml"
OVERRIDES = "overrides.txt"
METRICS = "metrics.jsonl"
RUN_LOCK = "run.lock"
PREEMPTED = "PREEMPTED"
CHECKPOINTS = "checkpoints"
LATEST = "latest_checkpoint.txt"
MANIFEST = "manifest"
PARTS = ("model", "optim", "scheduler", "trainer")
LAUNCH_LOCK = "local_launch.lock"  # in <job>/logs: flock'ed while a local launch trains it

_NAME = re.compile(r"^iter_(\d{9})\.pt$")


# ---- where a job lives --------------------------------------------------------------------------


def job_dir_of(cfg: Any) -> Path:
    """output_root/project/group/name of a config (DESIGN contract 3)."""
    job = cfg.job
    root = job.get("output_root") or os.environ.get("OUTPUT_ROOT", "checkpoints")
    return Path(str(root)) / str(job.project) / str(job.group) / str(job.name)


def checkpoints_of(job_dir: str | Path) -> Path:
    return Path(job_dir) / CHECKPOINTS


def job_of_checkpoint(path: str | Path) -> Path | None:
    """The job folder a `checkpoints/model/iter_N.pt` file (or `checkpoints/optim/iter_N/`
    folder) belongs to, when it has config.yaml."""
    path = Path(path)
    if path.parent.name in ("model", "optim") and path.parent.parent.name == CHECKPOINTS:
        job = path.parents[2]
        if (job / CONFIG).is_file():
            return job
    return None


def is_job_file(path: str | Path) -> bool:
    """Whether `path` is a file a job folder keeps about itself (its config, record, lock or
    checkpoints): commands that write elsewhere must never replace one."""
    path = Path(path).absolute()
    for parent in [path.parent, *path.parents]:
        if (parent / CONFIG).is_file() and (parent / CHECKPOINTS).is_dir():
            rel = path.relative_to(parent)
            top = rel.parts[0]
            return top in (CONFIG, OVERRIDES, METRICS, RUN_LOCK, PREEMPTED, CHECKPOINTS)
    return False


# ---- iteration names ----------------------------------------------------------------------------


def iter_name(step: int) -> str:
    return f"iter_{step:09d}.pt"


def step_of(name: str) -> int | None:
    """N of `iter_{N:09d}.pt` (None for any other name)."""
    match = _NAME.match(name)
    return int(match.group(1)) if match else None


def is_iter_name(name: str) -> bool:
    return _NAME.match(name) is not None


def _name(step_or_name: int | str) -> str:
    return iter_name(step_or_name) if isinstance(step_or_name, int) else step_or_name


def part_path(root: Path, part: str, step_or_name: int | str) -> Path:
    """`<checkpoints>/<part>/iter_N.pt`."""
    return Path(root) / part / _name(step_or_name)


def dcp_folder(root: Path, step_or_name: int | str) -> Path:
    """`<checkpoints>/optim/iter_N/`: the DCP folder of an iteration (format=dcp)."""
    return part_path(root, "optim", step_or_name).with_suffix("")


def manifest_path(root: Path, step_or_name: int | str) -> Path:
    return Path(root) / MANIFEST / _name(step_or_name).replace(".pt", ".json")


def iterations(root: Path, upto: str | None = None) -> list[str]:
    """Saved iteration names under `root` (any part present), newest first, at most `upto`."""
    root = Path(root)
    names = {p.name for part in PARTS for p in (root / part).glob("iter_*.pt")}
    names |= {f"{p.name}.pt" for p in (root / "optim").glob("iter_*") if p.is_dir()}
    names = {n for n in names if is_iter_name(n) and (upto is None or n <= upto)}
    return sorted(names, reverse=True)


# ---- latest -------------------------------------------------------------------------------------


def read_latest(root: Path) -> str | None:
    """The iteration `<checkpoints>/latest_checkpoint.txt` names (None without the file);
    a file holding anything else is a one-line error."""
    marker = Path(root) / LATEST
    if not marker.is_file():
        return None
    named = marker.read_text().strip()
    if not is_iter_name(named):
        raise ConfigError(
            f"{marker} holds {named!r}, not iter_NNNNNNNNN.pt; fix or delete it "
            "to start from scratch."
        )
    return named


def latest_step(job_dir: Path) -> int | None:
    """The step latest_checkpoint.txt names, which a restart resumes from (None when absent or
    unreadable: the launchers then treat the run as new and the trainer says what is wrong)."""
    path = checkpoints_of(job_dir) / LATEST
    if not path.is_file():
        return None
    match = re.search(r"iter_(\d+)", path.read_text())
    return int(match.group(1)) if match else None


def is_dcp_dir(path: Path) -> bool:
    from framework.trainer.checkpoint_dcp import is_dcp_dir as dcp

    return dcp(Path(path))


def sharded_twin(path: Path) -> Path | None:
    """`checkpoints/optim/iter_N/` for a `checkpoints/model/iter_N.pt` that format=dcp did not
    write (it writes the model file for the run's last step only)."""
    path = Path(path)
    if path.is_dir():
        return path if is_dcp_dir(path) else None
    folder = path.parent.parent / "optim" / Path(path.name).with_suffix("").name
    return folder if path.parent.name == "model" and is_dcp_dir(folder) else None


def latest_model(job_dir: str | Path) -> Path | None:
    """The model file latest_checkpoint.txt names (or, for format=dcp when that step has no
    model file, its sharded folder), if it exists."""
    marker = checkpoints_of(job_dir) / LATEST
    if not marker.is_file():
        return None
    name = marker.read_text().strip()
    model_dir = marker.parent / "model"
    # The marker may hold a file name ("iter_000000100.pt"), a stem or a path.
    for candidate in (
        Path(name),
        model_dir / name,
        model_dir / f"{name}.pt",
        model_dir / f"{Path(name).stem}.pt",
    ):
        if name and candidate.is_file():
            return candidate
    return sharded_twin(model_dir / f"{Path(name).stem}.pt") if name else None


# ---- locks --------------------------------------------------------------------------------------


class JobLock:
    """An exclusive flock on `<job_dir>/run.lock` while a run uses the folder, so a second start
    of the same job, from another process, stops at once and says who holds it. The kernel drops
    the lock when the holder exits, even on SIGKILL, so a crash never leaves a stale lock. Within
    one process the lock is shared (counted), so code that builds trainers in turn (tests, a
    notebook) is not locked out by its own earlier trainer."""

    NAME = RUN_LOCK
    _held: dict[Path, list] = {}  # path -> [open file, count] for this process

    def __init__(self, job_dir: Path) -> None:
        job_dir.mkdir(parents=True, exist_ok=True)
        self.path = (job_dir / self.NAME).resolve()
        self.released = False
        if self.path in self._held:
            self._held[self.path][1] += 1
            return
        file = open(self.path, "a+")  # noqa: SIM115  (held for the life of the run)
        try:
            fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            file.seek(0)
            holder = file.read().strip() or "another process"
            file.close()
            raise ConfigError(
                f"{job_dir} is in use by {holder}; wait for that run to end or stop it, or "
                "start this one under another job.name."
            ) from None
        file.seek(0)
        file.truncate()
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        file.write(f"pid {os.getpid()} on {socket.gethostname()} since {stamp}\n")
        file.flush()
        self._held[self.path] = [file, 1]

    def release(self) -> None:
        if self.released or self.path not in self._held:
            return
        self.released = True
        entry = self._held[self.path]
        entry[1] -= 1
        if entry[1] == 0:
            entry[0].close()
            del self._held[self.path]


def take_launch_lock(job_dir: Path) -> IO | None:
    """`<job>/logs/local_launch.lock`, locked for us; None when another launch holds it. The
    training process inherits the descriptor, so the lock lasts as long as it runs, even if the
    launcher dies first."""
    path = Path(job_dir) / "logs" / LAUNCH_LOCK
    path.parent.mkdir(parents=True, exist_ok=True)
    f = open(path, "a+")  # noqa: SIM115  (returned locked to the caller)
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        return None
    return f


def note_pid(lock: IO, pid: int) -> None:
    lock.seek(0)
    lock.truncate()
    lock.write(f"{pid}\n")
    lock.flush()


def launch_lock_holder(job_dir: Path) -> str | None:
    """The pid written in the launch lock when some process holds it, else None."""
    path = Path(job_dir) / "logs" / LAUNCH_LOCK
    if not path.is_file():
        return None
    with open(path) as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return f.read().strip() or "?"
    return None
