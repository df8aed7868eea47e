"""How much host memory this process can still take: the host's MemAvailable, or less where a
memory cgroup caps the process (a SLURM job's `--mem`, a container's limit). format=dcp pins one
save's size of host memory per staging file; sized from MemAvailable alone, a job limited to a
fraction of a large node would be killed by the kernel's out-of-memory killer instead.

cgroup v2: the process's folder under /sys/fs/cgroup (from /proc/self/cgroup, "0::<path>") and
each folder above it may set `memory.max`; the room under a limit is the limit less
`memory.current` plus the page cache the kernel drops first (`inactive_file` of memory.stat),
and the tightest of the folders wins. cgroup v1: the same from the memory controller's folder,
`memory.limit_in_bytes`, `memory.usage_in_bytes` and `total_inactive_file`.
"""

from __future__ import annotations

from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")
NO_LIMIT = 2**60  # v1 writes "no limit" as a huge number (9223372036854771712)


def available(
    meminfo: Path = Path("/proc/meminfo"), proc: Path = PROC_CGROUP, root: Path = CGROUP_ROOT
) -> int:
    """Bytes this process can still take (0 when neither source can be read)."""
    known = [x for x in (_mem_available(meminfo), cgroup_room(proc, root)) if x is not None]
    return min(known) if known else 0


def cgroup_room(proc: Path = PROC_CGROUP, root: Path = CGROUP_ROOT) -> int | None:
    """The room under the tightest memory limit of this process's cgroups (at least 1 byte),
    or None when no limit is set or none can be read."""
    try:
        lines = proc.read_text().splitlines()
    except OSError:
        return None
    rooms = []
    for line in lines:
        if line.count(":") < 2:
            continue
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # v2: one unified tree
            rooms += _rooms(root, path, "memory.max", "memory.current", "inactive_file")
        elif "memory" in controllers.split(","):  # v1: the memory controller's own tree
            names = ("memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file")
            rooms += _rooms(root / "memory", path, *names)
    return max(1, min(rooms)) if rooms else None


def _rooms(base: Path, path: str, limit_file: str, usage_file: str, cache_key: str) -> list[int]:
    """Limit - usage + droppable cache of the folder `path` under `base` and of each above it
    (a job's limit usually sits above its steps' folders)."""
    folder = base / path.strip("/")
    out = []
    while True:
        limit = _number(folder / limit_file)
        if limit is not None and limit < NO_LIMIT:
            usage = _number(folder / usage_file) or 0
            out.append(limit - usage + _stat(folder / "memory.stat", cache_key))
        if folder == base or base not in folder.parents:
            return out
        folder = folder.parent


def _number(file: Path) -> int | None:
    try:
        text = file.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None  # "max": no limit


def _stat(file: Path, key: str) -> int:
    try:
        for line in file.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key and value.strip().isdigit():
                return int(value)
    except OSError:
        pass
    return 0


def _mem_available(meminfo: Path) -> int | None:
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None
