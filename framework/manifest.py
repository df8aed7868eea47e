"""What a checkpoint save wrote, and whether the bytes on disk are still those bytes.

`<checkpoints>/manifest/iter_{N:09d}.json` (framework/jobs.py) is written after every part of
iteration N and before `latest_checkpoint.txt`. Version 2 records each file's size and content
hash:

    {"version": 2, "hash": "xxh3_64",
     "parts": {"model":     {"bytes": 1234, "xxh3_64": "89abcdef01234567"},
               "optim":     {"bytes": ..., "xxh3_64": ...},                 format=pt: one file
               "optim":     {"files": {".metadata":    {"bytes": ..., "xxh3_64": ...},
                                       "__0_0.distcp": {"bytes": ..., "xxh3_64": ...}}},
                                                                           format=dcp: a folder
               "scheduler": {...}, "trainer": {...}}}

A file record without a hash (a writer that could not hash it) is checked by size only. Version 1
manifests (before hashes) are `{"model": 1234, "optim": {".metadata": 56, ...}, ...}`: sizes only;
`read` turns both into `{part: Record | {file name: Record}}`.

Hashing costs no second pass where the writer hands us its bytes: `torch_save` wraps the file
object given to torch.save and hashes each chunk as it is written (`HashingFile`); the format=dcp
writer process wraps DCP's file streams the same way (framework/trainer/checkpoint_proc.py).
`record_file(path)` hashes a file already written (one pass; DCP's small renamed `.metadata`).
xxh3_64 (xxhash, already a dependency of wandb): 0.23 s/GB of CPU against 0.73 for zlib.crc32
and 1.9 for sha256 (docs/reliability.md has the measurement). It finds damage, not
forgery: whoever can write the checkpoint can write its manifest.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

import torch
import xxhash

from framework.io import atomic_write, atomic_write_text

VERSION = 2
HASH = "xxh3_64"
_CHUNK = 8 << 20

Record = dict  # {"bytes": int, HASH: str (optional)}


class ManifestError(ValueError):
    """A manifest that is not valid JSON or not in either format."""


class HashingFile:
    """A binary file wrapper that hashes and counts what is written through it, and keeps the
    OSError a write raised (torch.save turns it into a RuntimeError without the errno)."""

    def __init__(self, file: IO[bytes]) -> None:
        self.file, self.size, self.error = file, 0, None
        self._hash = xxhash.xxh3_64()

    def write(self, data: Any) -> int:
        try:
            written = self.file.write(data)
        except OSError as err:
            self.error = err
            raise
        view = memoryview(data).cast("B")
        view = view[:written] if written is not None else view
        self._hash.update(view)
        self.size += len(view)
        return written

    @property
    def name(self) -> str:
        return getattr(self.file, "name", "")

    def flush(self) -> None:
        self.file.flush()

    def record(self) -> Record:
        return {"bytes": self.size, HASH: self._hash.hexdigest()}


def torch_save(obj: Any, path: str | Path) -> Record:
    """torch.save `obj` atomically to `path` (framework/io.py), hashing the bytes as they are
    written; returns the file's record. A failed write raises the OSError underneath (a full
    disk: errno ENOSPC or EFBIG, with the file name), not torch's RuntimeError."""
    path = Path(path)
    record: Record = {}

    def write(f: IO[bytes]) -> None:
        hashing = HashingFile(f)
        try:
            torch.save(obj, hashing)
            f.flush()  # here, so a full disk at the last buffer is named too
        except (RuntimeError, OSError) as err:
            err = hashing.error or err
            if not isinstance(err, OSError):
                raise
            raise OSError(err.errno, err.strerror or str(err), str(path)) from None
        record.update(hashing.record())

    atomic_write(path, write)
    return record


def record_file(path: str | Path) -> Record:
    """The record of a file already written (one pass over its bytes)."""
    h = xxhash.xxh3_64()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
            size += len(chunk)
    return {"bytes": size, HASH: h.hexdigest()}


def record_folder(folder: str | Path) -> dict[str, Record]:
    """{file name: record} of every file of a folder (a DCP checkpoint)."""
    return {p.name: record_file(p) for p in sorted(Path(folder).iterdir()) if p.is_file()}


def write(path: str | Path, parts: Mapping[str, Record | dict[str, Record]]) -> Path:
    """Write the manifest of one iteration: `parts` maps a part to its file's record, or (a
    folder) to {file name: record}."""
    out = {}
    for part, rec in parts.items():
        out[part] = rec if "bytes" in rec else {"files": dict(rec)}
    text = json.dumps({"version": VERSION, "hash": HASH, "parts": out}) + "\n"
    return atomic_write_text(path, text)


def read(path: str | Path) -> dict[str, Record | dict[str, Record]]:
    """{part: record, or {file name: record} for a folder}, from either version."""
    try:
        data = json.loads(Path(path).read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise ManifestError(f"{path} is not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise ManifestError(f"{path} holds a {type(data).__name__}, not a manifest")
    try:
        if "version" in data:
            return {
                part: dict(rec["files"]) if "files" in rec else dict(rec)
                for part, rec in data["parts"].items()
            }
        return {  # version 1: sizes only
            part: {f: {"bytes": int(n)} for f, n in size.items()}
            if isinstance(size, dict)
            else {"bytes": int(size)}
            for part, size in data.items()
        }
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise ManifestError(f"{path} is not a manifest ({type(err).__name__}: {err})") from None


def check_file(path: Path, record: Record) -> str:
    """Why `path` is not the file `record` describes ("" when it is): missing, another size, or
    other bytes of the same size."""
    if not path.is_file():
        return f"{path} is missing"
    have = path.stat().st_size
    if have != record.get("bytes"):
        return f"{path} has {have} bytes, {record.get('bytes')} were written"
    want = record.get(HASH)
    if want is not None and record_file(path)[HASH] != want:
        return f"{path} has other bytes than were written (its {HASH} differs)"
    return ""
