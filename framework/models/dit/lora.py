"""LoRA on any family's DiT through peft, with upstream's names (upstream/cosmos_predict2.md §4.8,
§4.7). A family says which Linear layers are targets (its `ModelFamily.lora_targets`, the one
home of each family's list); everything else (injection, fp32 upcast, merge, base loading) is here.

A LoRA-wrapped net's keys are `<path>.base_layer.weight`, `<path>.lora_A.default.weight` [r, in]
and `<path>.lora_B.default.weight` [out, r]; `merge_lora_state_dict` folds them back into plain
official keys that the official inference scripts load.
"""

from __future__ import annotations

import fnmatch
import warnings
from collections.abc import Callable, Iterable, Mapping

import torch
from torch import Tensor, nn

from framework.models.dit.state_dict import check_state_dict

ADAPTER = "default"
_BASE = ".base_layer."
_A, _B = f".lora_A.{ADAPTER}.weight", f".lora_B.{ADAPTER}.weight"


def apply_lora(net: nn.Module, rank: int, alpha: float, targets: str) -> nn.Module:
    """Inject LoRA adapters in place, freeze the base, keep LoRA params trainable in fp32.
    A is random and B zero (peft's init_lora_weights=True), so the output starts unchanged."""
    from peft import LoraConfig, inject_adapter_in_model

    if rank > 64 or alpha != rank:  # upstream warns on the same conditions (§4.8)
        warnings.warn(
            f"LoRA rank={rank}, alpha={alpha}: upstream recipes use rank <= 64 and alpha == rank.",
            stacklevel=2,
        )
    target_modules = [t.strip() for t in targets.split(",") if t.strip()]
    names = [n for n, m in net.named_modules() if isinstance(m, nn.Linear)]
    unmatched = [t for t in target_modules if not any(n == t or n.endswith("." + t) for n in names)]
    if unmatched:
        raise ValueError(
            f"LoRA targets {unmatched} matched no Linear layer of {type(net).__name__}; "
            "use module-name suffixes of its Linear layers (the family's default targets)."
        )
    config = LoraConfig(
        r=rank,
        lora_alpha=alpha,  # type: ignore[arg-type]  # peft annotates int; floats divide fine
        target_modules=target_modules,
        lora_dropout=0.0,
        bias="none",
        init_lora_weights=True,
    )
    inject_adapter_in_model(config, net, adapter_name=ADAPTER)
    for name, param in net.named_parameters():
        is_lora = ".lora_A." in name or ".lora_B." in name
        param.requires_grad_(is_lora)
        if is_lora and param.dtype != torch.float32 and param.device.type != "meta":
            param.data = param.data.float()  # upstream upcasts LoRA params to fp32
    return net


def keep_trainable(net: nn.Module, patterns: Iterable[str]) -> list[str]:
    """Make the parameters whose names match `patterns` (fnmatch) train beside the adapters, in
    fp32: the modules LoRA cannot adapt because the base has no trained values for them (an
    action net's new action embedders). peft's `modules_to_save` does this with a renamed copy
    of each module; here the parameters keep their official names, so they are saved with the
    adapters and pass through the merge unchanged. Returns the names; a pattern that matches
    nothing fails."""
    patterns = list(patterns)
    names = []
    for pattern in patterns:
        hits = [n for n, _ in net.named_parameters() if fnmatch.fnmatchcase(n, pattern)]
        if not hits:
            raise ValueError(
                f"LoRA keep-trainable pattern {pattern!r} matches no parameter of "
                f"{type(net).__name__}; fix the family's lora_trainable."
            )
        names += hits
    params = dict(net.named_parameters())
    for name in names:
        param = params[name]
        param.requires_grad_(True)
        if param.dtype != torch.float32 and param.device.type != "meta":
            param.data = param.data.float()  # as the LoRA params: upstream trains them in fp32
    return names


def is_lora_key(key: str) -> bool:
    return ".lora_A." in key or ".lora_B." in key


def lora_state_dict(net: nn.Module) -> dict[str, Tensor]:
    """Only the LoRA weights, under their full module paths."""
    return {k: v for k, v in net.state_dict().items() if is_lora_key(k)}


def merge_lora_state_dict(
    state_dict: Mapping[str, Tensor], alpha: float, rank: int
) -> dict[str, Tensor]:
    """Fold LoRA into plain official keys: W + (alpha / rank) B A (computed in fp32, stored in
    W's dtype). Works on prefixed (`net.`) or bare keys; other keys pass through."""
    scale = alpha / rank
    out: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        if is_lora_key(key):
            continue
        if _BASE not in key:
            out[key] = value
            continue
        path = key[: key.index(_BASE)]
        a, b = state_dict.get(path + _A), state_dict.get(path + _B)
        if a is None or b is None:
            raise ValueError(
                f"LoRA weights for {path!r} are missing from the state dict; "
                "pass the full LoRA-wrapped state dict."
            )
        merged = value.float() + scale * (b.float() @ a.float())
        out[key.replace(_BASE, ".")] = merged.to(value.dtype)
    return out


def load_base_into_lora(
    net: nn.Module,
    official: Mapping[str, Tensor],
    may_miss: Callable[[str], bool] = lambda key: False,
) -> None:
    """Load an official net state dict (prefix stripped, ignored keys dropped) into a
    LoRA-wrapped net; LoRA weights keep their values. Keys are checked strictly against the
    net's base weights; `may_miss(key)`: other keys the file may lack (they keep their values)."""
    lora_paths = {k[: k.index(_BASE)] for k in net.state_dict() if _BASE in k}
    mapped = {}
    for key, value in official.items():
        path, _, leaf = key.rpartition(".")
        mapped[f"{path}{_BASE}{leaf}" if path in lora_paths else key] = value
    check_state_dict(net, mapped, may_miss=lambda key: is_lora_key(key) or may_miss(key))
    net.load_state_dict(mapped, strict=False)
