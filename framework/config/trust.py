"""Which `_target_`s a config read from a job folder may name before anything is instantiated.

A job's `config.yaml` is a file someone else may have written (a shared folder, a downloaded
run). `instantiate` imports and calls every `_target_`, so `_target_: os.system` would run a
command. Configs read from a job folder (video2world, best-of-N, eval, export) are therefore
checked first: every `_target_`, and every callable stored as a value (`locate` nodes), must lie
in this project's packages, torch, diffusers, transformers, or the user's own modules (the ones
given with `--module`, in `WORLDTUNE_EXPERIMENTS` or as `worldtune.experiments` entry points).
Inside those, entry points that run code from elsewhere are refused by name (torch.hub,
compiled extensions, pickles read with `weights_only=False`, `trust_remote_code`). Anything
else is refused in one line naming the key and the target; `--trust_config` skips the check for
a folder the user trusts. Experiments registered in code are the user's own code: not checked.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from omegaconf import DictConfig, OmegaConf

from framework.config.lazy import TARGET, ConfigError

PROJECT = ("framework", "experiments", "data_prep")
LIBRARIES = ("torch", "diffusers", "transformers")
# Inside the trusted libraries: calls that load and run code from a path, a hub or a pickle.
DENIED = (
    "torch.hub",
    "torch.utils.cpp_extension",
    "torch.package",
    "torch.load",
    "torch.serialization",
    "torch.ops.load_library",
    "torch.classes.load_library",
    "transformers.dynamic_module_utils",
    "diffusers.utils.dynamic_modules_utils",
)
_LOCATE = "framework.config.lazy.locate"


def user_modules(modules: Iterable[str] = ()) -> set[str]:
    """Top-level packages of the user's registered experiment modules."""
    names = set(modules)
    names |= {m.strip() for m in os.environ.get("WORLDTUNE_EXPERIMENTS", "").split(",")}
    try:
        from importlib.metadata import entry_points

        names |= {ep.value.split(":")[0] for ep in entry_points(group="worldtune.experiments")}
    except Exception:  # noqa: BLE001  (broken metadata must not make a config trusted or fatal)
        pass
    return {n.split(".")[0] for n in names if n}


def _allowed(target: str, user: set[str]) -> bool:
    if not isinstance(target, str) or not target:
        return False
    if any(target == d or target.startswith(d + ".") for d in DENIED):
        return False
    return target.split(".")[0] in (*PROJECT, *LIBRARIES, *user)


def check_targets(cfg: DictConfig | dict, source: str, modules: Iterable[str] = ()) -> None:
    """Raise ConfigError naming the first `_target_` (or stored callable) of `cfg` outside the
    allowlist; `source` names the file in the message."""
    user = user_modules(modules)
    tree = OmegaConf.to_container(cfg, resolve=False) if OmegaConf.is_config(cfg) else cfg
    for where, node in _nodes(tree, "cfg"):
        target = node[TARGET]
        named = [target]
        if target == _LOCATE and "path" in node:
            named.append(node["path"])  # a callable kept as a value: the one it names
        for name in named:
            if not _allowed(name, user):
                raise ConfigError(
                    f"{source}: {where} names {name!r}, which a config from a job folder may "
                    "not run (allowed: this project, torch, diffusers, transformers and your "
                    "--module packages); pass --trust_config if you trust this folder."
                )
        key = _code_loading_key(node)
        if key:
            raise ConfigError(
                f"{source}: {where} sets {key}={node[key]!r}, which loads code with the "
                "weights; remove it, or pass --trust_config if you trust this folder."
            )


def _code_loading_key(node: dict) -> str | None:
    for key in ("trust_remote_code", "custom_pipeline"):
        if node.get(key) not in (None, False, ""):
            return key
    return "weights_only" if node.get("weights_only") is False else None


def _nodes(tree: Any, where: str):
    """(path, node) of every mapping with a `_target_`, depth first."""
    if isinstance(tree, dict):
        if TARGET in tree:
            yield where, tree
        for k, v in tree.items():
            yield from _nodes(v, f"{where}.{k}" if where != "cfg" else str(k))
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            yield from _nodes(v, f"{where}[{i}]")
