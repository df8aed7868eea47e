"""Old import path of framework/models/dit/parallelize.py (kept so existing imports resolve)."""

from framework.models.dit.parallelize import *  # noqa: F401,F403
from framework.models.dit.parallelize import SDPA_OPS, checkpoint_kwargs, shard  # noqa: F401
