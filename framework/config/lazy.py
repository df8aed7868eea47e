"""Lazy configs: `L(fn)(**kwargs)` records a call in an OmegaConf tree; `instantiate` performs it.

One representation (a `DictConfig`) from experiment to `config.yaml` and back: targets are stored as
dotted import paths and values must be plain (numbers, strings, lists, dicts, other lazy nodes), so
every saved config reloads to an equal tree that builds the same objects.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

TARGET = "_target_"
_PRIMITIVES = (str, int, float, bool, type(None), Path)


class ConfigError(ValueError):
    """A user-facing configuration mistake; the message says what and how to fix it."""


def locate(path: str) -> Any:
    """Import `pkg.module.attr.sub` and return the object it names."""
    parts = path.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ModuleNotFoundError as err:
            # Keep searching shorter prefixes only when the missing module is the one we tried.
            if err.name is not None and not ".".join(parts[:i]).startswith(err.name):
                raise
            continue
        try:
            for attr in parts[i:]:
                obj = getattr(obj, attr)
        except AttributeError:
            break
        return obj
    raise ConfigError(f"{path}: cannot import it; check the module path and that it is installed.")


def dotted_path(obj: Callable) -> str:
    """The import path of a module-level callable; refuses lambdas and local functions."""
    qualname = getattr(obj, "__qualname__", None)
    module = getattr(obj, "__module__", None)
    if qualname is None or module is None or "<" in qualname:
        raise ConfigError(
            f"{obj!r} cannot be stored in a config: it has no import path (lambda or local "
            "function); define a module-level function and use L(fn)(...) or "
            "L(functools.partial)(fn, ...) instead."
        )
    path = f"{module}.{qualname}"
    if locate(path) is not obj:
        raise ConfigError(f"{obj!r} is not importable as {path}; move it to module level.")
    return path


def _plain(value: Any, where: str) -> Any:
    """Convert a keyword value to something OmegaConf stores and YAML round-trips."""
    if isinstance(value, (DictConfig, ListConfig)):
        return value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, _PRIMITIVES):
        return value
    if isinstance(value, Mapping):
        return {str(k): _plain(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, Sequence):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if inspect.isfunction(value) or inspect.isclass(value) or inspect.isbuiltin(value):
        # A callable passed as a value (e.g. a collate function) is stored as a reference that
        # instantiate() turns back into the object, so the YAML stays plain.
        return {TARGET: dotted_path(locate), "path": dotted_path(value)}
    raise ConfigError(
        f"{where}: a {type(value).__name__} cannot be stored in a config; pass plain values "
        "(numbers, strings, lists, dicts) or a lazy node L(cls)(...) that builds it."
    )


class LazyCall:
    """`L(target)(**kwargs)`: a config node that calls `target(**kwargs)` when instantiated."""

    def __init__(self, target: Callable | str):
        self._path = target if isinstance(target, str) else dotted_path(target)

    def __call__(self, **kwargs: Any) -> DictConfig:
        node = {TARGET: self._path}
        for key, value in kwargs.items():
            node[key] = _plain(value, f"{self._path}({key}=)")
        return OmegaConf.create(node)

    def full(self, **kwargs: Any) -> DictConfig:
        """The node with every plain keyword default of the target written out too, so each can
        be overridden on the command line (struct mode refuses keys that are not there). The
        defaults stay in the target's signature, their one home."""
        params = inspect.signature(locate(self._path)).parameters.values()
        plain = (*_PRIMITIVES, tuple, list)
        defaults = {p.name: p.default for p in params if isinstance(p.default, plain)}
        return self(**{**defaults, **kwargs})


L = LazyCall


def is_lazy(node: Any) -> bool:
    return isinstance(node, (DictConfig, Mapping)) and TARGET in node


def instantiate(cfg: Any, **runtime: Any) -> Any:
    """Build the objects a config describes, recursing into nested nodes, lists and dicts.

    `runtime` keywords are passed to the top-level call only (e.g. `params=` for an optimizer);
    one that the config also sets raises, so a config never silently loses a value.
    """
    if isinstance(cfg, (DictConfig, ListConfig)):
        cfg = OmegaConf.to_container(cfg, resolve=True)
    return _build(cfg, runtime, "cfg")


def _build(node: Any, runtime: Mapping[str, Any], where: str) -> Any:
    if isinstance(node, list):
        return [_build(v, {}, f"{where}[{i}]") for i, v in enumerate(node)]
    if not isinstance(node, dict):
        return node
    if TARGET not in node:
        return {k: _build(v, {}, f"{where}.{k}") for k, v in node.items()}
    clash = sorted(set(runtime) & (set(node) - {TARGET}))
    if clash:
        raise ConfigError(
            f"{where}: {', '.join(clash)} given at run time is also set in the config; "
            "remove it from the config (it is filled in by the code)."
        )
    target = locate(node[TARGET])
    kwargs = {k: _build(v, {}, f"{where}.{k}") for k, v in node.items() if k != TARGET}
    kwargs.update(runtime)
    try:
        return target(**kwargs)
    except TypeError as err:
        if "argument" in str(err):
            raise ConfigError(f"{where} ({node[TARGET]}): {err}; fix the config keys.") from err
        raise


def to_yaml(cfg: DictConfig, resolve: bool = False) -> str:
    return OmegaConf.to_yaml(cfg, resolve=resolve, sort_keys=False)


def from_yaml(text_or_path: str | Path) -> DictConfig:
    """Load a config from YAML text or a `.yaml` file path."""
    if isinstance(text_or_path, Path) or (
        "\n" not in str(text_or_path) and str(text_or_path).endswith((".yaml", ".yml"))
    ):
        path = Path(text_or_path)
        if not path.is_file():
            raise ConfigError(f"{path}: no such config file.")
        text_or_path = path.read_text()
    cfg = OmegaConf.create(text_or_path)
    if not isinstance(cfg, DictConfig):
        raise ConfigError("a config file must hold a mapping at the top level.")
    return cfg
