"""The experiment registry: `@experiment` functions return a fresh config tree each call.

Experiments live in the `experiments` package and in the user's modules, registered without
editing the framework three ways: a `worldtune.experiments` entry point of an installed package,
`WORLDTUNE_EXPERIMENTS` (comma-separated module names) or `--module`.
Job names, one explicit rule: `get(NAME)` sets `job.name` to the decorator's `job_name=` or else
the registered name; a body that sets it is refused, so a derived experiment (which calls its
parent's function) never inherits, and overwrites, its parent's run folder."""

from __future__ import annotations

import importlib
import inspect
import os
import pkgutil
from collections.abc import Callable, Iterable
from importlib.metadata import entry_points
from pathlib import Path
from typing import NamedTuple

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import UnsupportedValueType

from framework.config.lazy import ConfigError
from framework.config.overrides import closest

TOP_LEVEL_KEYS = tuple("job model data optim sched train parallel checkpoint logging hooks".split())
# Optional after those: `eval`, the experiment's fixed eval set (framework/evaluation/evalset.py).
OPTIONAL_KEYS = ("eval",)
ENV_MODULES = "WORLDTUNE_EXPERIMENTS"
ENTRY_POINTS = "worldtune.experiments"


def _clip_fps(dataset_dir: str | None, frame_stride: int = 1, default: float = 16.0) -> float:
    """`${clip_fps:DIR,STRIDE,DEFAULT}`: the rate the model sees, the clips' fps (read from the
    folder's videos, DEFAULT before they exist) over the frame stride. Experiments set
    `model.fps` with it, so generation (which reads config.yaml) reuses the training rate."""
    from framework.data.video import folder_fps

    return folder_fps(dataset_dir, float(default)) / int(frame_stride or 1)


if not OmegaConf.has_resolver("clip_fps"):
    OmegaConf.register_new_resolver("clip_fps", _clip_fps, use_cache=True)


class Alias(NamedTuple):
    """An alias with a note that commands print when the alias is used (`alias_note`): for a
    name that means different experiments in different places, e.g. upstream's GR00T recipe
    name, which Predict2 and Predict2.5 share."""

    name: str
    note: str = ""


class Entry(NamedTuple):
    name: str
    fn: Callable[[], DictConfig]
    aliases: tuple[str, ...]
    source: str
    description: str
    job_name: str | None


_entries: dict[str, Entry] = {}
_aliases: dict[str, str] = {}
_alias_notes: dict[str, str] = {}


def experiment(
    fn: Callable | None = None,
    *,
    name: str | None = None,
    aliases: Iterable[str | Alias] = (),
    job_name: str | None = None,
) -> Callable:
    """Register an experiment function (bare `@experiment` or with arguments); the function is
    returned unchanged, so derived experiments call it for their parent's tree. An alias is a
    name, or an `Alias(name, note)` whose note commands print when it is used."""
    aliases = [a if isinstance(a, Alias) else Alias(a) for a in aliases]

    def register(fn: Callable) -> Callable:
        # The description is the docstring's first paragraph, however many lines it wraps to.
        doc = " ".join((inspect.getdoc(fn) or "").strip().split("\n\n")[0].split())
        where = f"{inspect.getsourcefile(fn)}:{fn.__code__.co_firstlineno}"
        names = tuple(a.name for a in aliases)
        entry = Entry(name or fn.__name__, fn, names, where, doc, job_name)
        for key in (entry.name, *entry.aliases):
            other = _entries.get(_aliases.get(key, key))
            if other is not None:
                raise ConfigError(
                    f"experiment name {key!r} is defined twice: at {other.source} and at "
                    f"{entry.source}; rename one of them."
                )
        _entries[entry.name] = entry
        _aliases.update({alias: entry.name for alias in entry.aliases})
        _alias_notes.update({a.name: a.note for a in aliases if a.note})
        return fn

    return register(fn) if fn is not None else register


def load_all(modules: Iterable[str] = ()) -> None:
    """Import the `experiments` package, then the user's modules: entry points of the
    `worldtune.experiments` group, the env var's and `modules`."""
    import experiments

    _check_not_shadowed(experiments)
    for info in pkgutil.iter_modules(experiments.__path__, "experiments."):
        importlib.import_module(info.name)
    for ep in entry_points(group=ENTRY_POINTS):
        try:
            ep.load()
        except ImportError as err:
            dist = ep.dist.name if ep.dist else "an installed package"
            raise ConfigError(
                f"entry point {ep.name} = {ep.value} ({ENTRY_POINTS}, from {dist}) cannot be "
                f"imported ({err}); fix or reinstall {dist}."
            ) from None
    extra = [m.strip() for m in os.environ.get(ENV_MODULES, "").split(",") if m.strip()]
    for module in [*extra, *modules]:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as err:
            raise ConfigError(
                f"experiment module {module!r} cannot be imported ({err}); check its name and "
                "that its folder is on PYTHONPATH (or register it as an entry point)."
            ) from None


def _check_not_shadowed(package) -> None:
    """Our top-level names are generic: a user's own `experiments` package earlier on sys.path
    (the current folder comes first) would silently hide every built-in experiment."""
    ours = Path(__file__).resolve().parents[2] / "experiments"
    found = Path(package.__file__).resolve().parent if package.__file__ else None
    if found != ours:
        raise ConfigError(
            f"the `experiments` package at {found or list(package.__path__)} is not worldtune's "
            f"({ours}) and hides its experiments; rename your package (e.g. my_lab_experiments) "
            "or run from another folder."
        )


def names() -> list[str]:
    return sorted(_entries)


def entries() -> list[Entry]:
    return [_entries[n] for n in sorted(_entries)]


def resolve_name(name: str) -> str:
    if name in _entries or name in _aliases:
        return _aliases.get(name, name)
    close = closest(name, [*_entries, *_aliases], cutoff=0.5)
    hint = f"did you mean {' or '.join(close)}?" if close else "run `make list` to see them all."
    raise ConfigError(f"unknown experiment {name!r}; {hint}")


def alias_note(name: str) -> str:
    """The line a command prints when `name` is an alias registered with a note, else ""."""
    note = _alias_notes.get(name)
    if not note or name not in _aliases:
        return ""
    return f"note: {name} runs experiment {_aliases[name]}; {note}"


def get(name: str) -> DictConfig:
    """A fresh config for experiment `name` (or an alias), its job named, in struct mode."""
    entry = _entries[resolve_name(name)]
    where = f"experiment {entry.name} ({entry.source})"
    try:
        cfg = entry.fn()
    except UnsupportedValueType as err:
        fix = "store plain values and L(fn)(...) nodes of module-level functions, not a lambda"
        raise ConfigError(f"{where}: {str(err).splitlines()[0]}; {fix}.") from None
    keys = list(cfg) if isinstance(cfg, DictConfig) else []
    missing = [k for k in TOP_LEVEL_KEYS if k not in keys]
    extra = [k for k in keys if k not in TOP_LEVEL_KEYS + OPTIONAL_KEYS]
    if missing or extra:
        raise ConfigError(
            f"{where}: top-level keys must be {', '.join(TOP_LEVEL_KEYS)} (missing: "
            f"{missing or 'none'}, unexpected: {extra or 'none'})."
        )
    if cfg.job.get("name") is not None:
        raise ConfigError(
            f"{where} sets job.name in its body; name the run with "
            f"@experiment(job_name={cfg.job.name!r}) instead."
        )
    cfg.job.name = entry.job_name or entry.name
    OmegaConf.set_struct(cfg, True)
    return cfg
