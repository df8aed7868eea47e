"""Input embeddings of the Cosmos-Predict2 DiT: patches, timesteps and 3D RoPE angles.

They hold the official module names of net.py's `MiniTrainDiT` (`x_embedder.proj.1`,
`t_embedder.1.linear_1`, ...): net.py builds them under those attribute names, so official
checkpoint keys are unchanged. Shapes and formulas follow upstream/cosmos_predict2.md §4.5.
Cosmos-Predict1's GeneralDIT reuses the patch and timestep embeddings.
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


class RopePosition3D(nn.Module):
    """3D RoPE angles with NTK-scaled bases (upstream/cosmos_predict2.md §4.5.4); holds no state
    (official buffers are recomputed, see IGNORED_CHECKPOINT_KEYS)."""

    def __init__(
        self,
        head_dim: int,
        h_ratio: float,
        w_ratio: float,
        t_ratio: float,
        max_h: int,
        max_w: int,
        max_t: int,
    ) -> None:
        super().__init__()
        self.dim_h = self.dim_w = head_dim // 6 * 2
        self.dim_t = head_dim - 2 * self.dim_h
        self.theta_h = 10000.0 * h_ratio ** (self.dim_h / (self.dim_h - 2))
        self.theta_w = 10000.0 * w_ratio ** (self.dim_w / (self.dim_w - 2))
        self.theta_t = 10000.0 * t_ratio ** (self.dim_t / (self.dim_t - 2))
        self.max_h, self.max_w, self.max_t = max_h, max_w, max_t

    @staticmethod
    def _freqs(theta: float, dim: int, device: torch.device) -> Tensor:
        exponents = torch.arange(0, dim, 2, dtype=torch.float32, device=device) / dim
        return 1.0 / (theta**exponents)

    def angles(self, t: int, h: int, w: int, device: torch.device) -> Tensor:
        """Per-token angles [t*h*w, head_dim/2] in fp32, ordered [t-part, h-part, w-part]."""
        if h > self.max_h or w > self.max_w or t > self.max_t:
            raise ValueError(
                f"Latent grid (T={t}, H={h}, W={w}) after patching exceeds the RoPE limits "
                f"({self.max_t}, {self.max_h}, {self.max_w}); raise max_frames/max_img_h/max_img_w."
            )

        def outer(n: int, theta: float, dim: int) -> Tensor:
            pos = torch.arange(n, dtype=torch.float32, device=device)
            return torch.outer(pos, self._freqs(theta, dim, device))

        at = outer(t, self.theta_t, self.dim_t)[:, None, None, :].expand(t, h, w, -1)
        ah = outer(h, self.theta_h, self.dim_h)[None, :, None, :].expand(t, h, w, -1)
        aw = outer(w, self.theta_w, self.dim_w)[None, None, :, :].expand(t, h, w, -1)
        return torch.cat([at, ah, aw], dim=-1).reshape(t * h * w, -1)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate-half RoPE (pair i with i + d/2) on x [B, L, heads, d]; cos/sin [L, 1, d/2] fp32."""
    x1, x2 = x.float().chunk(2, dim=-1)
    out = torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)
    return out.to(x.dtype)
