"""Command-line overrides in Hydra's grammar (Hydra as a parser only: `a.b=1`, `+a.new=x`,
`++a.b=2`, `~a.b`, lists, dicts, quotes, `null`, `${...}`), applied in struct mode: a typo or a
value of the wrong type fails with one line naming the key and the fix, before anything is built."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, OverrideType
from hydra.errors import HydraException
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from framework.config.lazy import TARGET, ConfigError, is_lazy

_MISSING = object()


def all_keys(cfg: DictConfig, prefix: str = "") -> list[str]:
    """Every dotted key of the tree, nodes and leaves."""
    keys = []
    for key in cfg.keys():
        node, path = cfg._get_node(key), f"{prefix}{key}"
        keys += [path, *(all_keys(node, path + ".") if isinstance(node, DictConfig) else [])]
    return keys


def _get(cfg: DictConfig, key: str) -> Any:
    """The node or raw value (interpolations unresolved) at `key`, or _MISSING."""
    node: Any = cfg
    for part in key.split("."):
        if not isinstance(node, DictConfig) or part not in node:
            return _MISSING
        node = node._get_node(part)
    return node if isinstance(node, (DictConfig, ListConfig)) else node._value()


def _no_such_key(cfg: DictConfig, key: str) -> ConfigError:
    known = [k for k in all_keys(cfg) if not k.endswith(TARGET)]
    close = closest(key, known)
    hint = f"did you mean {' or '.join(close)}?" if close else "add it with +KEY=VALUE if intended."
    return ConfigError(f"{key}: no such key; {hint}")


def closest(word: str, choices: Iterable[str], cutoff: float = 0.6) -> list[str]:
    """The best matches of `word`, keeping only those about as close as the best one."""
    ratio = lambda c: difflib.SequenceMatcher(None, word, c).ratio()  # noqa: E731
    scored = sorted(((ratio(c), c) for c in choices if ratio(c) >= cutoff), reverse=True)
    return [c for s, c in scored[:3] if s >= scored[0][0] - 0.05]


_NAMES = {bool: "a bool", int: "an int", float: "a float", str: "a string", dict: "a mapping"}
_NAMES[list] = "a list like [1,2]"


def _type_name(value: Any) -> str:
    return _NAMES.get(type(value), type(value).__name__)


def _check_type(key: str, old: Any, new: Any) -> Any:
    """Refuse a value whose type cannot stand in for the old one (ints may become floats)."""
    if old is None or new is None or isinstance(new, str) and new.startswith("${"):
        return new
    if isinstance(old, str) and old.startswith("${"):
        return new  # an interpolation (model.fps from the clips): its type is its result's
    if is_lazy(old):
        raise ConfigError(
            f"{key}: replacing a whole lazy node ({old[TARGET]}) from the command line is not "
            f"supported; change its fields ({key}.FIELD=...) or write a new experiment."
        )
    want = {DictConfig: dict, ListConfig: list}.get(type(old), type(old))
    if want is float and type(new) is int:
        return float(new)
    if want in _NAMES and type(new) is not want:
        raise ConfigError(f"{key}: expected {_NAMES[want]}, got {new!r} ({_type_name(new)}).")
    return new


def parse(overrides: Iterable[str]) -> list[Override]:
    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except HydraException as err:
        raise ConfigError(f"cannot parse override: {str(err).strip().splitlines()[0]}") from None
    for ov in parsed:
        if ov.is_sweep_override():
            raise ConfigError(
                f"{ov.input_line}: a sweep has several values; run it with python -m launch.sweep "
                "(one job per value), or give one value."
            )
    return parsed


def apply_overrides(cfg: DictConfig, overrides: Iterable[str]) -> DictConfig:
    """Apply overrides in order to `cfg` (modified in place and returned)."""
    for ov in parse(overrides):
        key, kind, old = ov.key_or_group, ov.type, _get(cfg, ov.key_or_group)
        if key.split(".")[-1] == TARGET:
            raise ConfigError(f"{key}: the target of a lazy node is fixed; write a new experiment.")
        if old is _MISSING and kind in (OverrideType.CHANGE, OverrideType.DEL):
            raise _no_such_key(cfg, key)
        if old is not _MISSING and kind == OverrideType.ADD:
            raise ConfigError(f"{key}: already exists; set it with {key}=... or ++{key}=...")
        if kind == OverrideType.DEL:
            _delete(cfg, key, old, ov.value() if ov._value is not None else _MISSING)
        else:  # CHANGE, ADD (new key) or FORCE_ADD (either)
            new = _plain(ov.value())
            _set(cfg, key, new if old is _MISSING else _check_type(key, old, new))
    return cfg


def _plain(value: Any) -> Any:
    """Hydra returns its own list/dict types for `[..]`/`{..}`; store plain containers."""
    if isinstance(value, (dict, list)):
        return OmegaConf.to_container(OmegaConf.create(value))
    return value


def _set(cfg: DictConfig, key: str, value: Any) -> None:
    with open_dict(cfg):
        OmegaConf.update(cfg, key, value, merge=False)


def _delete(cfg: DictConfig, key: str, old: Any, expected: Any) -> None:
    if expected is not _MISSING and old != expected:
        raise ConfigError(f"~{key}={expected}: the current value is {old!r}, not {expected!r}.")
    parent_key, _, leaf = key.rpartition(".")
    with open_dict(cfg):
        (OmegaConf.select(cfg, parent_key) if parent_key else cfg).pop(leaf)
