"""Tensors of a TorchScript archive (`.jit`), read without running any of its code.

`torch.jit.load` compiles and runs the archive's TorchScript code, and `torch.load` refuses
TorchScript archives under `weights_only=True`. The archive is a zip: `<name>/data.pkl` pickles
the module tree (objects of `__torch__.*` classes whose attribute dicts hold parameters, buffers
and submodules) and `<name>/data/<key>` holds the raw storages. This reader unpickles data.pkl
with every global refused except the tensor rebuild, storage types and OrderedDict; `__torch__.*`
classes become inert attribute holders. The result is every tensor attribute by dotted path,
which for the official tokenizer files is what `torch.jit.load(f).state_dict()` returns
(parameters and buffers; the caller drops the buffers it does not need by name).
"""

from __future__ import annotations

import os
import pickle
import zipfile
from collections import OrderedDict
from typing import Any

import torch
from torch import Tensor

# Storage class names torch writes into pickles, by dtype.
_STORAGES = {
    "FloatStorage": torch.float32,
    "DoubleStorage": torch.float64,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
}


class UnsafeArchiveError(ValueError):
    """The archive holds something other than modules and tensors; nothing of it was run."""


class _ScriptObject:
    """Stands for an instance of a `__torch__.*` class: NEWOBJ creates it, BUILD fills its
    __dict__ with the attributes. It has no behaviour."""


class _StorageType:
    def __init__(self, dtype: torch.dtype) -> None:
        self.dtype = dtype


def _rebuild_tensor_v2(
    storage: Tensor,
    offset: int,
    size: tuple,
    stride: tuple,
    requires_grad: bool = False,
    backward_hooks: Any = None,
    metadata: Any = None,
) -> Tensor:
    if not isinstance(storage, Tensor):
        raise pickle.UnpicklingError("tensor rebuilt from something that is not a storage")
    return storage.as_strided(tuple(size), tuple(stride), int(offset))


class _ArchiveUnpickler(pickle.Unpickler):
    def __init__(self, file: Any, archive: zipfile.ZipFile, root: str) -> None:
        super().__init__(file)
        self._archive, self._root = archive, root
        self._storages: dict[str, Tensor] = {}

    def find_class(self, module: str, name: str) -> Any:
        if module.startswith("__torch__.") or module == "__torch__":
            return _ScriptObject
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor_v2
        if module == "torch" and name in _STORAGES:
            return _StorageType(_STORAGES[name])
        if module == "collections" and name == "OrderedDict":
            return OrderedDict
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed")

    def persistent_load(self, pid: Any) -> Tensor:
        if not (
            isinstance(pid, tuple)
            and len(pid) == 5
            and pid[0] == "storage"
            and isinstance(pid[1], _StorageType)
        ):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r:.80}")
        _, kind, key, _location, numel = pid
        if key not in self._storages:
            raw = self._archive.read(f"{self._root}data/{key}")
            data = torch.frombuffer(bytearray(raw), dtype=torch.uint8)
            self._storages[key] = data.view(kind.dtype)[: int(numel)]
        return self._storages[key]


def _collect(obj: Any, prefix: str, out: dict[str, Tensor], seen: set[int]) -> None:
    if id(obj) in seen:
        return
    seen.add(id(obj))
    for name, value in vars(obj).items():
        if isinstance(value, Tensor):
            out[prefix + name] = value
        elif isinstance(value, _ScriptObject):
            _collect(value, f"{prefix}{name}.", out, seen)


def read_torchscript_tensors(path: str | os.PathLike) -> dict[str, Tensor]:
    """Every tensor attribute of the archive's module tree, by dotted path (CPU, contiguous)."""
    path = os.fspath(path)
    try:
        archive = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as err:
        raise UnsafeArchiveError(f"{path!r} is not a TorchScript archive (zip): {err}") from err
    with archive:
        pkls = sorted((n for n in archive.namelist() if n.endswith("/data.pkl")), key=len)
        if not pkls:
            raise UnsafeArchiveError(f"{path!r} has no data.pkl; it is not a TorchScript archive.")
        root = pkls[0][: -len("data.pkl")]
        order = (
            archive.read(root + "byteorder").decode().strip()
            if root + "byteorder" in archive.namelist()
            else "little"
        )
        if order != "little":
            raise UnsafeArchiveError(f"{path!r} was written big-endian; re-save it on x86/ARM.")
        with archive.open(pkls[0]) as f:
            try:
                tree = _ArchiveUnpickler(f, archive, root).load()
            except (pickle.UnpicklingError, KeyError, TypeError, AttributeError) as err:
                raise UnsafeArchiveError(
                    f"{path!r} holds more than modules and tensors ({err}); it was not loaded."
                ) from err
    if not isinstance(tree, _ScriptObject):
        raise UnsafeArchiveError(f"{path!r} does not hold a module.")
    out: dict[str, Tensor] = {}
    _collect(tree, "", out, set())
    return {k: v.contiguous() for k, v in out.items()}
