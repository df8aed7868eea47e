"""Disk space of checkpoints: the size of one save, the start line that states it, and the
refusal of a save that would not fit (issue #29 item 3: a 2B full fine-tune writes 22 GB a save,
and with keep_last=0 the third save filled a 64 GiB disk)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from torch import Tensor

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
