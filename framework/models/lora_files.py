"""LoRA checkpoints that hold the adapters only, and the base they are folded into.

A LoRA run that starts from `checkpoint.load_path` saves what trains (`*.lora_A.*`, `*.lora_B.*`,
extra modules such as `logvar.*`, EMA twins), not the frozen base: 14B's base is 57.6 GB in
fp32, its rank-32 adapters well under 1 GB. Whatever needs a whole net (the merge command,
export, generation) takes the base from the run's `checkpoint.load_path` and gives it the names
of a LoRA-wrapped net (`<path>.base_layer.weight`), so the families' merge works unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from torch import Tensor

from framework.config import ConfigError, from_yaml

_LORA_MARKS = (".lora_A.", ".lora_B.")
_BASE = ".base_layer."
_LORA_A = ".lora_A."


def is_adapter_only(sd: Mapping[str, Tensor]) -> bool:
    """LoRA weights without the base weights they adapt."""
    return any(m in k for k in sd for m in _LORA_MARKS) and not any(_BASE in k for k in sd)


def with_base(adapters: Mapping[str, Tensor], base: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """`adapters` plus the base's net weights: under `<path>.base_layer.<leaf>` where `<path>`
    has adapters, under their own names elsewhere; for `net_ema.*` too when the file has EMA.
    `base` is an official file (`net.*` keys, or a bare net state dict)."""
    net_base = {k[4:]: v for k, v in base.items() if k.startswith("net.")}
    if not net_base:
        net_base = dict(base)
    out = dict(adapters)
    heads = {k.partition(".")[0] for k in adapters if any(m in k for m in _LORA_MARKS)}
    for head in heads:
        prefix = head + "."
        adapted = {
            k[len(prefix) : k.index(_LORA_A)]
            for k in adapters
            if k.startswith(prefix) and _LORA_A in k
        }
        for key, value in net_base.items():
            path, _, leaf = key.rpartition(".")
            name = f"{head}.{path}{_BASE}{leaf}" if path in adapted else f"{head}.{key}"
            out.setdefault(name, value)
    return out


def base_path_of_job(job: Path) -> Path:
    """The `checkpoint.load_path` a LoRA job started from (its config.yaml), checked to exist."""
    from framework.jobs import CONFIG

    config = Path(job) / CONFIG
    if not config.is_file():
        raise ConfigError(
            f"{config} not found: an adapters-only LoRA checkpoint needs its run's config.yaml "
            "to find the base model (checkpoint.load_path)."
        )
    path = str(from_yaml(config).checkpoint.get("load_path") or "")
    if not path:
        raise ConfigError(f"{config} has no checkpoint.load_path: the base model is unknown.")
    if not Path(path).is_file():
        raise FileNotFoundError(
            f"the base model {path} (checkpoint.load_path in {config}) does not exist; put the "
            "file there or pass the base explicitly."
        )
    return Path(path)
