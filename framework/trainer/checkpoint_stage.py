"""The CPU copy of a format=dcp save, in memory the writer process maps too.

One anonymous shared-memory file (`memfd`) holds every tensor of this rank's state dict at a
fixed offset (the layout), page-locked for CUDA once, so the copy from the GPU runs at the bus's
speed on a side stream and no save allocates or pins anything (allocating and pinning tens of GB
costs seconds). The training process copies into it; the writer process
(framework/trainer/checkpoint_proc.py) opens the same file by `/proc/<pid>/fd/<fd>` and writes
from it, so the bytes cross no pipe and no lock of the training process.

A state dict crosses as a description: its containers and plain values as they are, each tensor
as a `Ref` (offset, dtype, shape) and each DTensor as a `Ref` plus where its shard sits in the
whole tensor, which the writer turns back into views of the shared file (`rebuild`).
"""

from __future__ import annotations

import itertools
import logging
import mmap
import os
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from framework.trainer import host_memory

log = logging.getLogger(__name__)

ALIGN = 4096  # page-aligned slots: a view never straddles a partly registered page


@dataclass(frozen=True)
class Ref:
    """A tensor in the shared file; `size`/`offsets` set for a DTensor's local shard."""

    offset: int
    dtype: torch.dtype
    shape: tuple[int, ...]
    size: tuple[int, ...] | None = None
    offsets: tuple[int, ...] | None = None


def _dtensor_type():
    from torch.distributed.tensor import DTensor

    return DTensor


def _leaves(obj: Any, key: str = ""):
    """(path, tensor, DTensor or None) for every tensor of a state dict, in a fixed order."""
    DTensor = _dtensor_type()
    if isinstance(obj, DTensor):
        yield key, obj.to_local(), obj
    elif isinstance(obj, Tensor):
        yield key, obj, None
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _leaves(v, f"{key}/{k}")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _leaves(v, f"{key}/{i}")


