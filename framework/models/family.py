"""Model families as declared plug-ins.

A family (Cosmos-Predict2, Cosmos-Predict1, a test's toy) is one `ModelFamily` object in its own
package, registered when that package is imported. It names its network classes and provides
everything the generic model wrapper, the trainer and the inference code need to know about
them. Nothing here finds a family from a module path: `family_of(net)` matches the net's class
against the registered `net_classes` (an FSDP2-sharded net is a subclass of its class, so the
match survives `fully_shard`), and `get_family(name)` looks a family up by its name.

Adding a family = adding a package with a net and a `ModelFamily`; see docs/architecture.md.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn


def _no_lora(*args: Any, **kwargs: Any) -> Any:
    raise ValueError("this model family has no LoRA support; remove model.lora.")


def net_context_parallel(net: nn.Module, group: Any) -> None:
    """The default `context_parallel` hook: the net's own `enable_context_parallel(group)`
    (MiniTrainDiT and GeneralDIT have one; framework/models/context_parallel.py)."""
    enable = getattr(net, "enable_context_parallel", None)
    if enable is None:
        raise ValueError(
            f"{type(net).__name__} has no context parallel; set parallel.context_parallel=1 "
            "(generation: --num_gpus 1)."
        )
    enable(group)


@dataclass(frozen=True)
class ModelFamily:
    """What one family of networks provides. Only `name` and `net_classes` are required.

    - parallelize(net, mesh, *, activation_checkpointing, compile, fsdp, compile_backend):
      in place.
    - flops_per_sample(net, latent_thw, text_len) -> training FLOPs of one sample (fwd + bwd).
    - load_official(net, state_dict): strict load of `net.`-prefixed or stripped keys, dropping
      exactly `ignored_keys`; raises naming missing/unexpected keys.
    - apply_lora(net, rank, alpha, targets), load_base_into_lora(net, state_dict),
      merge_lora(state_dict, rank, alpha) -> plain state dict.
    - to_diffusers(state_dict) / from_diffusers(state_dict): key renames both ways;
      diffusers_config(net) -> kwargs of the diffusers model class named `diffusers_class`.
    - objective() / sampler(): the default config nodes of the objective and the sampler.
    - context_parallel(net, group): split each sample's latent frames across the process group
      (in place; None turns it off). The default calls `net.enable_context_parallel(group)`.
    - extra_checkpoint_keys: top-level keys of official files that belong to neither the net nor
      the model's extra modules and are dropped on purpose (fnmatch patterns).
    """

    name: str
    net_classes: tuple[type[nn.Module], ...]
    parallelize: Callable[..., None] | None = None
    flops_per_sample: Callable[[nn.Module, tuple[int, int, int], int], float] | None = None
    load_official: Callable[[nn.Module, Mapping[str, Tensor]], None] | None = None
    ignored_keys: tuple[str, ...] = ()
    extra_checkpoint_keys: tuple[str, ...] = ()
    apply_lora: Callable[..., Any] = _no_lora
    load_base_into_lora: Callable[..., Any] = _no_lora
    merge_lora: Callable[..., dict[str, Tensor]] = _no_lora
    to_diffusers: Callable[[Mapping[str, Tensor]], dict[str, Tensor]] | None = None
    from_diffusers: Callable[[Mapping[str, Tensor]], dict[str, Tensor]] | None = None
    diffusers_class: str = ""
    diffusers_config: Callable[[nn.Module], dict] | None = None
    objective: Callable[[], Any] | None = None
    sampler: Callable[[], Any] | None = None
    context_parallel: Callable[[nn.Module, Any], None] = net_context_parallel
    notes: dict[str, str] = field(default_factory=dict)

    def is_ignored(self, key: str) -> bool:
        return any(fnmatch.fnmatchcase(key, p) for p in self.ignored_keys)

    def is_extra(self, key: str) -> bool:
        return any(fnmatch.fnmatchcase(key, p) for p in self.extra_checkpoint_keys)


_families: dict[str, ModelFamily] = {}


def register_family(family: ModelFamily) -> ModelFamily:
    """Register `family` under its name. Registering the same name again replaces the entry only
    when it names the same network classes (a reloaded module); a clash raises."""
    other = _families.get(family.name)
    qualnames = lambda f: sorted(c.__qualname__ for c in f.net_classes)  # noqa: E731
    if other is not None and qualnames(other) != qualnames(family):
        raise ValueError(
            f"model family {family.name!r} is registered twice with different networks; "
            "give one of them another name."
        )
    _families[family.name] = family
    return family


def get_family(name: str) -> ModelFamily:
    if name not in _families:
        raise ValueError(
            f"unknown model family {name!r}; registered: {', '.join(sorted(_families)) or 'none'}"
            " (a family registers when its package is imported)."
        )
    return _families[name]


def families() -> dict[str, ModelFamily]:
    return dict(_families)


def family_of(net: nn.Module) -> ModelFamily | None:
    """The registered family whose network classes `net` is an instance of (None if none)."""
    for family in _families.values():
        if isinstance(net, family.net_classes):
            return family
    return None
