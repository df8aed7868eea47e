"""Loading official Cosmos-Predict2 checkpoints strictly (upstream/cosmos_predict2.md §4.7,
upstream/peers.md §b.5): the shared state-dict rules with Predict2's ignored keys."""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor, nn

from framework.models.cosmos2.net import IGNORED_CHECKPOINT_KEYS
from framework.models.dit.state_dict import check_state_dict, load_strict, matches, net_state_dict

__all__ = ["check_state_dict", "is_ignored", "load_official", "official_state_dict"]


def is_ignored(key: str) -> bool:
    return matches(key, IGNORED_CHECKPOINT_KEYS)


def official_state_dict(state_dict: Mapping[str, Tensor], ema: bool = False) -> dict[str, Tensor]:
    """Keys of one network (`net.` or, with ema, `net_ema.`) with the prefix stripped and the
    ignored keys dropped."""
    return net_state_dict(state_dict, ema=ema, ignore=IGNORED_CHECKPOINT_KEYS)


def load_official(
    net: nn.Module, state_dict: Mapping[str, Tensor], ema: bool = False, assign: bool = False
) -> None:
    """Load an official (or our own) `net.`-prefixed state dict strictly into `net`."""
    load_strict(net, state_dict, ema=ema, assign=assign, ignore=IGNORED_CHECKPOINT_KEYS)
