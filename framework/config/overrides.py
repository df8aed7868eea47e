"""Command-line overrides in Hydra's grammar, applied in struct mode to an experiment tree.

Hydra is used only as a parser (no `@hydra.main`): `a.b=1`, `+a.new=x`, `++a.b=2`, `~a.b`, lists,
dicts, quoted strings, `null` and `${...}` interpolations. A typo or a value of the wrong type fails
with one line naming the key and the fix, before anything is built.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, OverrideType
from hydra.errors import HydraException
from omegaconf import DictConfig, ListConfig, OmegaConf

from framework.config.lazy import TARGET, ConfigError, is_lazy

_MISSING = object()


def all_keys(cfg: DictConfig, prefix: str = "") -> list[str]:
    """Every dotted key of the tree, nodes and leaves."""
    keys = []
    for key in cfg.keys():
        path = f"{prefix}{key}"
        keys.append(path)
        value = cfg._get_node(key)
        if isinstance(value, DictConfig):
            keys.extend(all_keys(value, path + "."))
    return keys


def _get(cfg: DictConfig, key: str) -> Any:
    node: Any = cfg
    for part in key.split("."):
        if not isinstance(node, DictConfig) or part not in node:
            return _MISSING
        node = node._get_node(part)
        if not isinstance(node, (DictConfig, ListConfig)):
            node = node._value()
    return node


def _no_such_key(cfg: DictConfig, key: str) -> ConfigError:
    known = [k for k in all_keys(cfg) if not k.endswith(TARGET)]
    close = closest(key, known)
    hint = f"did you mean {' or '.join(close)}?" if close else "add it with +KEY=VALUE if intended."
    return ConfigError(f"{key}: no such key; {hint}")


def closest(word: str, choices: Iterable[str], cutoff: float = 0.6) -> list[str]:
    """The best matches of `word`, keeping only those about as close as the best one."""
    scored = sorted(
        ((difflib.SequenceMatcher(None, word, c).ratio(), c) for c in choices), reverse=True
    )
    scored = [(s, c) for s, c in scored if s >= cutoff]
    return [c for s, c in scored[:3] if s >= scored[0][0] - 0.05]


def _type_name(value: Any) -> str:
    return {bool: "a bool", int: "an int", float: "a float", str: "a string"}.get(
        type(value), type(value).__name__
    )


def _check_type(key: str, old: Any, new: Any) -> Any:
    """Refuse a value whose type cannot stand in for the old one (ints may become floats)."""
    if old is None or new is None or isinstance(new, str) and new.startswith("${"):
        return new
    if isinstance(old, DictConfig):
        if is_lazy(old):
            raise ConfigError(
                f"{key}: replacing a whole lazy node ({old[TARGET]}) from the command line is not "
                f"supported; change its fields ({key}.FIELD=...) or write a new experiment."
            )
        if not isinstance(new, dict):
            raise ConfigError(f"{key}: expected a mapping, got {new!r}.")
        return new
    if isinstance(old, ListConfig):
        if not isinstance(new, list):
            raise ConfigError(f"{key}: expected a list like [1,2], got {new!r}.")
        return new
    if isinstance(old, bool) or isinstance(new, bool):
        if type(old) is not type(new):
            raise ConfigError(f"{key}: expected {_type_name(old)}, got {new!r}.")
        return new
    if isinstance(old, float) and isinstance(new, int):
        return float(new)
    if isinstance(old, (int, float, str)) and type(new) is not type(old):
        raise ConfigError(f"{key}: expected {_type_name(old)}, got {new!r} ({_type_name(new)}).")
    return new


def parse(overrides: Iterable[str]) -> list[Override]:
    overrides = list(overrides)
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException as err:
        first = str(err).strip().splitlines()[0]
        raise ConfigError(f"cannot parse override: {first}") from None
    for ov in parsed:
        if ov.is_sweep_override():
            raise ConfigError(
                f"{ov.input_line}: a sweep has several values; give one value per run "
                "(start one run per value)."
            )
    return parsed


def apply_overrides(cfg: DictConfig, overrides: Iterable[str]) -> DictConfig:
    """Apply overrides in order to `cfg` (modified in place and returned)."""
    for ov in parse(overrides):
        key = ov.key_or_group
        old = _get(cfg, key)
        value = ov.value() if ov.type != OverrideType.DEL or ov._value is not None else None
        if key.split(".")[-1] == TARGET:
            raise ConfigError(f"{key}: the target of a lazy node is fixed; write a new experiment.")
        if ov.type == OverrideType.CHANGE:
            if old is _MISSING:
                raise _no_such_key(cfg, key)
            _set(cfg, key, _check_type(key, old, _plain(value)))
        elif ov.type == OverrideType.ADD:
            if old is not _MISSING:
                raise ConfigError(f"{key}: already exists; set it with {key}=... or ++{key}=...")
            _set(cfg, key, _plain(value))
        elif ov.type == OverrideType.FORCE_ADD:
            new = _plain(value)
            _set(cfg, key, new if old is _MISSING else _check_type(key, old, new))
        elif ov.type == OverrideType.DEL:
            if old is _MISSING:
                raise _no_such_key(cfg, key)
            _delete(cfg, key, old, value if ov._value is not None else _MISSING)
    return cfg


def _plain(value: Any) -> Any:
    """Hydra returns its own list/dict types for `[..]`/`{..}`; store plain containers."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _set(cfg: DictConfig, key: str, value: Any) -> None:
    struct = OmegaConf.is_struct(cfg)
    OmegaConf.set_struct(cfg, False)
    try:
        OmegaConf.update(cfg, key, value, merge=False)
    finally:
        OmegaConf.set_struct(cfg, struct)


def _delete(cfg: DictConfig, key: str, old: Any, expected: Any) -> None:
    if expected is not _MISSING and old != expected:
        raise ConfigError(f"~{key}={expected}: the current value is {old!r}, not {expected!r}.")
    parent_key, _, leaf = key.rpartition(".")
    parent = OmegaConf.select(cfg, parent_key) if parent_key else cfg
    struct = OmegaConf.is_struct(cfg)
    OmegaConf.set_struct(cfg, False)
    try:
        parent.pop(leaf)
    finally:
        OmegaConf.set_struct(cfg, struct)
