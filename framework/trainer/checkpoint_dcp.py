"""Sharded, asynchronous checkpoints through torch.distributed.checkpoint (`checkpoint.format=dcp`).

    checkpoints/optim/iter_{N:09d}/      DCP folder (`.metadata` + one file per rank): each rank's
                                         shards of the model (`model.net.*`, `model.net_ema.*`,
                                         `model.logvar.*`) and of the optimizer (`optim.*`)
                model/iter_{N:09d}.pt    the whole model in the official layout, for the run's
                                         last step (any other: python -m framework.export)
                scheduler/, trainer/, manifest/, latest_checkpoint.txt   as with format=pt

No rank ever holds more than its own shards: nothing is gathered. A save runs in three parts:
the training thread collects the local state dict (no copies, no communication) and queues its
copy into a shared, pinned CPU staging file (checkpoint_stage.py; `checkpoint.staging_buffers`
of them, allocated once) on a side CUDA stream; a writer process of this rank
(checkpoint_proc.py) has DCP write it into `optim/iter_N.tmpdir/`, over a gloo group of the
writers' own; rank 0 then renames the folder to `optim/iter_N/` and writes the small parts, the
manifest and `latest_checkpoint.txt` last, exactly in the order of format=pt. Saves reach the
disk one at a time, in order; with two staging files a save is copied while the one before it is
still being written, and waits only when both hold saves not yet on disk. The training stream
waits for the copy (on the GPU, the host does not) only before it next changes what is being
copied (`wait_staged`: the optimizer step, an EMA swap); no GPU memory is allocated for a save.
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
    """The writer process's error, rebuilt in the training process (errno, text, file), and
    the signal that ended the writer, if one did."""

    signal: int | None = None


class _Save:
    """One save in flight: the staging file it was copied into and its thread (copy, then
    write, then finalize)."""

    def __init__(self, slab: S.Slab) -> None:
        self.slab = slab
        self.copied: torch.cuda.Event | None = None
        self.staged = threading.Event()
        self.thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self.thread is not None and self.thread.is_alive()


class AsyncDCPWriter:
    """Up to `buffers` saves in flight, one staging file each (`checkpoint.staging_buffers`).
    `submit` queues the copy of the state into a free staging file on a side stream and
    returns; a thread of this process waits for the copy, then for the save before it to be
    written (saves reach the disk in order, so latest_checkpoint.txt only moves forward), hands
    the folder to the writer process (framework/trainer/checkpoint_proc.py), waits for its
    answer, then runs `finalize` (rank 0: rename, small files, manifest, latest). A save waits
    only when every staging file still holds a save not yet written. The training thread calls
    `wait_staged` before changing weights and `wait` at the end."""

    def __init__(self, env: D.DistEnv, buffers: int = 1, threads: int = 2) -> None:
        self.env = env
        self.buffers = max(1, int(buffers))
        self.threads = max(1, int(threads))  # files (and writer threads) per process and save
        self.proc: WriterProcess | None = None
        self.slabs: list[S.Slab] = []
        self.saves: list[_Save] = []  # in submission order; finished ones are dropped
        self.alloc: threading.Thread | None = None
        self.cuda = torch.cuda.is_available()
        self.stream = torch.cuda.Stream() if self.cuda else None
        self.error: str | None = None
        self.stage_seconds = self.write_seconds = 0.0
        # (seconds, bytes) of every write finished since the trainer last asked (metrics).
        self.written: list[tuple[float, int]] = []
        self.written_lock = threading.Lock()  # appended by writer threads, taken by training
        # Seconds the last `submit` (and a space check before it) waited for earlier saves to
        # be written: with every staging file holding a save not yet on disk, a new one waits.
        self.waited_seconds = self._blocked = 0.0
        self.said_waited = False

    @property
    def failed(self) -> bool:
        return self.error is not None

    @property
    def pending(self) -> int:
        """Saves submitted and not yet written (or failed)."""
        return sum(s.running for s in self.saves)

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

    def _allocate(self, layout: dict) -> None:
        while len(self.slabs) < self.buffers:
            self.slabs.append(S.Slab(layout, pin=self.cuda))

    def _join_alloc(self) -> None:
        """Wait for the staging files `prepare` is pinning (a save that comes before they are
        ready counts the wait)."""
        if self.alloc is not None:
            start = time.perf_counter()
            self.alloc.join()
            self.alloc = None
            self._blocked += time.perf_counter() - start

    def _free_slab(self, layout: dict) -> S.Slab:
        """A staging file no save in flight holds, of `layout`; waits for the oldest save when
        every one is taken, or for the next file `prepare` is still pinning (the waits count
        into the next `waited_seconds`)."""
        self.saves = [s for s in self.saves if s.running]
        if len(self.saves) >= self.buffers:
            start = time.perf_counter()
            self.saves.pop(0).thread.join()
            self._blocked += time.perf_counter() - start
        free = self._unheld()
        if free is None or free.layout != layout:
            # Every file `prepare` pins is then ready, and the list is this thread's alone.
            self._join_alloc()
            free = self._unheld()
        if free is not None and free.layout != layout:
            free.close()
            self.slabs.remove(free)
            free = None
        if free is None:
            free = S.Slab(layout, pin=self.cuda)
            self.slabs.append(free)
        return free

    def _unheld(self) -> S.Slab | None:
        """A staging file that is ready (pinned: `_allocate` adds each when done) and that no
        save in flight holds."""
        held = {id(s.slab) for s in self.saves}
        return next((x for x in list(self.slabs) if id(x) not in held), None)

    def prepare(self, state: dict) -> None:
        """Collective: start the writer process, and allocate (and pin) the staging files for
        saves of `state` in the background, long before the first save needs them. Fewer
        files than asked when they would take more than half of the host's available memory."""
        self.wait()
        self._start()
        layout = S.layout_of(_structure(state))
        self.buffers = self._affordable(S.nbytes(layout))
        self.alloc = threading.Thread(target=self._allocate, args=(layout,), daemon=True)
        self.alloc.start()

    def _affordable(self, nbytes: int) -> int:
        local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        avail = S.available_memory()
        if avail and nbytes * local > avail and self.env.is_main:
            # One file is needed whatever its size: say why the run may die at pinning time.
            log.warning(
                "one checkpoint staging file per process pins %.1f GB of host memory on this "
                "node and only %.1f GB is available to this job (MemAvailable or its cgroup's "
                "limit): the kernel may kill the run for memory; give the job more host memory "
                "(SLURM --mem) or spread it over more nodes.",
                nbytes * local / 1e9,
                avail / 1e9,
            )
        fit = int(avail // 2 // max(1, nbytes * local)) if avail else self.buffers
        if fit >= self.buffers or self.buffers == 1:  # one file is needed whatever its size
            return self.buffers
        if self.env.is_main:
            log.warning(
                "checkpoint.staging_buffers=%d would pin %.1f GB of host memory on this node "
                "(%.1f GB available): using %d; a save then waits while %d earlier ones are "
                "still being written.",
                self.buffers,
                self.buffers * nbytes * local / 1e9,
                avail / 1e9,
                max(1, fit),
                max(1, fit),
            )
        return max(1, fit)

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
        self._start()
        state = _structure(state)
        slab = self._free_slab(S.layout_of(state))
        self.waited_seconds, self._blocked = self._blocked, 0.0
        self._say_waited(slab)
        save = _Save(slab)
        start = time.perf_counter()
        if self.stream is not None:
            # Queued behind everything so far (the last optimizer step); the training thread
            # only issues the copies, ~10 us each, and never waits for them.
            self.stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(self.stream):
                desc = S.stage(state, slab)
                save.copied = torch.cuda.Event()
                save.copied.record()
        else:
            desc = S.stage(state, slab)
        request = {
            "pid": os.getpid(),
            "fd": slab.fd,
            "size": slab.size,
            "serial": slab.serial,
            "live": [x.serial for x in self.slabs],
            "dir": str(tmp_dir),
            "state": desc,
            "threads": self.threads,
        }
        before = self.saves[-1] if self.saves else None
        # `state` stays referenced by the thread until the copy is done: nothing it holds can
        # be freed and reused by the training stream while the side stream reads it.
        save.thread = threading.Thread(
            target=self._run,
            args=(save, before, state, request, start, tmp_dir, finalize, describe),
            name="checkpoint-writer",
            daemon=True,
        )
        self.saves.append(save)
        save.thread.start()

    def _say_waited(self, slab: S.Slab) -> None:
        if self.waited_seconds <= 0.5 or not self.env.is_main or self.said_waited:
            return
        self.said_waited = True  # once per run; every save's wait is in metrics.jsonl
        log.warning(
            "this checkpoint save waited %.1f s for earlier ones to reach the disk (%.1f GB "
            "each, the last written in %.1f s; %d staging file(s)): saves come faster than the "
            "disk takes them; raise checkpoint.save_iter so saves are further apart than that.",
            self.waited_seconds,
            slab.size / 1e9,
            self.write_seconds,
            self.buffers,
        )

    def _run(self, save, before, state, request, start, tmp_dir, finalize, describe) -> None:
        try:
            try:
                if save.copied is not None:
                    save.copied.synchronize()
            finally:
                del state
                self.stage_seconds = time.perf_counter() - start
                save.staged.set()  # on failure too: training must not wait forever
            if before is not None:  # in order: the disk takes one save at a time
                before.thread.join()
                before = None
            if self.error is not None:  # an earlier save failed: the run stops, skip this one
                if self.env.is_main:
                    shutil.rmtree(tmp_dir, ignore_errors=True)
                return
            start = time.perf_counter()
            reply = self.proc.write(request)
            if "error" in reply:
                code, strerror, filename, text = reply["error"]
                failed = WriteFailed(*((code, strerror or text, filename) if code else (text,)))
                failed.signal = reply.get("signal")
                raise failed
            if finalize is not None:
                finalize(reply["records"])
            self.write_seconds = time.perf_counter() - start
            with self.written_lock:
                self.written.append((self.write_seconds, save.slab.size))
        except BaseException as err:  # noqa: BLE001  (reported by the training thread)
            if self.error is None:
                self.error = describe(err)
            log.debug("checkpoint write failed", exc_info=True)
            if self.env.is_main:
                shutil.rmtree(tmp_dir, ignore_errors=True)

    def wait_staged(self) -> None:
        """Before the weights change: on CUDA the current stream waits for the last copy on the
        GPU (the host does not block); on the CPU, until the copy is taken."""
        if not self.saves:
            return
        last = self.saves[-1]
        if last.copied is not None:
            torch.cuda.current_stream().wait_event(last.copied)
        else:
            last.staged.wait()

    def wait(self) -> None:
        """Block until every save in flight is written (or failed; see `error`)."""
        self._join_alloc()
        start = time.perf_counter()
        busy = self.pending > 0
        for save in self.saves:
            save.thread.join()
        self.saves = []
        if busy:  # counted into the next save's `waited_seconds`
            self._blocked += time.perf_counter() - start

    def pop_written(self) -> tuple[float, int]:
        """(seconds, bytes) of the writes finished since the last call."""
        with self.written_lock:
            done, self.written = self.written, []
        return sum(s for s, _ in done), sum(b for _, b in done)

    def close(self) -> None:
        """Wait for the saves in flight, then stop the writer process and free the staging
        files (a later save starts both again)."""
        self.wait()
        if self.proc is not None:
            self.proc.close()
            self.proc = None
        for slab in self.slabs:
            slab.close()
        self.slabs = []


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


def clear_tmp_dirs(folder: Path, upto: str | None = None) -> None:
    """Remove the folders of saves a kill cut off; with `upto` (an iteration name) only those
    of that iteration and earlier: a later one may be a save in flight, whose folder the
    writers of other ranks can already have made."""
    last = upto.removesuffix(".pt") if upto else None
    for tmp in folder.glob(f"*{TMP_SUFFIX}"):
        if last is None or tmp.name.removesuffix(TMP_SUFFIX) <= last:
            shutil.rmtree(tmp, ignore_errors=True)


def publish(tmp_dir: Path, final: Path) -> Path:
    """Rename the written DCP folder into place (replacing a leftover of an earlier run)."""
    replace_dir(tmp_dir, final)
    fsync_dir(final.parent)
    return final
