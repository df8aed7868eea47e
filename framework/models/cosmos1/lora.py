"""LoRA on the Predict1 DiT: the shared LoRA module (framework/models/dit/lora.py) on Predict1's
names. Upstream has no LoRA for Predict1 (docs/upstream/cosmos_predict1.md addendum); the default
targets mirror the Predict2 recipe: the attention projections and the two MLP Linears."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from torch import Tensor, nn

from framework.models.cosmos1.loading import (
    check_extra_pos_emb,
    fill_fixed_buffers,
    official_state_dict,
)
from framework.models.dit import lora as _lora
from framework.models.dit.lora import (  # noqa: F401
    is_lora_key,
    lora_state_dict,
    merge_lora_state_dict,  # noqa: F401
)

DEFAULT_TARGETS = "to_q.0,to_k.0,to_v.0,to_out.0,layer1,layer2"


def apply_lora(
    net: nn.Module, rank: int = 16, alpha: float = 16, targets: str = DEFAULT_TARGETS
) -> nn.Module:
    """Inject LoRA adapters in place (base frozen, LoRA trainable in fp32, output unchanged at
    start since B is zero). `targets`: comma-separated module-name suffixes."""
    return _lora.apply_lora(net, rank, alpha, targets)


def load_base_into_lora(
    net: nn.Module, state_dict: Mapping[str, Tensor], ema: bool = False, ignore: Iterable[str] = ()
) -> None:
    """Load an official (plain-name) state dict into a LoRA-wrapped net; LoRA weights keep their
    values. Keys are checked strictly against the net's base weights."""
    sd = official_state_dict(state_dict, ema=ema, ignore=ignore)
    check_extra_pos_emb(net, sd)
    fill_fixed_buffers(net, sd)
    _lora.load_base_into_lora(net, sd)
