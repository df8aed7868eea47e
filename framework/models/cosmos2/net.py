"""Cosmos-Predict2 Video2World DiT (upstream `MinimalV1LVGDiT`) with the official module names.

The network itself is the shared `MinimalDiT` (framework/models/dit/minimal.py); this module
holds what is Predict2's: its official sizes and the checkpoint keys it ignores. Every parameter
name equals the official checkpoint key after stripping `net.` (upstream/cosmos_predict2.md §4.7).
"""

from __future__ import annotations

from framework.models.dit.layers import MLP, Attention, RMSNorm  # noqa: F401  (old import path)
from framework.models.dit.minimal import Block, FinalLayer, MinimalDiT  # noqa: F401

# Official rope buffers, training counters and TransformerEngine extra state
# (upstream/cosmos_predict2.md §4.7): carried by official files, recomputed or unused here.
IGNORED_CHECKPOINT_KEYS: tuple[str, ...] = (
    "pos_embedder.seq",
    "pos_embedder.dim_spatial_range",
    "pos_embedder.dim_temporal_range",
    "accum_video_sample_counter",
    "accum_image_sample_counter",
    "accum_iteration",
    "accum_train_in_hours",
    "*._extra_state",
)

# upstream/cosmos_predict2.md §4.4. "0.6B" exists upstream only as Text2Image; its Video2World form
# here (same sizes, 18 input channels) serves small runs, with the T2I rope ratios.
SIZES: dict[str, dict] = {
    "0.6B": dict(
        model_channels=1280,
        num_blocks=20,
        num_heads=20,
        rope_h_extrapolation_ratio=4.0,
        rope_w_extrapolation_ratio=4.0,
        rope_t_extrapolation_ratio=1.0,
    ),
    "2B": dict(
        model_channels=2048,
        num_blocks=28,
        num_heads=16,
        rope_h_extrapolation_ratio=3.0,
        rope_w_extrapolation_ratio=3.0,
        rope_t_extrapolation_ratio=1.0,
    ),
    "14B": dict(
        model_channels=5120,
        num_blocks=36,
        num_heads=40,
        rope_h_extrapolation_ratio=2.0,
        rope_w_extrapolation_ratio=2.0,
        rope_t_extrapolation_ratio=20.0 / 24.0,
    ),
}


def net_config(size: str) -> dict:
    """Constructor kwargs of `MiniTrainDiT` for an official size ("0.6B", "2B", "14B")."""
    if size not in SIZES:
        raise ValueError(f"Unknown Cosmos-Predict2 size {size!r}; use one of {sorted(SIZES)}.")
    return dict(SIZES[size])


class MiniTrainDiT(MinimalDiT):
    """Predict2 Video2World DiT: `MinimalDiT` as released (§4.4); the Predict2 family's net."""
