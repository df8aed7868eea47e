"""Key renames: official Predict2.5 names <-> diffusers' `CosmosTransformer3DModel`: the shared
MinimalDiT table (framework/models/dit/diffusers_keys.py); `crossattn_proj.0.*` keeps its name
(docs/upstream/cosmos_predict2_5.md §7)."""

from framework.models.dit.diffusers_keys import (  # noqa: F401
    diffusers_to_official,
    official_to_diffusers,
)