def layout_of(state: Any) -> dict[str, tuple[int, torch.dtype, tuple[int, ...]]]:
    """{path: (offset, dtype, shape)} for the tensors of `state`, each slot page-aligned."""
    layout, offset = {}, 0
    for key, t, _ in _leaves(state):
        layout[key] = (offset, t.dtype, tuple(t.shape))
        offset += -(-t.numel() * t.element_size() // ALIGN) * ALIGN
    return layout


def nbytes(layout: dict) -> int:
    """The bytes of a layout's tensors (what a save of it writes, give or take DCP's headers)."""
    return sum(
        torch.Size(shape).numel() * torch.empty((), dtype=dtype).element_size()
        for _, dtype, shape in layout.values()
    )


def available_memory() -> int:
    """Bytes of host memory this process can still take: MemAvailable, or the room under a
    cgroup's limit where that is less (framework/trainer/host_memory.py); 0 when unknown."""
    return host_memory.available()


_SERIALS = itertools.count(1)


class Slab:
    """The shared file of one layout, mapped here (and pinned when `pin`). `serial` names it to
    the writer process for good: a closed file's fd number (and size) can come back."""

    def __init__(self, layout: dict, pin: bool) -> None:
        self.layout = layout
        self.serial = next(_SERIALS)
        ends = [off + _bytes(dtype, shape) for off, dtype, shape in layout.values()]
        self.size = max([ALIGN, *ends])
        self.fd = os.memfd_create("worldtune-checkpoint", 0)
        os.ftruncate(self.fd, self.size)
        self.map = mmap.mmap(self.fd, self.size)
        self.flat = torch.frombuffer(self.map, dtype=torch.uint8)
        self.pinned = False
        self.ranges: list[tuple[int, int]] = []
        if pin:
            self._pin()

    def _pin(self) -> None:
        """Page-lock the file for CUDA, once, in a background thread: range by range, each
        range's pages allocated by the kernel (fallocate) then registered, with a pause as long
        as the range took. Measured on an H100 (bench/pin_stall.py): one 23.5 GB registration
        stopped a step loop for its whole 8.7 s (the 2B job's second step took 17.6 s instead
        of 2.2 s with two files), and allocating all pages at once stopped it for ~6 s."""
        cudart = torch.cuda.cudart()
        base = self.flat.data_ptr()
        for start, end in pin_ranges(self.layout, self.size):
            begin = time.perf_counter()
            try:
                os.posix_fallocate(self.fd, start, end - start)
            except OSError:  # not supported here: the registration touches the pages instead
                pass
            code = int(cudart.cudaHostRegister(base + start, end - start, 0))
            if code != 0:
                self._unpin()  # copies from unregistered memory are still right, only slower
                log.warning(
                    "pinning the checkpoint staging file failed at %.1f of %.1f GB (CUDA error "
                    "%d): saves copy from the GPU without it, and training waits for each copy; "
                    "free host memory (fewer checkpoint.staging_buffers or data.num_workers) "
                    "to avoid that.",
                    start / 1e9,
                    self.size / 1e9,
                    code,
                )
                return
            self.ranges.append((start, end))
            # The training thread's CUDA calls and page faults wait while a range is pinned;
            # pausing as long leaves them at least half the time.
            time.sleep(time.perf_counter() - begin)
        self.pinned = True

    def _unpin(self) -> None:
        cudart = torch.cuda.cudart()
        for start, _ in self.ranges:
            cudart.cudaHostUnregister(self.flat.data_ptr() + start)
        self.ranges, self.pinned = [], False

    def view(self, key: str) -> Tensor:
        offset, dtype, shape = self.layout[key]
        return _view(self.flat, offset, dtype, shape)

    def close(self) -> None:
        if self.fd < 0:
            return
        if self.ranges:
            self._unpin()
        del self.flat
        try:
            self.map.close()
        except BufferError:  # a view is still alive somewhere; the mapping goes with it
            pass
        os.close(self.fd)
        self.fd = -1


PIN_RANGE = 64 * 2**20


def pin_ranges(layout: dict, size: int, target: int = PIN_RANGE) -> list[tuple[int, int]]:
    """[start, end) ranges that cover the file, each about `target` bytes and each starting
    and ending at a slot's edge: a tensor's slot never spans two registrations (a copy must
    find its whole range registered as one to run asynchronously)."""
    edges = sorted({off for off, _, _ in layout.values()} | {size}) if layout else [size]
    ranges, start = [], 0
    for edge in edges:
        if edge - start >= target or (edge == size and edge > start):
            ranges.append((start, edge))
            start = edge
    return ranges


def _bytes(dtype: torch.dtype, shape: tuple[int, ...]) -> int:
    return torch.Size(shape).numel() * torch.empty((), dtype=dtype).element_size()


def _view(flat: Tensor, offset: int, dtype: torch.dtype, shape: tuple[int, ...]) -> Tensor:
    n = _bytes(dtype, shape)
    return flat[offset : offset + n].view(dtype).reshape(shape)


def stage(state: Any, slab: Slab, key: str = "") -> Any:
    """Copy `state`'s tensors into `slab` (asynchronously from the GPU: the caller synchronizes
    the stream) and return its description for the writer process."""
    DTensor = _dtensor_type()
    if isinstance(state, DTensor):
        from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

        ref = stage(state.to_local(), slab, key)
        _, offsets = compute_local_shape_and_global_offset(
            state.shape, state.device_mesh, state.placements
        )
        return Ref(ref.offset, ref.dtype, ref.shape, tuple(state.shape), tuple(offsets))
    if isinstance(state, Tensor):
        slab.view(key).copy_(state.detach(), non_blocking=state.is_cuda)
        offset, dtype, shape = slab.layout[key]
        return Ref(offset, dtype, shape)
    if isinstance(state, dict):
        return {k: stage(v, slab, f"{key}/{k}") for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(stage(v, slab, f"{key}/{i}") for i, v in enumerate(state))
    return state


class Shard(Tensor):
    """A DTensor's local shard for DCP in a process without the device mesh: it tells DCP's
    planner where it sits in the whole tensor, through the hooks DTensor itself implements."""

    __torch_function__ = torch._C._disabled_torch_function_impl

    size_: torch.Size
    offsets_: torch.Size

    @staticmethod
    def make(local: Tensor, size: tuple[int, ...], offsets: tuple[int, ...]) -> Shard:
        shard = Tensor._make_subclass(Shard, local)
        shard.size_, shard.offsets_, shard.local_ = torch.Size(size), torch.Size(offsets), local
        return shard

    def __create_write_items__(self, fqn: str, obj: Any) -> list:
        from torch.distributed.checkpoint.metadata import (
            ChunkStorageMetadata,
            MetadataIndex,
            TensorProperties,
        )
        from torch.distributed.checkpoint.planner import TensorWriteData, WriteItem, WriteItemType

        return [
            WriteItem(
                index=MetadataIndex(fqn, self.offsets_),
                type=WriteItemType.SHARD,
                tensor_data=TensorWriteData(
                    chunk=ChunkStorageMetadata(offsets=self.offsets_, sizes=self.local_.shape),
                    properties=TensorProperties.create_from_tensor(self.local_),
                    size=self.size_,
                ),
            )
        ]

    def __create_chunk_list__(self) -> list:
        from torch.distributed.checkpoint.metadata import ChunkStorageMetadata

        return [ChunkStorageMetadata(offsets=self.offsets_, sizes=self.local_.shape)]

    def __get_tensor_shard__(self, index: Any) -> Tensor:
        return self.local_


def rebuild(desc: Any, flat: Tensor) -> Any:
    """The writer process's state dict: `desc` with each Ref a view of the shared file."""
    if isinstance(desc, Ref):
        local = _view(flat, desc.offset, desc.dtype, desc.shape)
        return local if desc.size is None else Shard.make(local, desc.size, desc.offsets)
    if isinstance(desc, dict):
        return {k: rebuild(v, flat) for k, v in desc.items()}
    if isinstance(desc, (list, tuple)):
        return type(desc)(rebuild(v, flat) for v in desc)
    return desc
