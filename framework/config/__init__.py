"""Lazy configs, overrides and the experiment registry."""

from framework.config.lazy import ConfigError, L, LazyCall, from_yaml, instantiate, locate, to_yaml
from framework.config.overrides import apply_overrides
from framework.config.registry import Alias, experiment, get, load_all, names

__all__ = [
    "Alias",
    "L",
    "LazyCall",
    "ConfigError",
    "instantiate",
    "locate",
    "to_yaml",
    "from_yaml",
    "apply_overrides",
    "experiment",
    "get",
    "load_all",
    "names",
]
