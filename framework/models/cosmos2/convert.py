"""Predict2's key renames to diffusers: the shared MinimalDiT table
(framework/models/dit/diffusers_keys.py)."""

from framework.models.dit.diffusers_keys import (  # noqa: F401
    diffusers_config,
    diffusers_to_official,
    official_to_diffusers,
)
