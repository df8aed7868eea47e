"""The experiment registry: `@experiment` functions return a fresh config tree each call.

Experiments live in the `experiments` package and in any module named by the environment variable
`WORLDTUNE_EXPERIMENTS` (comma-separated) or by `--module` on the command line, so users add their
own without editing the framework.
"""

from __future__ import annotations

import importlib
import inspect
import os
import pkgutil
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import UnsupportedValueType

from framework.config.lazy import ConfigError
from framework.config.overrides import closest

TOP_LEVEL_KEYS = (
    "job",
    "model",
    "data",
    "optim",
    "sched",
    "train",
    "parallel",
    "checkpoint",
    "logging",
    "hooks",
)
ENV_MODULES = "WORLDTUNE_EXPERIMENTS"


@dataclass
class Entry:
    name: str
    fn: Callable[[], DictConfig]
    aliases: tuple[str, ...] = ()
    source: str = ""
    description: str = field(default="")


_entries: dict[str, Entry] = {}
_aliases: dict[str, str] = {}
_depth = threading.local()


def _where(fn: Callable) -> str:
    try:
        return f"{inspect.getsourcefile(fn)}:{inspect.getsourcelines(fn)[1]}"
    except (OSError, TypeError):
        return f"{fn.__module__}.{fn.__qualname__}"


def experiment(
    fn: Callable | None = None, *, name: str | None = None, aliases: Iterable[str] = ()
) -> Callable:
    """Register an experiment function. Usable bare (`@experiment`) or with arguments.

    The run's `job.name` belongs to the experiment that was asked for: a parent called from a
    derived experiment hands back its tree with `job.name` cleared, and the outermost call fills it
    from its own function name unless it set one itself.
    """

    def register(fn: Callable) -> Callable:
        entry = Entry(
            name=name or fn.__name__,
            fn=fn,
            aliases=tuple(aliases),
            source=_where(fn),
            description=((inspect.getdoc(fn) or "").strip().splitlines() or [""])[0],
        )
        for key in (entry.name, *entry.aliases):
            other = _entries.get(key) or _entries.get(_aliases.get(key, ""))
            if other is not None:
                raise ConfigError(
                    f"experiment name {key!r} is defined twice: at {other.source} and at "
                    f"{entry.source}; rename one of them."
                )

        def build() -> DictConfig:
            depth = getattr(_depth, "value", 0)
            _depth.value = depth + 1
            try:
                cfg = fn()
            except UnsupportedValueType as err:
                raise ConfigError(
                    f"experiment {entry.name} ({entry.source}) stores an unsupported value: "
                    f"{str(err).splitlines()[0]}; configs hold plain values and L(fn)(...) nodes "
                    "(use a module-level function, not a lambda or an object)."
                ) from None
            finally:
                _depth.value = depth
            if not isinstance(cfg, DictConfig) or "job" not in cfg:
                raise ConfigError(
                    f"experiment {entry.name} ({entry.source}) must return a config tree with the "
                    f"top-level keys {', '.join(TOP_LEVEL_KEYS)}."
                )
            if depth > 0:
                cfg.job.name = None
            elif not cfg.job.get("name"):
                cfg.job.name = entry.name
            return cfg

        build.__name__ = fn.__name__
        build.__qualname__ = fn.__qualname__
        build.__doc__ = fn.__doc__
        build.__wrapped__ = fn
        entry.fn = build
        _entries[entry.name] = entry
        for alias in entry.aliases:
            _aliases[alias] = entry.name
        return build

    return register(fn) if fn is not None else register


def load_all(modules: Iterable[str] = ()) -> None:
    """Import the `experiments` package, then the user's modules (env var and `modules`)."""
    import experiments

    for info in pkgutil.iter_modules(experiments.__path__, "experiments."):
        importlib.import_module(info.name)
    extra = [m.strip() for m in os.environ.get(ENV_MODULES, "").split(",") if m.strip()]
    for module in [*extra, *modules]:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as err:
            raise ConfigError(
                f"experiment module {module!r} cannot be imported ({err}); check its name and "
                "that its folder is on PYTHONPATH."
            ) from None


def names() -> list[str]:
    return sorted(_entries)


def entries() -> list[Entry]:
    return [_entries[n] for n in names()]


def resolve_name(name: str) -> str:
    if name in _entries:
        return name
    if name in _aliases:
        return _aliases[name]
    close = closest(name, [*_entries, *_aliases], cutoff=0.5)
    hint = f"did you mean {' or '.join(close)}?" if close else "run `make list` to see them all."
    raise ConfigError(f"unknown experiment {name!r}; {hint}")


def get(name: str) -> DictConfig:
    """A fresh config for experiment `name` (or an alias), in struct mode."""
    entry = _entries[resolve_name(name)]
    cfg = entry.fn()
    missing = [k for k in TOP_LEVEL_KEYS if k not in cfg]
    extra = [k for k in cfg if k not in TOP_LEVEL_KEYS]
    if missing or extra:
        raise ConfigError(
            f"experiment {entry.name} ({entry.source}): top-level keys must be "
            f"{', '.join(TOP_LEVEL_KEYS)} (missing: {missing or 'none'}, unexpected: "
            f"{extra or 'none'})."
        )
    OmegaConf.set_struct(cfg, True)
    return cfg
