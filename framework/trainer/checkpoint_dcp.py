"""Sharded, asynchronous checkpoints through torch.distributed.checkpoint (`checkpoint.format=dcp`).

    checkpoints/optim/iter_{N:09d}/      DCP folder (`.metadata` + one file per rank): each rank's
                                         shards of the model (`model.net.*`, `model.net_ema.*`,
                                         `model.logvar.*`) and of the optimizer (`optim.*`)
                model/iter_{N:09d}.pt    the whole model in the official layout, for the run's
                                         last step (any other: python -m framework.export)
                scheduler/, trainer/, manifest/, latest_checkpoint.txt   as with format=pt

No rank ever holds more than its own shards: nothing is gathered. A save runs in three parts:
the training thread collects the local state dict (no copies, no communication) and queues its
copy into a shared, pinned CPU staging file allocated once (checkpoint_stage.py) on a side CUDA
stream; a writer process of this rank (checkpoint_proc.py) has DCP write it into
`optim/iter_N.tmpdir/`, over a gloo group of the writers' own; rank 0 then renames the folder to
`optim/iter_N/` and writes the small parts, the manifest and `latest_checkpoint.txt` last, exactly
in the order of format=pt. The training stream waits for the copy (on the GPU, the host does not)
only before it next changes what is being copied (`wait_staged`: the optimizer step, an EMA swap);
no GPU memory is allocated for a save.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed.checkpoint as dcp
from torch import Tensor
from torch.distributed.checkpoint import FileSystemReader
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.metadata import TensorStorageMetadata

from framework.io import fsync_dir, replace_dir
from framework.trainer import checkpoint_stage as S
from framework.trainer import dist as D
from framework.trainer.checkpoint_proc import WriterProcess

log = logging.getLogger(__name__)

METADATA = ".metadata"  # DCP writes it last, on the coordinator, after every rank's data files
TMP_SUFFIX = ".tmpdir"


def is_dcp_dir(path: Path) -> bool:
    return path.is_dir() and (path / METADATA).is_file()


def file_sizes(folder: Path) -> dict[str, int]:
    """{file name: bytes} of a DCP folder, for the manifest."""
    return {p.name: p.stat().st_size for p in sorted(folder.iterdir()) if p.is_file()}


@contextlib.contextmanager
def _single_process_quiet():
    """DCP warns at every call in a process without torch.distributed that it assumes one
    process, which is what we ask for with no_dist."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        yield


