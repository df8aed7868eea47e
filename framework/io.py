"""File writing and checkpoint reading, in one place.

Every file worldtune writes that another step reads back (checkpoints, config.yaml, pickles,
JSON indexes) goes through `atomic_write`: a temporary file in the same folder, fsynced, then
renamed over the target, so a kill at any moment leaves either the old file or the new one. The
temporary files and folders are created with the modes a plain `open(path, "w")` or `mkdir` gives
(0666/0777 less the umask; an existing file's mode is kept), not tempfile's private 0600/0700: lab
mates on shared storage read checkpoints and run folders like any other file. Every
`.pt` file worldtune reads goes through `read_checkpoint`: `weights_only=True` (a pickle that
holds code is refused), memory-mapped (a 14B file is not read into RAM up front).
"""

from __future__ import annotations

import os
import pickle
import secrets
import shutil
import stat
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


def _beside(path: Path, make: Callable[[Path], None]) -> Path:
    """A fresh hidden name beside `path`, created by `make` (which fails if the name exists)."""
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            make(tmp)
            return tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name beside {path}; remove its .*.tmp leftovers.")


def temp_file_beside(path: str | Path) -> Path:
    """An empty temporary file beside `path`, with the mode `open(path, "w")` would give it: the
    existing file's mode if there is one, else 0666 less the umask (mkstemp's 0600 would hide
    checkpoints from the rest of a lab's group)."""
    path = Path(path)
    mode = stat.S_IMODE(path.stat().st_mode) if path.is_file() else 0o666

    def make(tmp: Path) -> None:
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode))
        if path.is_file():
            os.chmod(tmp, mode)  # O_CREAT applied the umask; a rewrite keeps the file's own mode

    return _beside(path, make)


def temp_dir_beside(path: str | Path) -> Path:
    """An empty temporary folder beside `path`, 0777 less the umask as `mkdir` gives (not
    mkdtemp's 0700), to be filled and renamed to `path`."""
    return _beside(Path(path), lambda tmp: os.mkdir(tmp, 0o777))


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], Any]) -> Path:
    """Call `write(f)` on a temporary binary file beside `path`, then rename it into place.

    On any error (a full disk included) the temporary file is removed and `path` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_file_beside(path)
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError) and err.filename is None:
            # Closing the file flushes its buffer: a full disk often surfaces there, unnamed.
            raise OSError(err.errno, err.strerror or str(err), str(path)) from err
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
