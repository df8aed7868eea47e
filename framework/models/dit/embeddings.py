"""Input embeddings shared by the Cosmos DiTs: patches and timesteps.

Every family builds them under its official attribute names (`x_embedder.proj.1`,
`t_embedder.1.linear_1`, ...), so official checkpoint keys are unchanged. Shapes and formulas
follow docs/upstream/cosmos_predict2.md §4.5 (Predict1's GeneralDIT and Predict2.5 use the same).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class Patchify(nn.Module):
    """b c (t r) (h m) (w n) -> b t h w (c r m n): channel is the outermost factor
    (upstream/cosmos_predict2.md §4.5.3)."""

    def __init__(self, patch_spatial: int, patch_temporal: int) -> None:
        super().__init__()
        self.p, self.pt = patch_spatial, patch_temporal

    def forward(self, x: Tensor) -> Tensor:
        b, c, t, h, w = x.shape
        p, pt = self.p, self.pt
        x = x.view(b, c, t // pt, pt, h // p, p, w // p, p)
        return x.permute(0, 2, 4, 6, 1, 3, 5, 7).reshape(b, t // pt, h // p, w // p, c * pt * p * p)


class PatchEmbed(nn.Module):
    def __init__(self, in_channels: int, dim: int, patch_spatial: int, patch_temporal: int):
        super().__init__()
        n_in = in_channels * patch_spatial * patch_spatial * patch_temporal
        # Index 0 holds no weights; the Linear must sit at `proj.1` (official key).
        self.proj = nn.Sequential(
            Patchify(patch_spatial, patch_temporal), nn.Linear(n_in, dim, bias=False)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x)


class Timesteps(nn.Module):
    """Sinusoid [cos | sin] (cos first, upstream/cosmos_predict2.md §4.5.5), fp32."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, t: Tensor) -> Tensor:
        half = self.dim // 2
        k = torch.arange(half, dtype=torch.float32, device=t.device)
        freqs = torch.exp(-math.log(10000.0) * k / half)
        angles = t.float().unsqueeze(-1) * freqs
        return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)


class TimestepEmbedding(nn.Module):
    """Returns (raw sinusoid, adaLN-LoRA term [.., 3D]) as upstream does with adaln-lora on."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.linear_1 = nn.Linear(dim, dim, bias=False)
        self.activation = nn.SiLU()
        self.linear_2 = nn.Linear(dim, 3 * dim, bias=False)

    def forward(self, sample: Tensor) -> tuple[Tensor, Tensor]:
        return sample, self.linear_2(self.activation(self.linear_1(sample)))
