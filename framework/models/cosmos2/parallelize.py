"""Predict2's parallelize: the shared one (framework/models/dit/parallelize.py) on every block.
Kept as a module so existing imports and configs resolve."""

from framework.models.dit.parallelize import (  # noqa: F401
    CHECKPOINT_MODES,
    SDPA_OPS,
    checkpoint_kwargs,
    parallelize_net,
    shard,
)
