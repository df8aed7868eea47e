"""Old import path of framework/models/dit/context_parallel.py (kept so imports resolve)."""

from framework.models.dit.context_parallel import *  # noqa: F401,F403
from framework.models.dit.context_parallel import (  # noqa: F401
    ContextParallel,
    Layout,
    attention,
    context_parallel_of,
    split_sizes,
)
