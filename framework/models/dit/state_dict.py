"""State dicts in the official layout, for every loader, export and merge.

A model checkpoint holds the net under `net.` (and its EMA under `net_ema.`), plus the model's
extra trainable modules at the top level (e.g. Predict1's `logvar.`). Official files load
strictly: every key the net expects must be there, extra keys are dropped only by name
(a family's ignored keys), never silently.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable, Mapping

from torch import Tensor, nn

NET, NET_EMA = "net.", "net_ema."
PREFIXES = (NET, NET_EMA)


def matches(key: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(key, p) for p in patterns)


def net_state_dict(
    state_dict: Mapping[str, Tensor], ema: bool = False, ignore: Iterable[str] = ()
) -> dict[str, Tensor]:
    """Keys of one network (`net.` or, with ema, `net_ema.`) with the prefix stripped and the
    keys matching `ignore` (fnmatch patterns on stripped names) dropped. Other top-level entries
    (`logvar.*`, the other network) are left out. A dict without either prefix is taken as
    already stripped."""
    ignore = tuple(ignore)
    prefix = NET_EMA if ema else NET
    has_prefix = any(k.startswith(PREFIXES) for k in state_dict)
    if has_prefix and not any(k.startswith(prefix) for k in state_dict):
        raise ValueError(
            f"The checkpoint has no {prefix!r} keys"
            + ("; EMA was off in that run, load without ema." if ema else ".")
        )
    out = {}
    for key, value in state_dict.items():
        if has_prefix:
            if not key.startswith(prefix):
                continue
            key = key[len(prefix) :]
        if not matches(key, ignore):
            out[key] = value
    return out


def split_top(
    state_dict: Mapping[str, Tensor],
    tops: Iterable[str],
    ema: bool = False,
    is_extra: Callable[[str], bool] = lambda key: False,
) -> dict[str, dict[str, Tensor]]:
    """{top-level module name: its keys without the prefix} for the modules `tops` (`net` first),
    taking `<top>_ema.` instead of `<top>.` with ema. Keys of no top that `is_extra` does not
    accept raise; a dict with no known top is a bare net state dict."""
    tops = tuple(tops)
    heads = {*tops, *(f"{t}_ema" for t in tops)}
    if not any(k.partition(".")[0] in heads for k in state_dict):
        return {tops[0]: dict(state_dict)}
    parts: dict[str, dict[str, Tensor]] = {t: {} for t in tops}
    unknown = []
    for key, value in state_dict.items():
        head, _, rest = key.partition(".")
        if head in heads:
            if head.endswith("_ema") == ema:
                parts[head.removesuffix("_ema")][rest] = value
        elif not is_extra(key):
            unknown.append(key)
    if unknown:
        raise ValueError(
            f"the checkpoint has keys that belong to no part of this model "
            f"({', '.join(unknown[:3])}{' ...' if len(unknown) > 3 else ''}); use the "
            "experiment the checkpoint was made with."
        )
    if not parts[tops[0]]:
        hint = "EMA was off in that run; load without EMA." if ema else "pass a model file."
        raise ValueError(f"the checkpoint has no {tops[0]}{'_ema' if ema else ''}.* keys; {hint}")
    return parts


def check_state_dict(
    net: nn.Module,
    state_dict: Mapping[str, Tensor],
    may_miss: Callable[[str], bool] = lambda key: False,
) -> None:
    """Raise one clear error when keys or shapes differ from the net's own state dict."""
    expected = net.state_dict()
    missing = [k for k in expected if k not in state_dict and not may_miss(k)]
    unexpected = [k for k in state_dict if k not in expected]
    wrong = [
        f"{k} {tuple(state_dict[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state_dict and state_dict[k].shape != v.shape
    ]
    if missing or unexpected or wrong:

        def few(keys: list[str]) -> str:
            return ", ".join(keys[:5]) + (f" (+{len(keys) - 5} more)" if len(keys) > 5 else "")

        parts = [
            f"{len(missing)} missing: {few(missing)}" if missing else "",
            f"{len(unexpected)} unexpected: {few(unexpected)}" if unexpected else "",
            f"{len(wrong)} with wrong shape: {few(wrong)}" if wrong else "",
        ]
        detail = "; ".join(p for p in parts if p)
        raise ValueError(
            f"Checkpoint does not match the network ({detail}); check that the "
            "model size in the config matches the checkpoint."
        )


def load_strict(
    net: nn.Module,
    state_dict: Mapping[str, Tensor],
    ema: bool = False,
    assign: bool = False,
    ignore: Iterable[str] = (),
) -> None:
    """Load a `net.`-prefixed or stripped state dict strictly into `net`, dropping `ignore`."""
    sd = net_state_dict(state_dict, ema=ema, ignore=ignore)
    check_state_dict(net, sd)
    net.load_state_dict(sd, strict=True, assign=assign)
