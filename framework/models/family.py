"""Model families as declared plug-ins.

A family (Cosmos-Predict2, Cosmos-Predict1, a test's toy) is one `ModelFamily` object in its own
package, registered when that package is imported. It names its network classes and provides
what the generic model wrapper, the trainer and the inference code need to know about them.
Nothing here finds a family from a module path: `family_of(net)` picks the registered class
nearest to the net's own class in its MRO (a Predict2.5 net that subclasses the shared
`MinimalDiT` gets its own family, not Predict2's; an FSDP2-sharded net is a subclass of its class,
so the match survives `fully_shard`), and `get_family(name)` looks a family up by its name.

Defaults come from the shared DiT layer (framework/models/dit/): one parallelize over the net's
`units()`, one LoRA on the family's `lora_targets`, one strict state-dict load minus the family's
`ignored_keys`. A family overrides only what differs. Adding a family = adding a package with a net
and a `ModelFamily`; see docs/architecture.md.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from torch import Tensor, nn

from framework.models.dit import lora as dit_lora
from framework.models.dit.parallelize import parallelize_net
from framework.models.dit.state_dict import load_strict, net_state_dict

StateDict = Mapping[str, Tensor]


class Parallelize(Protocol):
    def __call__(
        self,
        net: nn.Module,
        mesh: Any = None,
        *,
        activation_checkpointing: str = ...,
        compile: bool = ...,
        fsdp: bool = ...,
        compile_backend: str = ...,
    ) -> nn.Module: ...


class LoadOfficial(Protocol):
    def __call__(self, net: nn.Module, state_dict: StateDict, *, assign: bool = ...) -> None: ...


# The net argument is typed Any: each family's callables take its own net class, which a
# Callable[[nn.Module], ...] would refuse (parameters are contravariant); arity, the other
# argument types and the results are checked.
# (net, latent_t, latent_h, latent_w, text_len) -> training FLOPs of one sample (fwd + bwd).
FlopsPerSample = Callable[[Any, int, int, int, int], float]
ApplyLora = Callable[..., nn.Module]  # (net, rank=, alpha=, targets=) in place
LoadBaseIntoLora = Callable[[nn.Module, StateDict], None]
MergeLora = Callable[[StateDict, int, float], dict[str, Tensor]]  # (sd, rank, alpha)
KeyMap = Callable[[StateDict], dict[str, Tensor]]


def net_context_parallel(net: nn.Module, group: Any) -> None:
    """The default `context_parallel` hook: the net's own `enable_context_parallel(group)`
    (every dit.VideoDiT has one; framework/models/dit/context_parallel.py)."""
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
      in place; default: the shared one over `net.units()`.
    - flops_per_sample(net, t, h, w, text_len) -> training FLOPs of one sample (fwd + bwd).
    - load_official(net, state_dict, assign=): strict load of `net.`-prefixed or stripped keys,
      dropping exactly `ignored_keys`; raises naming missing/unexpected keys. Default: shared.
    - lora_targets: comma-separated Linear-name suffixes LoRA adapts by default (the one home of
      the family's list); apply_lora / load_base_into_lora / merge_lora default to the shared
      LoRA module on them.
    - lora_trainable: fnmatch patterns of net parameters that train fully beside the adapters
      under LoRA (peft's `modules_to_save`): an action net's action embedders, which the base
      file lacks. They keep their official names, are saved with the adapters and merged as
      they are.
    - to_diffusers(state_dict) / from_diffusers(state_dict): key renames both ways;
      diffusers_config(net) -> kwargs of the diffusers model class named `diffusers_class`.
    - objective() / sampler(): the default config nodes of the objective and the sampler.
    - context_parallel(net, group): split each sample's latent frames across the process group
      (in place; None turns it off). The default calls `net.enable_context_parallel(group)`.
    - conditions: names of the extra per-sample inputs (beyond latent, timesteps and text) the
      family's nets take as keyword arguments, e.g. ("actions",); the model passes a batch's
      conditioning inputs only when the net's family declares them.
    - extra_checkpoint_keys: top-level keys of official files that belong to neither the net nor
      the model's extra modules and are dropped on purpose (fnmatch patterns).
    """

    name: str
    net_classes: tuple[type[nn.Module], ...]
    parallelize: Parallelize | None = None
    flops_per_sample: FlopsPerSample | None = None
    load_official: LoadOfficial | None = None
    ignored_keys: tuple[str, ...] = ()
    extra_checkpoint_keys: tuple[str, ...] = ()
    lora_targets: str = ""
    lora_trainable: tuple[str, ...] = ()
    apply_lora: ApplyLora | None = None
    load_base_into_lora: LoadBaseIntoLora | None = None
    merge_lora: MergeLora | None = None
    to_diffusers: KeyMap | None = None
    from_diffusers: KeyMap | None = None
    diffusers_class: str = ""
    diffusers_config: Callable[[Any], dict] | None = None
    objective: Callable[[], Any] | None = None
    sampler: Callable[[], Any] | None = None
    context_parallel: Callable[[Any, Any], None] = net_context_parallel
    conditions: tuple[str, ...] = ()
    notes: dict[str, str] = field(default_factory=dict)

    def is_ignored(self, key: str) -> bool:
        return any(fnmatch.fnmatchcase(key, p) for p in self.ignored_keys)

    def is_extra(self, key: str) -> bool:
        return any(fnmatch.fnmatchcase(key, p) for p in self.extra_checkpoint_keys)

    # The calls the core makes: the family's own callable where it declares one, else the
    # shared implementation.

    def parallelize_net(self, net: nn.Module, mesh: Any = None, **options: Any) -> None:
        (self.parallelize or parallelize_net)(net, mesh, **options)

    def load(self, net: nn.Module, state_dict: StateDict, assign: bool = False) -> None:
        if self.load_official is not None:
            self.load_official(net, state_dict, assign=assign)
        else:
            load_strict(net, state_dict, assign=assign, ignore=self.ignored_keys)

    def add_lora(self, net: nn.Module, rank: int, alpha: float, targets: str | None) -> None:
        targets = targets or self.lora_targets
        if self.apply_lora is not None:
            self.apply_lora(net, rank=rank, alpha=alpha, targets=targets)
        elif targets:
            dit_lora.apply_lora(net, rank, alpha, targets)
        else:
            raise ValueError(f"model family {self.name!r} has no LoRA support; remove model.lora.")
        dit_lora.keep_trainable(net, self.lora_trainable)

    def load_lora_base(self, net: nn.Module, state_dict: StateDict) -> None:
        if self.load_base_into_lora is not None:
            self.load_base_into_lora(net, state_dict)
        else:
            dit_lora.load_base_into_lora(net, net_state_dict(state_dict, ignore=self.ignored_keys))

    def merged_lora(self, state_dict: StateDict, rank: int, alpha: float) -> dict[str, Tensor]:
        if self.merge_lora is not None:
            return self.merge_lora(state_dict, rank, alpha)
        return dit_lora.merge_lora_state_dict(state_dict, alpha=alpha, rank=rank)


_families: dict[str, ModelFamily] = {}


def register_family(family: ModelFamily) -> ModelFamily:
    """Register `family` under its name. Registering the same name again replaces the entry only
    when it names the same network classes (a reloaded module); a clash raises."""
    other = _families.get(family.name)

    def qualnames(f: ModelFamily) -> list[str]:
        return sorted(c.__qualname__ for c in f.net_classes)

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
    """The registered family whose network class is nearest to `net`'s class in its MRO (None if
    none): a subclass registered by another family wins over its base's family."""
    for cls in type(net).__mro__:
        for family in _families.values():
            if cls in family.net_classes:
                return family
    return None
