"""A switch that tells model components they are being built on the meta device.

`--dryrun` builds whole models on the meta device to count parameters; components that would load
weights from disk (tokenizers, text encoders) check `on_meta()` and skip the load, so a dry run
needs neither the files nor the memory. `import_on_cpu` keeps a library's first import, made
inside such a build, from leaving meta tensors in that library.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

import torch

_ON_META: ContextVar[bool] = ContextVar("worldtune_on_meta", default=False)


@contextlib.contextmanager
def building_on_meta() -> Iterator[None]:
    token = _ON_META.set(True)
    try:
        yield
    finally:
        _ON_META.reset(token)


def on_meta() -> bool:
    return _ON_META.get()


def import_on_cpu(module: str, name: str) -> Any:
    """`from module import name`, with the tensors that a first import creates put on the CPU.

    Builders import their libraries lazily, so a dry run (`torch.device("meta")` around the whole
    model) can be the first to import one; its module-level tensors then live on the meta device
    for the rest of the process. diffusers' autoencoder_kl_cosmos keeps its Haar wavelets so,
    and every later CV8x8x8 tokenizer copied them into meta buffers ("Tensor on device cpu is
    not on the expected device meta" on the first encode after a dry run)."""
    with torch.device("cpu"):  # nested inside a meta context, the inner device wins
        return getattr(importlib.import_module(module), name)
