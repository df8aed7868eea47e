"""Loading untrusted T5 embedding pickles without running code (torch files: framework.io).

A pickle can call any importable function while it loads. The T5 pickles
(upstream/cosmos_predict2.md §6.3) only ever hold a list of numpy float arrays, so the unpickler
here resolves the handful of numpy globals that structure needs (each wrapped to refuse non-float
dtypes) and refuses every other global before anything is called."""

from __future__ import annotations

import codecs
import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from framework.io import UnsafeFileError, atomic_pickle

__all__ = ["UnsafeFileError", "load_t5_pickle", "save_t5_pickle"]


# float16/32/64; the official files are float16 (upstream/cosmos_predict2.md §6.3)
_FLOAT_KINDS = "f"


def _checked_dtype(dt: Any) -> np.dtype:
    dtype = np.dtype(dt)
    if dtype.kind not in _FLOAT_KINDS:
        raise pickle.UnpicklingError(f"array dtype {dtype} is not a float type")
    return dtype


def _dtype(obj: Any, align: bool = False, copy: bool = False) -> np.dtype:
    if not isinstance(obj, str):
        raise pickle.UnpicklingError("numpy dtype built from a non-string spec")
    _checked_dtype(obj)
    return np.dtype(obj, align, copy)


class _NdarrayType:
    """Stands for numpy.ndarray inside a pickle: accepted as _reconstruct's subtype and as the
    target of the BUILD that fills the array, but not callable (np.ndarray(shape, "O", ...) in a
    pickle would otherwise build arrays of any dtype)."""


def _reconstruct(subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
    if subtype is not _NdarrayType:
        raise pickle.UnpicklingError("only plain numpy arrays are allowed")
    return np.ndarray.__new__(np.ndarray, shape, "b")


def _frombuffer(buf: Any, dtype: Any, shape: Any, order: str) -> np.ndarray:
    # numpy's protocol-5 path (pickle.dumps(arr, protocol=5)).
    arr = np.frombuffer(buf, dtype=_checked_dtype(dtype))
    return arr.reshape(shape, order=order if order in ("C", "F") else "C")


def _latin1(text: str, encoding: str = "utf-8") -> bytes:
    # Protocol-2 pickles store array bytes as latin1 text decoded back through _codecs.encode.
    if codecs.lookup(encoding).name != "iso8859-1" or not isinstance(text, str):
        raise pickle.UnpicklingError(f"_codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


_ALLOWED = {
    ("numpy", "ndarray"): _NdarrayType,
    ("numpy", "dtype"): _dtype,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,  # written by numpy < 2 (upstream)
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,
    ("_codecs", "encode"): _latin1,
}


class _ArrayListUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refused global {module}.{name}") from None

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("refused persistent id")


def load_t5_pickle(path: str | Path, dim: int | None = 1024) -> np.ndarray:
    """The [n_tokens, dim] float array of an official T5 embedding pickle
    (upstream/cosmos_predict2.md §6.3).

    Raises UnsafeFileError naming the file when it holds anything but a list with one 2-D float
    array (with `dim` columns when given); nothing in a refused file is executed.
    """
    data = Path(path).read_bytes()
    try:
        obj = _ArrayListUnpickler(io.BytesIO(data)).load()
    except Exception as err:  # noqa: BLE001 - any failure means "not the documented structure"
        raise UnsafeFileError(
            f"{path} is not a T5 embedding pickle (a list holding one float array): {err}; "
            "regenerate it with python -m data_prep.t5_embed"
        ) from None
    problem = _structure_problem(obj, dim)
    if problem:
        raise UnsafeFileError(
            f"{path} is not a T5 embedding pickle: {problem}; "
            "regenerate it with python -m data_prep.t5_embed"
        )
    return obj[0]


def _structure_problem(obj: Any, dim: int | None) -> str:
    if not isinstance(obj, list) or len(obj) != 1:
        return f"expected a list with one array, got {type(obj).__name__}"
    arr = obj[0]
    if not isinstance(arr, np.ndarray) or arr.ndim != 2 or arr.dtype.kind != "f":
        return "expected a 2-D float array"
    if arr.shape[0] < 1 or (dim is not None and arr.shape[1] != dim):
        return f"array shape {tuple(arr.shape)} is not [n_tokens >= 1, {dim}]"
    if not np.isfinite(arr).all():
        return "array holds NaN or inf"
    return ""


def save_t5_pickle(embedding: np.ndarray, path: str | Path) -> None:
    """Write the official format: a list with one float16 [n_tokens, dim] array (atomic)."""
    arr = np.ascontiguousarray(np.asarray(embedding, dtype=np.float16))
    if arr.ndim != 2:
        raise ValueError(f"T5 embedding must be [n_tokens, dim], got shape {arr.shape}")
    atomic_pickle([arr], path)
