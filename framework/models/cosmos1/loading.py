"""Loading official Cosmos-Predict1 checkpoints strictly (docs/upstream/cosmos_predict1.md §4.4,
§4.6). Upstream loads non-strictly and so trained from a partly random net without noticing
(§9 item 1); here every expected key must be present and every extra key is dropped by name.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from torch import Tensor, nn

from framework.models.cosmos1.net import IGNORED_CHECKPOINT_KEYS, GeneralDIT
from framework.models.dit.state_dict import check_state_dict, matches, net_state_dict

_EXTRA_POS = "extra_pos_embedder."
_SEQ = "pos_embedder.seq"


def is_ignored(key: str, ignore: Iterable[str] = ()) -> bool:
    return matches(key, (*IGNORED_CHECKPOINT_KEYS, *ignore))


def official_state_dict(
    state_dict: Mapping[str, Tensor], ema: bool = False, ignore: Iterable[str] = ()
) -> dict[str, Tensor]:
    """Keys of one network (`net.` or, with ema, `net_ema.`) with the prefix stripped and the
    ignored keys (IGNORED_CHECKPOINT_KEYS plus `ignore`) dropped. `logvar.*` and other top-level
    entries belong to the model, not the net, and are left out."""
    return net_state_dict(state_dict, ema=ema, ignore=(*IGNORED_CHECKPOINT_KEYS, *ignore))


def check_extra_pos_emb(net: nn.Module, state_dict: Mapping[str, Tensor]) -> None:
    """One clear error when the file and the net disagree on the extra position embedding
    (§9 item 1), instead of a list of missing or unexpected keys."""
    in_file = any(k.startswith(_EXTRA_POS) for k in state_dict)
    in_net = bool(getattr(net, "extra_per_block_abs_pos_emb", False))
    if in_file and not in_net:
        raise ValueError(
            "The checkpoint has a learnable extra position embedding (extra_pos_embedder.*) but "
            "the net was built with extra_per_block_abs_pos_emb=False; build it with True to use "
            "those weights, or drop them on purpose with ignore=('extra_pos_embedder.*',) as "
            "upstream's instruction post-training did."
        )
    if in_net and not in_file:
        raise ValueError(
            "The checkpoint has no extra position embedding (extra_pos_embedder.*), e.g. "
            "upstream's instruction post-trained model; build the net with "
            "extra_per_block_abs_pos_emb=False to load it."
        )


def prepare_official(
    net: nn.Module, state_dict: Mapping[str, Tensor], ema: bool = False, ignore: Iterable[str] = ()
) -> dict[str, Tensor]:
    """Stripped, filtered keys checked against `net`'s own state dict; `pos_embedder.seq` is
    filled in when the file lacks it (diffusers-converted weights)."""
    sd = official_state_dict(state_dict, ema=ema, ignore=ignore)
    check_extra_pos_emb(net, sd)
    fill_fixed_buffers(net, sd)
    check_state_dict(net, sd)
    return sd


def fill_fixed_buffers(net: nn.Module, state_dict: dict[str, Tensor]) -> None:
    """Add `pos_embedder.seq` (a fixed arange, §4.3) when a file lacks it, in place."""
    if isinstance(net, GeneralDIT) and _SEQ not in state_dict:
        state_dict[_SEQ] = net.pos_embedder.default_seq()


def load_official(
    net: nn.Module,
    state_dict: Mapping[str, Tensor],
    ema: bool = False,
    assign: bool = False,
    ignore: Iterable[str] = (),
) -> None:
    """Load an official (or our own) `net.`-prefixed or stripped state dict strictly into `net`.
    `ignore`: extra fnmatch patterns (stripped names) to drop on purpose, e.g. a run's
    `checkpoint.ignore_keys`."""
    sd = prepare_official(net, state_dict, ema=ema, ignore=ignore)
    net.load_state_dict(sd, strict=True, assign=assign)
