"""File writing and checkpoint reading, in one place.

Every file worldtune writes that another step reads back (checkpoints, config.yaml, pickles,
JSON indexes) goes through `atomic_write`: a temporary file in the same folder, fsynced, then
renamed over the target, so a kill at any moment leaves either the old file or the new one. Every
`.pt` file worldtune reads goes through `read_checkpoint`: `weights_only=True` (a pickle that
holds code is refused), memory-mapped (a 14B file is not read into RAM up front).
"""

from __future__ import annotations

import os
import pickle
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch
from torch import Tensor


class UnsafeFileError(RuntimeError):
    """A file holds something other than the documented structure; nothing in it was run."""


def fsync_dir(path: str | Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], Any]) -> Path:
    """Call `write(f)` on a temporary binary file beside `path`, then rename it into place.

    On any error (a full disk included) the temporary file is removed and `path` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def replace_dir(src: str | Path, dst: str | Path) -> Path:
    """Rename the finished folder `src` to `dst`, replacing what is there (a leftover of an
    earlier run). Callers make `dst`'s content valid only through their own marker files."""
    src, dst = Path(src), Path(dst)
    if dst.exists():
        shutil.rmtree(dst)
    os.replace(src, dst)
    return dst


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda f: f.write(text.encode()))


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    return atomic_write(path, lambda f: torch.save(obj, f))


def atomic_pickle(obj: Any, path: str | Path) -> Path:
    return atomic_write(path, lambda f: pickle.dump(obj, f))


def load_torch_file(path: str | Path) -> Any:
    """torch.load with weights_only=True and mmap; one-line errors for missing or unsafe files."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; check the path.")
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as err:
            if "mmap" not in str(err):
                raise
            # Files written with the legacy (non-zip) format cannot be memory-mapped.
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        lines = [ln for ln in str(err).splitlines() if "Unsupported" in ln] or ["unknown object"]
        raise UnsafeFileError(
            f"{path} holds objects other than tensors and plain containers, so it was not "
            f"loaded ({lines[0].strip()}); re-save it as a plain state dict."
        ) from None
    except (RuntimeError, EOFError, OSError) as err:
        first = (str(err).splitlines() or [type(err).__name__])[0]
        raise UnsafeFileError(
            f"{path} cannot be read as a torch file ({first}); it is damaged or not a .pt file."
        ) from None


def read_checkpoint(path: str | Path) -> dict[str, Tensor]:
    """The state dict in a `.pt` file; `model`/`module`/`state_dict` holders are unwrapped."""
    obj = load_torch_file(path)
    for holder in ("model", "module", "state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(holder), dict):
            obj = obj[holder]
    if not isinstance(obj, dict):
        raise UnsafeFileError(
            f"{path} holds a {type(obj).__name__}, not a state dict; pass a model/iter_N.pt file."
        )
    return obj
