"""Predict2's FLOPs: the shared MinimalDiT count (framework/models/dit/flops.py)."""

from framework.models.dit.flops import flops_per_sample, forward_flops  # noqa: F401
