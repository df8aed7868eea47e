"""Lazy configs: `L(fn)(**kwargs)` records a call in an OmegaConf tree; `instantiate` performs it.

Targets are dotted import paths and values are plain (numbers, strings, lists, dicts, lazy nodes),
so a saved config.yaml reloads to an equal tree that builds the same objects."""

from __future__ import annotations

import functools
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
        module = ".".join(parts[:i])
        try:
            obj = importlib.import_module(module)
        except ModuleNotFoundError as err:
            if err.name is not None and not module.startswith(err.name):
                raise  # a module the target imports is missing, not the target itself
            continue
        try:
            return functools.reduce(getattr, parts[i:], obj)
        except AttributeError:
            break
    raise ConfigError(f"{path}: cannot import it; check the module path and that it is installed.")


def dotted_path(obj: Callable) -> str:
    """The import path of a module-level callable; refuses lambdas and local functions."""
    qualname, module = getattr(obj, "__qualname__", "<"), getattr(obj, "__module__", None)
    if module is None or "<" in qualname:
        raise ConfigError(
            f"{obj!r} cannot be stored in a config (a lambda or local function has no import "
            "path); define a module-level function and use L(fn)(...) instead."
        )
    path = f"{module}.{qualname}"
    if locate(path) is not obj:
        raise ConfigError(f"{obj!r} is not importable as {path}; move it to module level.")
    return path


def _plain(value: Any, where: str) -> Any:
    """Convert a keyword value to something OmegaConf stores and YAML round-trips."""
    if isinstance(value, (DictConfig, ListConfig, *_PRIMITIVES)):
        return str(value) if isinstance(value, Path) else value
    if isinstance(value, Mapping):
        return {str(k): _plain(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, Sequence):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if inspect.isfunction(value) or inspect.isclass(value) or inspect.isbuiltin(value):
        # A callable passed as a value (e.g. a collate function) is stored as a reference that
        # instantiate() turns back into the object, so the YAML stays plain.
        return {TARGET: dotted_path(locate), "path": dotted_path(value)}
    msg = "pass plain values (numbers, strings, lists, dicts) or a lazy node L(cls)(...)"
    raise ConfigError(f"{where}: a {type(value).__name__} cannot be stored in a config; {msg}.")


class LazyCall:
    """`L(target)(**kwargs)`: a config node that calls `target(**kwargs)` when instantiated."""

    def __init__(self, target: Callable | str):
        self._path = target if isinstance(target, str) else dotted_path(target)

    def __call__(self, **kwargs: Any) -> DictConfig:
        plain = {k: _plain(v, f"{self._path}({k}=)") for k, v in kwargs.items()}
        return OmegaConf.create({TARGET: self._path, **plain})

    def full(self, **kwargs: Any) -> DictConfig:
        """The node with the target's plain keyword defaults written out, so each can be
        overridden on the command line; the defaults keep their one home in the signature."""
        params = inspect.signature(locate(self._path)).parameters.values()
        plain = (*_PRIMITIVES, tuple, list)
        defaults = {p.name: p.default for p in params if isinstance(p.default, plain)}
        return self(**{**defaults, **kwargs})


L = LazyCall


def is_lazy(node: Any) -> bool:
    return isinstance(node, (DictConfig, Mapping)) and TARGET in node


def instantiate(cfg: Any, **runtime: Any) -> Any:
    """Build the objects a config describes, recursing into nested nodes, lists and dicts.
    `runtime` keywords go to the top-level call only (e.g. an optimizer's `params=`); one that the
    config also sets raises, so a config never silently loses a value."""
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
    text = str(text_or_path)
    if isinstance(text_or_path, Path) or ("\n" not in text and text.endswith((".yaml", ".yml"))):
        if not Path(text).is_file():
            raise ConfigError(f"{text}: no such config file.")
        text = Path(text).read_text()
    cfg = OmegaConf.create(text)
    if not isinstance(cfg, DictConfig):
        raise ConfigError("a config file must hold a mapping at the top level.")
    return cfg
