"""LoRA on the Predict2.5 DiT through peft (docs/upstream/cosmos_predict2_5.md §6).

Upstream's targets and values (rank 32, alpha 32): self- and cross-attention q/k/v/output and the
MLP, not the text projection, adaLN or embeddings. Adapters go onto built weights: A random, B
zero (peft's default), unlike the initial release, which injected them on the meta device before
init (§8 item 2). The generic part (inject, freeze, merge) is Predict2's too and belongs in the
shared LoRA module of issue #23; only TARGETS is this family's.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from framework.models.cosmos2_5.loading import check_state_dict, official_state_dict

TARGETS = "q_proj,k_proj,v_proj,output_proj,mlp.layer1,mlp.layer2"
RANK = ALPHA = 32
ADAPTER = "default"
_BASE = ".base_layer."
_A, _B = f".lora_A.{ADAPTER}.weight", f".lora_B.{ADAPTER}.weight"


def is_lora_key(key: str) -> bool:
    return ".lora_A." in key or ".lora_B." in key


def apply_lora(
    net: nn.Module, rank: int = RANK, alpha: float = ALPHA, targets: str = TARGETS
) -> nn.Module:
    """Inject adapters in place, freeze the base, keep the adapters trainable in fp32 (upstream
    upcasts them)."""
    from peft import LoraConfig, inject_adapter_in_model

    target_modules = [t.strip() for t in targets.split(",") if t.strip()]
    names = [n for n, m in net.named_modules() if isinstance(m, nn.Linear)]
    unmatched = [t for t in target_modules if not any(n == t or n.endswith("." + t) for n in names)]
    if unmatched:
        raise ValueError(
            f"LoRA targets {unmatched} matched no Linear layer of the Predict2.5 net; use module "
            f"names such as {TARGETS!r}."
        )
    config = LoraConfig(
        r=rank,
        lora_alpha=alpha,
        target_modules=target_modules,
        lora_dropout=0.0,
        bias="none",
        init_lora_weights=True,
    )
    inject_adapter_in_model(config, net, adapter_name=ADAPTER)
    for name, param in net.named_parameters():
        trainable = is_lora_key(name)
        param.requires_grad_(trainable)
        if trainable and param.dtype != torch.float32 and param.device.type != "meta":
            param.data = param.data.float()
    return net


def merge_lora_state_dict(
    state_dict: Mapping[str, Tensor], rank: int, alpha: float
) -> dict[str, Tensor]:
    """Fold adapters into plain official keys: W + (alpha / rank) B A (fp32 math, W's dtype)."""
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
                f"LoRA weights for {path!r} are missing from the state dict; pass the full "
                "LoRA-wrapped state dict."
            )
        merged = value.float() + scale * (b.float() @ a.float())
        out[key.replace(_BASE, ".")] = merged.to(value.dtype)
    return out


def load_base_into_lora(
    net: nn.Module, state_dict: Mapping[str, Tensor], ema: bool = False
) -> None:
    """Load an official state dict into a LoRA-wrapped net strictly; adapters keep their values."""
    lora_paths = {k[: k.index(_BASE)] for k in net.state_dict() if _BASE in k}
    mapped = {}
    for key, value in official_state_dict(state_dict, ema=ema).items():
        path, _, leaf = key.rpartition(".")
        mapped[f"{path}{_BASE}{leaf}" if path in lora_paths else key] = value
    check_state_dict(net, mapped, may_miss=is_lora_key)
    net.load_state_dict(mapped, strict=False)
