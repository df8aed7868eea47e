"""LoRA on the Predict2 DiT: the shared LoRA module (framework/models/dit/lora.py) with
Predict2's upstream targets (upstream/cosmos_predict2.md §4.8)."""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor, nn

from framework.models.cosmos2.loading import official_state_dict
from framework.models.dit import lora as _lora
from framework.models.dit.lora import (  # noqa: F401
    is_lora_key,
    lora_state_dict,
    merge_lora_state_dict,  # noqa: F401
)

DEFAULT_TARGETS = "q_proj,k_proj,v_proj,output_proj,mlp.layer1,mlp.layer2"


def apply_lora(
    net: nn.Module, rank: int = 16, alpha: float = 16, targets: str = DEFAULT_TARGETS
) -> nn.Module:
    return _lora.apply_lora(net, rank, alpha, targets)


def load_base_into_lora(
    net: nn.Module, state_dict: Mapping[str, Tensor], ema: bool = False
) -> None:
    _lora.load_base_into_lora(net, official_state_dict(state_dict, ema=ema))
