"""Predict1's parallelize: the shared one (framework/models/dit/parallelize.py) on every FA/CA/MLP
sub-block (the class upstream FSDP-wraps, docs/upstream/cosmos_predict1.md §4.1; GeneralDIT.units).
Under "selective" checkpointing an MLP sub-block, which has no attention, is recomputed whole, as
upstream always recomputes GELU + layer2. Kept as a module so existing imports resolve."""

from framework.models.dit.parallelize import parallelize_net  # noqa: F401
