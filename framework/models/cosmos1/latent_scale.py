"""The latent scale of Cosmos-Predict1: the diffusion model sees the tokenizer's normalised latent
times sigma_data = 0.5 and decodes after dividing by it (docs/upstream/cosmos_predict1.md §3.2).

Why a tokenizer wrapper and not the objective: the generic model wrapper encodes the condition
frames, runs the sampler and decodes its result with the same tokenizer, and the latent cache
stores what `encode` returns. With the factor inside `encode`/`decode`, every one of them works
in the diffusion model's coordinates, in which the sampler's noise levels (80 ... 0.0002) are
upstream's. Inside the objective the sampler's state would be in one space and the decoded latent
in another.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from framework.models.tokenizers import _TokenizerBase, config_compression


class ScaledTokenizer(_TokenizerBase):
    """`tokenizer` with encode(x) = (z - shift) * scale and decode inverting it; everything else
    delegated. `scale` and `shift` are one number or one per latent channel (a pixel tokenizer
    has no normalisation of its own: tiny_bridge centres and scales its pixels here, as the
    CV8x8x8 tokenizer's mean_std does for its latents). The identity names both, so a latent
    cache of another normalisation is not reused."""

    def __init__(
        self,
        tokenizer: _TokenizerBase,
        scale: float | Sequence[float] = 0.5,
        shift: float | Sequence[float] = 0.0,
    ) -> None:
        super().__init__()
        self.inner = tokenizer
        self.latent_channels = tokenizer.latent_channels
        self.spatial_compression = tokenizer.spatial_compression
        self.temporal_compression = tokenizer.temporal_compression
        self.scale = self._per_channel(scale, "scale")
        self.shift = self._per_channel(shift, "shift")
        if not bool((self.scale > 0).all()):
            raise ValueError(f"latent scale must be positive, got {scale}; use 0.5 (sigma_data).")
        values = [*self.scale.flatten().tolist(), *self.shift.flatten().tolist()]
        self.identity = f"{tokenizer.identity}-x" + ",".join(f"{v:.6g}" for v in values)

    @classmethod
    def compression_for(cls, node: Mapping) -> tuple[int, int] | None:
        return config_compression(node.get("tokenizer"))

    def _per_channel(self, value: float | Sequence[float], name: str) -> Tensor:
        t = torch.as_tensor(value, dtype=torch.float32, device="cpu").reshape(-1)
        if t.numel() not in (1, self.latent_channels):
            raise ValueError(
                f"latent {name} has {t.numel()} values; give one, or one per latent channel "
                f"({self.latent_channels})."
            )
        return t.view(1, -1, 1, 1, 1)

    @property
    def causal(self) -> bool:
        # A per-channel affine map of each latent frame keeps the inner tokenizer's causality;
        # without this the base class's False made Predict1 generation encode the whole padded
        # clip (WorldModel._encode_condition).
        return self.inner.causal

    def place(self, device: torch.device | str) -> None:
        self.inner.place(device)

    @torch.no_grad()
    def encode(self, video: Tensor) -> Tensor:
        z = self.inner.encode(video)
        return (z - self.shift.to(z.device)) * self.scale.to(z.device)

    @torch.no_grad()
    def decode(self, latent: Tensor) -> Tensor:
        z = latent / self.scale.to(latent.device) + self.shift.to(latent.device)
        return self.inner.decode(z)


def cv8x8x8_tokenizer(path: str | None, scale: float = 0.5, **kwargs) -> ScaledTokenizer:
    """Cosmos-Tokenize1-CV8x8x8 (framework/models/cosmos1/tokenizer.py) scaled by sigma_data:
    the Predict1 tokenizer block, so that `model.tokenizer.path` names the weights folder."""
    from framework.models.cosmos1.tokenizer import CosmosCV8x8x8Tokenizer

    return ScaledTokenizer(CosmosCV8x8x8Tokenizer(path, **kwargs), scale)


def _cv8x8x8_compression(node: Mapping) -> tuple[int, int]:
    from framework.models.cosmos1.tokenizer import CosmosCV8x8x8Tokenizer

    return CosmosCV8x8x8Tokenizer.compression_for(node)


# What framework.models.tokenizers.config_compression asks of a tokenizer target.
cv8x8x8_tokenizer.compression_for = _cv8x8x8_compression
