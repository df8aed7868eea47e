"""`run(cfg, overrides)`: what launch/train.py calls in every process; returns the exit code.

Exit codes (also in docs/training.md), so SLURM scripts can tell a requeue from a failure:
  0   EXIT_OK          reached train.max_steps
  1   (uncaught)       any other error, with its traceback
  2   EXIT_USER_ERROR  a mistake in the config or the files it names (one-line message)
  3   EXIT_NONFINITE   the loss was NaN/Inf train.max_nonfinite_steps times in a row
  4   EXIT_OOM         out of GPU memory, or a data loader worker killed (host memory)
  5   EXIT_WRITE       a checkpoint could not be written (disk full, permissions): the message
                       names the path; temporary files are gone and the previous checkpoint is
                       still the one latest_checkpoint.txt names, so a restart resumes from it
  75  EXIT_PREEMPTED   SIGTERM/SIGUSR1: the step finished, a checkpoint was saved; requeue
                       and the run resumes from it (75 = EX_TEMPFAIL in sysexits.h).
                       torchrun reports any non-zero worker code as its own 1, so the trainer
                       also leaves <job_dir>/PREEMPTED (the step) for scripts that wrap torchrun.
"""

from __future__ import annotations

import gc
import logging
import sys

import torch
from omegaconf import DictConfig

from framework.config import ConfigError
from framework.data.dataset import BadDataError
from framework.io import UnsafeFileError
from framework.jobs import read_latest
from framework.trainer import dist as D
from framework.trainer.checkpoint import CheckpointWriteError
from framework.trainer.state import preemption_signals
from framework.trainer.trainer import NonFiniteLossError, Trainer

EXIT_OK = 0
EXIT_USER_ERROR = 2  # the same code launch/train.py uses for config mistakes
EXIT_NONFINITE = 3
EXIT_OOM = 4
EXIT_WRITE = 5
EXIT_PREEMPTED = 75

log = logging.getLogger("framework.trainer")

OOM_ADVICE = (
    "out of GPU memory on rank {rank}: lower data.batch_size (raise train.grad_accum to keep the "
    "global batch), set parallel.activation_checkpointing=selective (or full), or shard over "
    "more GPUs with parallel.strategy=fsdp and a larger parallel.shard_size (-1 = all)."
)


WORKER_KILLED = (
    "error: a data loader worker died ({what}): the kernel's out-of-memory killer does this when "
    "host memory runs out (`dmesg` says whether it did); lower data.num_workers (each worker "
    "holds its own buffers) or data.batch_size, then run the same command again to resume from "
    "the last checkpoint{where}."
)


def worker_killed(err: BaseException) -> str | None:
    """torch's text for a DataLoader worker that died under a signal (its SIGCHLD handler
    raises "... is killed by signal: Killed."; the queue's timeout check "... exited
    unexpectedly"), else None."""
    text = str(err).splitlines()[0] if str(err) else ""
    if "DataLoader worker (pid" in text and ("killed by signal" in text or "unexpectedly" in text):
        return text.rstrip(". ")
    return None


def _last_checkpoint(trainer: Trainer | None) -> str:
    """The iteration latest_checkpoint.txt names (saves in flight were finished on the way out),
    read as text: the error path must not hash files nor wait for other ranks."""
    if trainer is None:
        return ""
    root = trainer.checkpointer.root
    try:
        name = read_latest(root)
    except ConfigError:  # a damaged marker: the next start reports it
        name = None
    return f" ({root}/*/{name})" if name else ""


def _setup_logging(rank: int) -> None:
    if not logging.getLogger().handlers:
        logging.basicConfig(
            format=f"[%(asctime)s rank{rank}] %(levelname)s %(message)s",
            datefmt="%H:%M:%S",
            stream=sys.stderr,
        )
    # Other ranks speak only when something is wrong.
    log.setLevel(logging.INFO if rank == 0 else logging.WARNING)


def run(cfg: DictConfig, overrides: list[str] | tuple[str, ...] = ()) -> int:
    """Train the experiment `cfg` (overrides already applied); returns the process exit code."""
    env = D.init_distributed(cfg.parallel.strategy)
    _setup_logging(env.rank)
    trainer = None
    try:
        # A preemption signal while the model is built (minutes at 14B) is kept, not fatal: the
        # trainer acts on it after its first step (saves, exits 75).
        early: list[int] = []
        with preemption_signals(early.append):
            trainer = Trainer(cfg, overrides, env)
        trainer.pending_signal = early[-1] if early else None
        finished = trainer.fit()
        if finished and trainer.is_main:
            print(trainer.report(), flush=True)
        return EXIT_OK if finished else EXIT_PREEMPTED
    except torch.OutOfMemoryError:
        log.error(OOM_ADVICE.format(rank=env.rank))
        return EXIT_OOM
    except (ConfigError, FileNotFoundError, FileExistsError, UnsafeFileError, BadDataError) as err:
        # Files the config names (weights, data) are user input: one line, no traceback.
        log.error("error: %s", str(err).splitlines()[0])
        return EXIT_USER_ERROR
    except NonFiniteLossError as err:
        log.error("%s", err)
        return EXIT_NONFINITE
    except CheckpointWriteError as err:
        log.error("error: %s", err)
        return EXIT_WRITE
    except RuntimeError as err:
        what = worker_killed(err)
        if what is None:
            raise
        log.error(WORKER_KILLED.format(what=what, where=_last_checkpoint(trainer)))
        return EXIT_OOM
    finally:
        # Free the trainer (DDP's reducer holds the process group) while the group is still
        # registered, then destroy it: destroyed inside the reducer's teardown, gloo joins a
        # worker thread that needs the GIL the teardown holds, and the process hung at exit
        # (seen in tests/test_dist.py).
        del trainer
        gc.collect()
        D.shutdown()
