"""Strict loading of official Predict2.5 files (docs/upstream/cosmos_predict2_5.md §1.5): the
net's keys must match exactly after the documented ignored keys are dropped; anything else fails
and is named. (The shared state-dict module of issue #23 is where this belongs.)"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Mapping

from torch import Tensor, nn

from framework.models.cosmos2_5.net import IGNORED_CHECKPOINT_KEYS

_PREFIXES = ("net.", "net_ema.")


def is_ignored(key: str) -> bool:
    return any(fnmatch.fnmatchcase(key, pat) for pat in IGNORED_CHECKPOINT_KEYS)


def official_state_dict(state_dict: Mapping[str, Tensor], ema: bool = False) -> dict[str, Tensor]:
    """One network's keys (`net.`, or `net_ema.` with ema) without the prefix and without the
    ignored keys. A dict without either prefix is taken as already stripped."""
    prefix = "net_ema." if ema else "net."
    has_prefix = any(k.startswith(_PREFIXES) for k in state_dict)
    if has_prefix and not any(k.startswith(prefix) for k in state_dict):
        hint = "; EMA was off in that run, load without ema." if ema else "."
        raise ValueError(f"The checkpoint has no {prefix!r} keys{hint}")
    out = {}
    for key, value in state_dict.items():
        if has_prefix:
            if not key.startswith(prefix):
                continue  # the other network of a training checkpoint
            key = key[len(prefix) :]
        if not is_ignored(key):
            out[key] = value
    return out


def check_state_dict(
    net: nn.Module,
    state_dict: Mapping[str, Tensor],
    may_miss: Callable[[str], bool] = lambda key: False,
) -> None:
    """Raise one error naming the missing, unexpected and wrongly shaped keys."""
    expected = net.state_dict()
    missing = [k for k in expected if k not in state_dict and not may_miss(k)]
    unexpected = [k for k in state_dict if k not in expected]
    wrong = [
        f"{k} {tuple(state_dict[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state_dict and state_dict[k].shape != v.shape
    ]
    if not (missing or unexpected or wrong):
        return

    def few(keys: list[str]) -> str:
        return ", ".join(keys[:5]) + (f" (+{len(keys) - 5} more)" if len(keys) > 5 else "")

    parts = [
        f"{len(missing)} missing: {few(missing)}" if missing else "",
        f"{len(unexpected)} unexpected: {few(unexpected)}" if unexpected else "",
        f"{len(wrong)} with wrong shape: {few(wrong)}" if wrong else "",
    ]
    raise ValueError(
        f"Checkpoint does not match the Predict2.5 network ({'; '.join(p for p in parts if p)}); "
        "check that the model size in the config matches the checkpoint."
    )


def load_official(
    net: nn.Module, state_dict: Mapping[str, Tensor], ema: bool = False, assign: bool = False
) -> None:
    """Load an official (or our own) `net.`-prefixed state dict strictly into `net`."""
    sd = official_state_dict(state_dict, ema=ema)
    check_state_dict(net, sd)
    net.load_state_dict(sd, strict=True, assign=assign)
