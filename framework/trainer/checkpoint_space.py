"""Disk space of checkpoints: the size of one save, the start line that states it, and the
refusal of a save that would not fit (issue #29 item 3: a 2B full fine-tune writes 22 GB a save,
and with keep_last=0 the third save filled a 64 GiB disk)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from torch import Tensor

from framework import jobs

# DCP's .metadata and the small parts (scheduler, trainer state, manifest): well under this.
HEADROOM = 64 * 2**20


def gb(n: float) -> str:
    return f"{n / 1e9:.1f} GB"


def tensor_bytes(obj: Any) -> int:
    """The bytes of the tensors in a (local) state dict; a DTensor counts its local shard."""
    if hasattr(obj, "to_local"):
        obj = obj.to_local()
    if isinstance(obj, Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(tensor_bytes(v) for v in obj)
    return 0


def free_bytes(root: Path) -> int:
    """Free bytes on the filesystem that holds `root` (or its nearest existing parent)."""
    path = Path(root).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def _bytes_under(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else 0


def iteration_bytes(root: Path, name: str) -> int:
    """The bytes a saved iteration takes: its part files, its DCP folder and its manifest."""
    paths = [jobs.part_path(root, part, name) for part in jobs.PARTS]
    paths += [jobs.dcp_folder(root, name), jobs.manifest_path(root, name)]
    return sum(_bytes_under(p) for p in paths)


def still_coming(root: Path, pending: int, one: int, keep_last: int) -> int:
    """Bytes the disk gains between now and when a save made now starts writing: the `pending`
    saves in flight (`one` bytes each, written in order before it) are then published and
    pruned, so the disk holds the newest `keep_last` of them and of the published iterations
    (0: all), instead of the published ones and the part of the pending ones written so far.
    Negative when their pruning frees more than they still write."""
    if pending <= 0:
        return 0
    written = sum(_bytes_under(t) for t in (Path(root) / "optim").glob("*.tmpdir"))
    named = jobs.read_latest(root)
    published = jobs.iterations(root, named) if named else []
    if keep_last <= 0:
        return pending * one - written
    # The pending saves are newer than every published one: they are kept first.
    dropped = published[max(0, keep_last - pending) :]
    return min(keep_last, pending) * one - written - sum(iteration_bytes(root, n) for n in dropped)


def refusal(name: str, need: int, root: Path, latest: Path) -> str:
    """Why the save `name` of `need` bytes cannot start under `root` ("" when it fits)."""
    free = free_bytes(root)
    if need + HEADROOM <= free:
        return ""
    return (
        f"saving checkpoint {name} needs {gb(need)} but {root} has {gb(free)} free, so it was "
        f"not started; {latest} still names the previous checkpoint. Free space or lower "
        "checkpoint.keep_last, then restart: the run resumes from it."
    )


def banner(fmt: str, size: int, keep_last: int, root: Path, saves: int | None) -> str:
    """The start line: the size of one save, what keep_last keeps, and the free space."""
    if keep_last > 0:
        kept = f"keep_last={keep_last} keeps the newest {keep_last} ({gb(size * keep_last)})"
        kept += " plus the one being written"
    else:
        kept = "keep_last=0 keeps every save"
        if saves:
            kept += f" ({saves} in this run: {gb(size * saves)})"
    return (
        f"checkpoints (format={fmt}): one save is {gb(size)} (model and optimizer state); "
        f"{kept}; {gb(free_bytes(root))} free at {root}"
    )
