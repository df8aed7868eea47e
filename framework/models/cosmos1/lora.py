"""LoRA on the Predict1 DiT through peft.

Upstream has no LoRA for Predict1 (docs/upstream/cosmos_predict1.md addendum); the default
targets mirror the Predict2 recipe on this net's module names: the attention projections and the
two MLP Linears. peft, the fp32 upcast and the merge are shared with Predict2
(framework.models.cosmos2.lora); only the names and the strict base load are Predict1's.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from torch import Tensor, nn

from framework.models.cosmos1.loading import (
    check_extra_pos_emb,
    fill_fixed_buffers,
    official_state_dict,
)
from framework.models.cosmos2 import lora as _lora
from framework.models.cosmos2.loading import check_state_dict

merge_lora_state_dict = _lora.merge_lora_state_dict
lora_state_dict = _lora.lora_state_dict
is_lora_key = _lora.is_lora_key

DEFAULT_TARGETS = "to_q.0,to_k.0,to_v.0,to_out.0,layer1,layer2"


def apply_lora(
    net: nn.Module, rank: int = 16, alpha: float = 16, targets: str = DEFAULT_TARGETS
) -> nn.Module:
    """Inject LoRA adapters in place (base frozen, LoRA trainable in fp32, output unchanged at
    start since B is zero). `targets`: comma-separated module-name suffixes."""
    names = [n for n, m in net.named_modules() if isinstance(m, nn.Linear)]
    wanted = [t.strip() for t in targets.split(",") if t.strip()]
    unmatched = [t for t in wanted if not any(n == t or n.endswith("." + t) for n in names)]
    if unmatched:
        raise ValueError(
            f"LoRA targets {unmatched} matched no Linear layer of the Predict1 net; "
            f"use module names such as {DEFAULT_TARGETS!r}."
        )
    return _lora.apply_lora(net, rank=rank, alpha=alpha, targets=targets)


def load_base_into_lora(
    net: nn.Module, state_dict: Mapping[str, Tensor], ema: bool = False, ignore: Iterable[str] = ()
) -> None:
    """Load an official (plain-name) state dict into a LoRA-wrapped net; LoRA weights keep their
    values. Keys are checked strictly against the net's base weights."""
    base = ".base_layer."
    own = net.state_dict()
    lora_paths = {k[: k.index(base)] for k in own if base in k}
    sd = official_state_dict(state_dict, ema=ema, ignore=ignore)
    check_extra_pos_emb(net, sd)
    fill_fixed_buffers(net, sd)
    mapped = {}
    for key, value in sd.items():
        path, _, leaf = key.rpartition(".")
        mapped[f"{path}{base}{leaf}" if path in lora_paths else key] = value
    check_state_dict(net, mapped, may_miss=is_lora_key)
    net.load_state_dict(mapped, strict=False)
