"""A switch that tells model components they are being built on the meta device.

`--dryrun` builds whole models on the meta device to count parameters; components that would load
weights from disk (tokenizers, text encoders) check `on_meta()` and skip the load, so a dry run
needs neither the files nor the memory.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar

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
