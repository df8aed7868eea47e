"""Captions longer than the text length a dataset or model keeps are cut; say so, once.

The dataset pads or cuts each caption embedding to `data.dataset.max_text_tokens` and the model
fits every embedding to `model.max_text_tokens` (docs/data.md, "T5 pickle format"): tokens past
those are dropped. Both call `warn_cut` with the true token counts they saw; the first time any is
over the limit, one warning says how many, the longest, and which keys raise the length.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import torch

log = logging.getLogger(__name__)
RAISE = (
    "raise data.dataset.max_text_tokens and model.max_text_tokens together (at most 512, the "
    "length T5 pickles are capped at; a trained model keeps the length it was trained with)"
)
_warned: set[str] = set()
_calls: dict[str, int] = {}
CHECKED_CALLS = 20


def warn_cut(lengths: Iterable[int], limit: int, where: str) -> int:
    """Warn once per `where` when any of `lengths` (true token counts) exceeds `limit`; returns
    how many do."""
    lengths = [int(n) for n in lengths]
    over = [n for n in lengths if n > limit]
    if over and where not in _warned:
        _warned.add(where)
        log.warning(
            "%d of %d captions in %s have more than %d tokens (the longest %d) and are cut to %d; "
            "%s.",
            len(over),
            len(lengths),
            where,
            limit,
            max(over),
            limit,
            RAISE,
        )
    return len(over)


def check_embeddings(
    emb: torch.Tensor, limit: int, where: str, lengths: torch.Tensor | None = None
) -> None:
    """`warn_cut` for zero-padded [B, N, D] embeddings about to be fit to `limit` rows (true
    `lengths` when the encoder gave them). Looked at only while it can matter (N > limit) and for
    the first `CHECKED_CALLS` calls per `where`: counting reads back from the GPU, a sync a
    training step must not pay for long."""
    if emb.shape[1] <= limit or where in _warned or _calls.get(where, 0) >= CHECKED_CALLS:
        return
    _calls[where] = _calls.get(where, 0) + 1
    warn_cut(lengths.tolist() if lengths is not None else token_counts(emb), limit, where)


def token_counts(emb: torch.Tensor) -> list[int]:
    """True lengths of zero-padded [B, N, D] embeddings: up to each item's last non-zero row."""
    nonzero = emb.detach().abs().sum(-1) > 0  # [B, N]
    last = torch.arange(1, emb.shape[1] + 1, device=emb.device) * nonzero
    return [int(n) for n in last.max(dim=1).values.tolist()]