def _structure(obj: Any) -> Any:
    """New containers around the same tensor leaves (an optimizer's param_groups dicts change
    after this step; the copy taken now is what gets saved)."""
    if isinstance(obj, dict):
        return {k: _structure(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_structure(v) for v in obj)
    return obj


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


class WriteFailed(OSError):
    """The writer process's error, rebuilt in the training process (errno, text, file)."""


class AsyncDCPWriter:
    """One save in flight at a time. `submit` queues the copy of the state into the shared
    staging file on a side stream and returns; a thread of this process waits for the copy,
    hands the folder to the writer process (framework/trainer/checkpoint_proc.py) and waits for
    its answer, then runs `finalize` (rank 0: rename, small files, manifest, latest). The
    training thread calls `wait_staged` before changing weights and `wait` before the next save
    or at the end."""

    def __init__(self, env: D.DistEnv) -> None:
        self.env = env
        self.proc: WriterProcess | None = None
        self.slab: S.Slab | None = None
        self.cuda = torch.cuda.is_available()
        self.stream = torch.cuda.Stream() if self.cuda else None
        self.copied: torch.cuda.Event | None = None
        self.thread: threading.Thread | None = None
        self.staged = threading.Event()
        self.staged.set()
        self.error: str | None = None
        self.stage_seconds = self.write_seconds = 0.0
        # Seconds the last `submit` waited for the save before it to be written: the staging
        # file is one, so a save that comes before the previous one left the disk waits.
        self.waited_seconds = self._blocked = 0.0
        self.said_waited = False

    @property
    def failed(self) -> bool:
        return self.error is not None

    def _start(self) -> None:
        """Collective: start this rank's writer process (the writers of all ranks meet in a
        gloo group of their own, at a port rank 0 picks)."""
        if self.proc is not None:
            return
        rank, world, addr, port = 0, 1, "", 0
        if D.is_initialized() and self.env.world_size > 1:
            rank, world = self.env.rank, self.env.world_size
            addr = os.environ.get("MASTER_ADDR", "127.0.0.1")
            port = D.broadcast_object(_free_port() if self.env.is_main else None)
        self.proc = WriterProcess(rank, world, addr, port)

    def _slab(self, layout: dict) -> S.Slab:
        if self.slab is None or self.slab.layout != layout:
            if self.slab is not None:
                self.slab.close()
            self.slab = S.Slab(layout, pin=self.cuda)
        return self.slab

    def prepare(self, state: dict) -> None:
        """Collective: start the writer process, and allocate (and pin) the staging file for
        saves of `state` in the background, long before the first save needs it."""
        self.wait()
        self._start()
        layout = S.layout_of(_structure(state))
        self.thread = threading.Thread(target=self._slab, args=(layout,), daemon=True)
        self.thread.start()

    def submit(
        self,
        state: dict,
        tmp_dir: Path,
        finalize: Callable[[dict], None] | None,
        describe: Callable[[BaseException], str],
    ) -> None:
        """Collective. Start saving `state` (the local state dict) into `tmp_dir`; `finalize`
        (rank 0) runs after the write with the manifest records of the files the writers wrote;
        `describe(err)` turns a failure into the one-line message."""
        self.wait()
        self.waited_seconds, self._blocked = self._blocked, 0.0
        if self.waited_seconds > 0.5 and self.env.is_main and not self.said_waited:
            self.said_waited = True  # once per run; every save's wait is in metrics.jsonl
            gb = self.slab.size / 1e9 if self.slab is not None else 0.0
            log.warning(
                "this checkpoint save waited %.1f s for the previous one to reach the disk "
                "(%.1f GB written in %.1f s): saves come faster than the disk takes them; "
                "raise checkpoint.save_iter so saves are further apart than that.",
                self.waited_seconds,
                gb,
                self.write_seconds,
            )
        self._start()
        state = _structure(state)
        slab = self._slab(S.layout_of(state))
        start = time.perf_counter()
        self.staged.clear()
        if self.stream is not None:
            # Queued behind everything so far (the last optimizer step); the training thread
            # only issues the copies, ~10 us each, and never waits for them.
            self.stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(self.stream):
                desc = S.stage(state, slab)
                self.copied = torch.cuda.Event()
                self.copied.record()
        else:
            desc = S.stage(state, slab)
        request = {
            "pid": os.getpid(),
            "fd": slab.fd,
            "size": slab.size,
            "serial": id(slab),
            "dir": str(tmp_dir),
            "state": desc,
            "threads": 2,
        }
        # `state` stays referenced by the thread until the copy is done: nothing it holds can
        # be freed and reused by the training stream while the side stream reads it.
        self.thread = threading.Thread(
            target=self._run,
            args=(state, request, start, tmp_dir, finalize, describe),
            name="checkpoint-writer",
            daemon=True,
        )
        self.thread.start()

    def _run(self, state, request, start, tmp_dir, finalize, describe) -> None:
        try:
            try:
                if self.copied is not None:
                    self.copied.synchronize()
            finally:
                del state
                self.stage_seconds = time.perf_counter() - start
                self.staged.set()  # on failure too: training must not wait forever
            start = time.perf_counter()
            reply = self.proc.write(request)
            if "error" in reply:
                code, strerror, filename, text = reply["error"]
                raise WriteFailed(code, strerror or text, filename) if code else WriteFailed(text)
            if finalize is not None:
                finalize(reply["records"])
            self.write_seconds = time.perf_counter() - start
        except BaseException as err:  # noqa: BLE001  (reported by the training thread)
            self.error = describe(err)
            log.debug("checkpoint write failed", exc_info=True)
            if self.env.is_main:
                shutil.rmtree(tmp_dir, ignore_errors=True)

    def wait_staged(self) -> None:
        """Before the weights change: on CUDA the current stream waits for the copy on the GPU
        (the host does not block); on the CPU, until the copy is taken."""
        if self.copied is not None:
            torch.cuda.current_stream().wait_event(self.copied)
        else:
            self.staged.wait()

    def wait(self) -> None:
        """Block until the save in flight is written (or failed; see `error`)."""
        if self.thread is not None:
            # A write in flight (not the staging file's allocation that `prepare` started).
            start = time.perf_counter()
            busy = self.thread.is_alive() and self.thread.name == "checkpoint-writer"
            self.thread.join()
            self.thread = None
            if busy:  # counted into the next save's `waited_seconds`
                self._blocked += time.perf_counter() - start

    def close(self) -> None:
        """Wait for the save in flight, then stop the writer process and free the staging file
        (a later save starts both again)."""
        self.wait()
        if self.proc is not None:
            self.proc.close()
            self.proc = None
        if self.slab is not None:
            self.slab.close()
            self.slab = None


def dcp_load(path: Path, state: dict, group: Any = None) -> None:
    """Fill `state` (tensors shaped like this process's shards) in place from a DCP folder,
    whatever the number of processes that wrote it."""
    from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner

    try:
        with _single_process_quiet():
            dcp.load(
                state,
                storage_reader=FileSystemReader(str(path)),
                planner=DefaultLoadPlanner(allow_partial_load=True),
                process_group=group,
                no_dist=not D.is_initialized(),
            )
    except CheckpointException as err:  # a BaseException: shapes that do not fit, a bad file
        raise ValueError(f"{path}: {_first_failure(err)}") from None


def stored_keys(path: Path) -> set[str]:
    """The flattened keys a DCP folder holds (`model.net.x`, `optim.state.net.x.exp_avg`, ...)."""
    return set(FileSystemReader(str(path)).read_metadata().state_dict_metadata)


def read_model_state(path: Path) -> dict[str, Tensor]:
    """The model part of a DCP folder as one full CPU state dict (`net.*`, `net_ema.*`, ...), in
    one process, whatever the number of processes that wrote it. EMA twins of keys that were not
    averaged (buffers) repeat the regular value, as in a format=pt model file."""
    reader = FileSystemReader(str(path))
    meta = reader.read_metadata().state_dict_metadata
    state = {
        key: torch.empty(m.size, dtype=m.properties.dtype)
        for key, m in meta.items()
        if key.startswith("model.") and isinstance(m, TensorStorageMetadata)
    }
    if not state:
        raise ValueError(f"{path} holds no model weights; pass a checkpoints/optim/iter_N folder.")
    try:
        with _single_process_quiet():
            dcp.load(state, storage_reader=reader, no_dist=True)
    except CheckpointException as err:
        raise ValueError(f"{path}: {_first_failure(err)}") from None
    from framework.trainer.ema import ema_key, is_ema_key

    sd = {k.removeprefix("model."): v for k, v in state.items()}
    if any(is_ema_key(k) for k in sd):
        for k, v in list(sd.items()):
            if not is_ema_key(k):
                sd.setdefault(ema_key(k), v)
    return sd


def _first_failure(err: BaseException) -> str:
    failures = getattr(err, "failures", None) or {}
    inner = next(iter(failures.values()), err)
    inner = inner[0] if isinstance(inner, tuple) else inner
    return " ".join(str(inner).split())[:300] or type(inner).__name__


def clear_tmp_dirs(folder: Path) -> None:
    for tmp in folder.glob(f"*{TMP_SUFFIX}"):
        shutil.rmtree(tmp, ignore_errors=True)


def publish(tmp_dir: Path, final: Path) -> Path:
    """Rename the written DCP folder into place (replacing a leftover of an earlier run)."""
    replace_dir(tmp_dir, final)
    fsync_dir(final.parent)
    return final
