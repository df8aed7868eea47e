"""The process that writes format=dcp saves (one per training process).

Why a process: measured on one H100 (issue #29), a 2B save written by a thread of the training
process made the 4-9 steps after it take 3.6-7.4 s instead of 2.25 s. DCP's writer serializes
and writes tens of GB in Python threads that share the training thread's interpreter lock; the
compiled step, which launches its kernels from Python, then waits for the lock. A process of its
own shares nothing with training but the page cache and the disk.

    python -m framework.trainer.checkpoint_proc     (started by `WriterProcess`, never by hand)

Requests and replies are pickled over the child's stdin and a private copy of its stdout. A
request names the shared staging file (framework/trainer/checkpoint_stage.py) by the parent's
pid and fd, the folder, and the described state dict; the reply is `{"records": {file name:
manifest record}}` for the files every rank wrote, hashed as they were written (no second pass
over tens of GB), or `{"error": (errno, strerror, filename, text)}`. With several training
processes, the writers run DCP's collectives over a gloo group of their own, from a TCP store
the rank-0 writer opens, and gather their records over it.
The child dies with its parent (PR_SET_PDEATHSIG), so a killed run leaves no writer behind.
"""

from __future__ import annotations

import ctypes
import os
import pickle
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


class WriterProcess:
    """The parent's handle: start, `write` (blocks until the child answers), `close`."""

    # Tests replace it to run the child under a fault injector (tests/faulty_writer.py).
    command = [sys.executable, "-m", "framework.trainer.checkpoint_proc"]

    def __init__(self, rank: int = 0, world: int = 1, addr: str = "", port: int = 0) -> None:
        env = {**os.environ, "WORLDTUNE_WRITER_PARENT": str(os.getpid())}
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
        env.update(
            WORLDTUNE_WRITER_RANK=str(rank),
            WORLDTUNE_WRITER_WORLD=str(world),
            WORLDTUNE_WRITER_ADDR=addr,
            WORLDTUNE_WRITER_PORT=str(port),
        )
        # The writer never touches the GPU: hide it, so it holds no CUDA context.
        env["CUDA_VISIBLE_DEVICES"] = ""
        self.proc = subprocess.Popen(
            self.command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, cwd=ROOT
        )
        self.lock = threading.Lock()

    def write(self, request: dict) -> dict:
        with self.lock:
            try:
                pickle.dump(request, self.proc.stdin)
                self.proc.stdin.flush()
                return pickle.load(self.proc.stdout)
            except (EOFError, BrokenPipeError, pickle.UnpicklingError) as err:
                return self._died(err)

    def _died(self, err: BaseException) -> dict:
        """The reply for a child that answered nothing: how it ended, and `signal` when a
        signal ended it (SIGKILL is what the kernel's out-of-memory killer sends)."""
        try:
            code = self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # the pipe broke, the child still runs
            code = None
        if code is None or code >= 0:
            text = f"the checkpoint writer process exited ({code}): {err}"
            return {"error": (0, "", None, text)}
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        text = f"the checkpoint writer process was killed by {name}"
        if -code == signal.SIGKILL:
            text += (
                " (what the kernel's out-of-memory killer sends when host memory runs out; "
                "`dmesg` says whether it did)"
            )
        return {"error": (0, "", None, text), "signal": -code}

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()  # EOF: the child finishes and exits
                self.proc.wait(timeout=60)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


def _die_with_parent(parent: int) -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # the parent died before the line above
        os._exit(1)


def _group(rank: int, world: int, addr: str, port: int) -> Any:
    if world <= 1:
        return None
    import torch.distributed as dist

    store = dist.TCPStore(addr, port, world, is_master=rank == 0)
    dist.init_process_group("gloo", store=store, rank=rank, world_size=world)
    return dist.group.WORLD


class _HashingStream:
    """DCP's output file, hashed and counted as DCP writes it (tell/fileno pass through)."""

    def __init__(self, stream: Any) -> None:
        from framework.manifest import HashingFile

        self.stream, self.hashing = stream, HashingFile(stream)

    def write(self, data: Any) -> int:
        return self.hashing.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


def _hashing_fs(records: dict) -> Any:
    import contextlib

    from torch.distributed.checkpoint.filesystem import FileSystem

    class HashingFS(FileSystem):
        @contextlib.contextmanager
        def create_stream(self, path, mode):
            with super().create_stream(path, mode) as stream:
                if "w" not in mode:
                    yield stream
                    return
                hashed = _HashingStream(stream)
                yield hashed
            records[Path(path).name] = hashed.hashing.record()

    return HashingFS()


def _write(request: dict, group: Any, files: dict) -> dict:
    import warnings

    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import FileSystemWriter

    from framework.trainer.checkpoint_stage import rebuild

    source = (request["pid"], request["fd"], request["size"], request["serial"])
    for gone in [k for k in files if k[3] not in request["live"]]:
        del files[gone]  # a staging file the parent closed (a new layout, the end of a run)
    if source not in files:  # a staging file not seen yet: map it once
        import mmap

        import torch

        with open(f"/proc/{source[0]}/fd/{source[1]}", "r+b") as f:
            mapped = mmap.mmap(f.fileno(), source[2])
        files[source] = torch.frombuffer(mapped, dtype=torch.uint8)
    state = rebuild(request["state"], files[source])
    records: dict = {}
    writer = FileSystemWriter(request["dir"], thread_count=request["threads"])
    writer.fs = _hashing_fs(records)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        dcp.save(state, storage_writer=writer, process_group=group, no_dist=group is None)
    # Temporary names (DCP's .metadata.tmp, renamed after) are recorded by the caller.
    records = {k: v for k, v in records.items() if not k.endswith(".tmp")}
    if group is not None:
        every: list = [None] * dist.get_world_size(group)
        dist.all_gather_object(every, records, group=group)
        records = {k: v for r in every for k, v in r.items()}
    return {"records": records}


def _failure(err: BaseException) -> tuple:
    failures = getattr(err, "failures", None)  # DCP's CheckpointException: rank -> error
    if failures:
        inner = next(iter(failures.values()))
        err = inner[0] if isinstance(inner, tuple) else inner
    text = " ".join(str(err).split())[:300] or type(err).__name__
    return (getattr(err, "errno", None) or 0, getattr(err, "strerror", None) or "",
            getattr(err, "filename", None), text)  # fmt: skip


def main() -> int:
    parent = int(os.environ["WORLDTUNE_WRITER_PARENT"])
    _die_with_parent(parent)
    # Replies go over a private copy of stdout; anything printed goes to stderr.
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    env = os.environ
    group = _group(
        int(env["WORLDTUNE_WRITER_RANK"]),
        int(env["WORLDTUNE_WRITER_WORLD"]),
        env["WORLDTUNE_WRITER_ADDR"],
        int(env["WORLDTUNE_WRITER_PORT"]),
    )
    files: dict = {}
    stdin = sys.stdin.buffer
    while True:
        try:
            request = pickle.load(stdin)
        except EOFError:
            return 0
        try:
            reply = _write(request, group, files)
        except BaseException as err:  # noqa: BLE001  (the parent reports it in one line)
            reply = {"error": _failure(err)}
        pickle.dump(reply, out)
        out.flush()


if __name__ == "__main__":
    raise SystemExit(main())
