"""Sharded, asynchronous checkpoints through torch.distributed.checkpoint (`checkpoint.format=dcp`).

    checkpoints/optim/iter_{N:09d}/      DCP folder (`.metadata` + one file per rank): each rank's
                                         shards of the model (`model.net.*`, `model.net_ema.*`,
                                         `model.logvar.*`) and of the optimizer (`optim.*`)
                model/iter_{N:09d}.pt    the whole model in the official layout, for the run's
                                         last step (any other: python -m framework.export)
                scheduler/, trainer/, manifest/, latest_checkpoint.txt   as with format=pt

No rank ever holds more than its own shards: nothing is gathered. A save runs in three parts:
the training thread collects the local state dict (no copies, no communication); a background
thread copies it to CPU memory (pinned and reused on CUDA, on a side stream) and then DCP writes
it into `optim/iter_N.tmpdir/` over a gloo group of its own (so it never shares the NCCL
communicator with training); rank 0 then renames the folder to `optim/iter_N/` and writes the
small parts, the manifest and `latest_checkpoint.txt` last, exactly in the order of format=pt. The
training thread waits only for the CPU copy, and only before it next changes what is being copied
(`wait_staged`: the optimizer step, an EMA swap).
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import threading
import time
import warnings
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import Tensor
from torch.distributed.checkpoint import FileSystemReader, FileSystemWriter
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.metadata import TensorStorageMetadata

from framework.io import fsync_dir, replace_dir
from framework.trainer import dist as D

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


def _dtensor():
    from torch.distributed.tensor import DTensor

    return DTensor


def _structure(obj: Any) -> Any:
    """New containers around the same tensor leaves (an optimizer's param_groups dicts change
    after this step; the copy taken now is what gets saved)."""
    if isinstance(obj, dict):
        return {k: _structure(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_structure(v) for v in obj)
    return obj


def _pinned(t: Tensor) -> Tensor:
    """A page-locked CPU tensor of exactly `t`'s size (the caching host allocator behind
    `pin_memory=True` rounds each block up to a power of two: up to 2x the RAM)."""
    buf = torch.empty(t.shape, dtype=t.dtype)
    if buf.numel() == 0:
        return buf
    try:
        err = torch.cuda.cudart().cudaHostRegister(buf.data_ptr(), buf.nbytes, 0)
    except Exception:  # noqa: BLE001  (no such binding: fall back to the caching allocator)
        err = 1
    if int(err) != 0:
        return torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
    ptr = buf.data_ptr()
    weakref.finalize(buf, torch.cuda.cudart().cudaHostUnregister, ptr)
    return buf


class _Stager:
    """Copies a state dict's tensors into CPU buffers kept from one save to the next (pinned on
    CUDA: allocating and pinning tens of GB costs seconds, so it is paid once)."""

    def __init__(self) -> None:
        self.buffers: dict[str, Tensor] = {}
        self.cuda = torch.cuda.is_available()

    def _buffer(self, key: str, t: Tensor) -> Tensor:
        buf = self.buffers.get(key)
        if buf is None or buf.shape != t.shape or buf.dtype != t.dtype:
            buf = _pinned(t) if self.cuda and t.is_cuda else torch.empty(t.shape, dtype=t.dtype)
            self.buffers[key] = buf
        return buf

    def allocate(self, obj: Any, key: str = "") -> None:
        """Create the buffers `copy` will use for a state dict shaped like `obj`."""
        if isinstance(obj, _dtensor()):
            self.allocate(obj.to_local(), key)
        elif isinstance(obj, Tensor):
            self._buffer(key, obj)
        elif isinstance(obj, dict):
            for k, v in obj.items():
                self.allocate(v, f"{key}/{k}")
        elif isinstance(obj, (list, tuple)):
            for i, v in enumerate(obj):
                self.allocate(v, f"{key}/{i}")

    def copy(self, obj: Any, key: str = "") -> Any:
        DTensor = _dtensor()
        if isinstance(obj, DTensor):
            local = self.copy(obj.to_local(), key)
            return DTensor.from_local(
                local,
                obj.device_mesh,
                obj.placements,
                run_check=False,
                shape=obj.shape,
                stride=obj.stride(),
            )
        if isinstance(obj, Tensor):
            buf = self._buffer(key, obj)
            buf.copy_(obj.detach(), non_blocking=obj.is_cuda)
            return buf
        if isinstance(obj, dict):
            return {k: self.copy(v, f"{key}/{k}") for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return type(obj)(self.copy(v, f"{key}/{i}") for i, v in enumerate(obj))
        return obj


class AsyncDCPWriter:
    """One save in flight at a time: stage to CPU and write in a background thread; the
    training thread calls `wait_staged` before changing weights and `wait` before the next
    save or at the end. `finalize(step_dir)` runs on rank 0 after DCP has written everything."""

    def __init__(self, env: D.DistEnv) -> None:
        self.env = env
        # Every rank creates the group at the same point (the checkpointer is built in the
        # trainer's constructor); DCP's collectives then run over gloo in the writer thread.
        self.group = dist.new_group(backend="gloo") if D.is_initialized() else None
        self.stager = _Stager()
        self.stream = torch.cuda.Stream() if torch.cuda.is_available() else None
        self.thread: threading.Thread | None = None
        self.staged = threading.Event()
        self.staged.set()
        self.error: str | None = None
        self.stage_seconds = self.write_seconds = 0.0

    @property
    def failed(self) -> bool:
        return self.error is not None

    def prepare(self, state: dict) -> None:
        """Allocate (and pin) the CPU buffers for saves of `state` in the background, long
        before the first save needs them."""
        self.wait()
        self.thread = threading.Thread(
            target=self.stager.allocate, args=(_structure(state),), daemon=True
        )
        self.thread.start()

    def submit(
        self,
        state: dict,
        tmp_dir: Path,
        finalize: Callable[[], None] | None,
        describe: Callable[[BaseException], str],
    ) -> None:
        """Start saving `state` (the local state dict) into `tmp_dir`; `finalize` (rank 0) runs
        after the write; `describe(err)` turns a failure into the one-line message."""
        self.wait()
        state = _structure(state)
        if self.stream is not None:
            # The copy stream starts after everything queued so far (the last optimizer step).
            self.stream.wait_stream(torch.cuda.current_stream())
        self.staged.clear()
        self.thread = threading.Thread(
            target=self._run,
            args=(state, tmp_dir, finalize, describe),
            name="checkpoint-writer",
            daemon=True,
        )
        self.thread.start()

    def _run(self, state, tmp_dir, finalize, describe) -> None:
        try:
            start = time.perf_counter()
            try:
                if self.stream is not None:
                    with torch.cuda.stream(self.stream):
                        staged = self.stager.copy(state)
                    self.stream.synchronize()
                else:
                    staged = self.stager.copy(state)
            finally:
                self.stage_seconds = time.perf_counter() - start
                self.staged.set()  # on failure too: training must not wait forever
            start = time.perf_counter()
            writer = FileSystemWriter(str(tmp_dir), thread_count=2)
            with _single_process_quiet():
                dcp.save(
                    staged,
                    storage_writer=writer,
                    process_group=self.group,
                    no_dist=not D.is_initialized(),
                )
            if finalize is not None:
                finalize()
            self.write_seconds = time.perf_counter() - start
        except BaseException as err:  # noqa: BLE001  (reported by the training thread)
            self.error = describe(err)
            log.debug("checkpoint write failed", exc_info=True)
            if self.env.is_main:
                shutil.rmtree(tmp_dir, ignore_errors=True)

    def wait_staged(self) -> None:
        """Block until the CPU copy of the save in flight is taken (no-op when none is)."""
        self.staged.wait()

    def wait(self) -> None:
        """Block until the save in flight is written (or failed; see `error`)."""
        if self.thread is not None:
            self.thread.join()
            self.thread = None


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
