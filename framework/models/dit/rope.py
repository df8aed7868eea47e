"""One 3D rotary position embedding for every Cosmos DiT (docs/upstream/cosmos_predict2.md §4.5.4,
cosmos_predict1.md §4.3).

Head dims split [t | h | w] with dim_h = dim_w = head_dim // 6 * 2; each axis uses an NTK-scaled
base 10000 * ratio^(dim / (dim - 2)). With `base_fps` set, temporal positions are
t * base_fps / fps (Predict1 uses 24); without it, or with fps None, they are plain frame indices.
The module holds no state: official rope buffers are recomputed (each family lists them in its
ignored keys or keeps them as buffers of a subclass).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class Rope3D(nn.Module):
    """3D RoPE angles with NTK-scaled bases and optional fps-scaled temporal positions."""

    def __init__(
        self,
        head_dim: int,
        h_ratio: float,
        w_ratio: float,
        t_ratio: float,
        max_h: int,
        max_w: int,
        max_t: int,
        base_fps: float | None = None,
    ) -> None:
        super().__init__()
        self.dim_h = self.dim_w = head_dim // 6 * 2
        self.dim_t = head_dim - 2 * self.dim_h
        self.h_ratio, self.w_ratio, self.t_ratio = h_ratio, w_ratio, t_ratio
        self.theta_h = 10000.0 * h_ratio ** (self.dim_h / (self.dim_h - 2))
        self.theta_w = 10000.0 * w_ratio ** (self.dim_w / (self.dim_w - 2))
        self.theta_t = 10000.0 * t_ratio ** (self.dim_t / (self.dim_t - 2))
        self.max_h, self.max_w, self.max_t = max_h, max_w, max_t
        self.base_fps = base_fps

    @staticmethod
    def _freqs(theta: float, dim: int, device: torch.device) -> Tensor:
        exponents = torch.arange(0, dim, 2, dtype=torch.float32, device=device) / dim
        return 1.0 / (theta**exponents)

    def angles(
        self, t: int, h: int, w: int, device: torch.device, fps: Tensor | None = None
    ) -> Tensor:
        """Angles [F, t*h*w, head_dim/2] in fp32, ordered [t-part, h-part, w-part]. F is 1 unless
        `fps` holds one value per sample ([B]) and the embedding scales time by fps."""
        if h > self.max_h or w > self.max_w or t > self.max_t:
            raise ValueError(
                f"Latent grid (T={t}, H={h}, W={w}) after patching exceeds the RoPE limits "
                f"({self.max_t}, {self.max_h}, {self.max_w}); raise max_frames/max_img_h/max_img_w."
            )
        pos_t = torch.arange(t, dtype=torch.float32, device=device)[None]
        if fps is not None and self.base_fps is not None:
            # Same operation order as upstream and diffusers (t / fps * 24), for bit-parity.
            fps = fps.to(device=device, dtype=torch.float32).reshape(-1)
            pos_t = pos_t / fps[:, None] * self.base_fps
        at = pos_t[..., None] * self._freqs(self.theta_t, self.dim_t, device)  # [F, t, dt/2]
        ah = torch.outer(
            torch.arange(h, dtype=torch.float32, device=device),
            self._freqs(self.theta_h, self.dim_h, device),
        )
        aw = torch.outer(
            torch.arange(w, dtype=torch.float32, device=device),
            self._freqs(self.theta_w, self.dim_w, device),
        )
        n = at.shape[0]
        at = at[:, :, None, None, :].expand(n, t, h, w, -1)
        ah = ah[None, None, :, None, :].expand(n, t, h, w, -1)
        aw = aw[None, None, None, :, :].expand(n, t, h, w, -1)
        return torch.cat([at, ah, aw], dim=-1).reshape(n, t * h * w, -1)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate-half RoPE (pair i with i + d/2) on x [B, L, heads, d]; cos/sin [L, 1, d/2] or
    [B, L, 1, d/2], fp32."""
    x1, x2 = x.float().chunk(2, dim=-1)
    out = torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)
    return out.to(x.dtype)
