"""Position embeddings of the Predict1 DiT (docs/upstream/cosmos_predict1.md §4.3): 3D RoPE with
NTK-scaled bases and fps-scaled temporal positions, and the learnable extra absolute embedding
added at the start of every transformer block."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

BASE_FPS = 24.0  # temporal positions are t * BASE_FPS / fps


class VideoRopePosition3DEmb(nn.Module):
    """3D RoPE angles with NTK-scaled bases and fps-scaled temporal positions (§4.3)."""

    def __init__(
        self,
        head_dim: int,
        h_ratio: float,
        w_ratio: float,
        t_ratio: float,
        len_h: int,
        len_w: int,
        len_t: int,
    ) -> None:
        super().__init__()
        self.dim_h = self.dim_w = head_dim // 6 * 2
        self.dim_t = head_dim - 2 * self.dim_h
        self.h_ratio, self.w_ratio, self.t_ratio = h_ratio, w_ratio, t_ratio
        self.theta_h = 10000.0 * h_ratio ** (self.dim_h / (self.dim_h - 2))
        self.theta_w = 10000.0 * w_ratio ** (self.dim_w / (self.dim_w - 2))
        self.theta_t = 10000.0 * t_ratio ** (self.dim_t / (self.dim_t - 2))
        self.max_h, self.max_w, self.max_t = len_h, len_w, len_t
        self.register_buffer("seq", self.default_seq(), persistent=True)

    def default_seq(self) -> Tensor:
        """The value official files hold for `pos_embedder.seq`."""
        return torch.arange(max(self.max_h, self.max_w, self.max_t), dtype=torch.float32)

    @staticmethod
    def _freqs(theta: float, dim: int, device: torch.device) -> Tensor:
        exponents = torch.arange(0, dim, 2, dtype=torch.float32, device=device) / dim
        return 1.0 / (theta**exponents)

    def angles(self, t: int, h: int, w: int, fps: Tensor | None, device: torch.device) -> Tensor:
        """Angles [F, t*h*w, head_dim/2] fp32 ordered [t-part, h-part, w-part]; F is 1 for one
        shared fps (or None) and B for per-sample fps [B]."""
        if h > self.max_h or w > self.max_w or t > self.max_t:
            raise ValueError(
                f"Latent grid (T={t}, H={h}, W={w}) after patching exceeds the RoPE limits "
                f"({self.max_t}, {self.max_h}, {self.max_w}); raise max_frames/max_img_h/max_img_w."
            )
        pos_t = torch.arange(t, dtype=torch.float32, device=device)[None]
        if fps is not None:
            # Same operation order as upstream and diffusers (t / fps * 24), for bit-parity.
            pos_t = pos_t / fps.to(device=device, dtype=torch.float32)[:, None] * BASE_FPS
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


class LearnablePosEmbAxis(nn.Module):
    """Extra absolute position embedding: pos_t[t] + pos_h[h] + pos_w[w], RMS-normalised over
    D as x / (eps + |x| / sqrt(D)) (§4.3); computed in fp32 like diffusers keeps it."""

    def __init__(self, dim: int, len_h: int, len_w: int, len_t: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.pos_emb_h = nn.Parameter(torch.zeros(len_h, dim))
        self.pos_emb_w = nn.Parameter(torch.zeros(len_w, dim))
        self.pos_emb_t = nn.Parameter(torch.zeros(len_t, dim))

    def forward(self, t: int, h: int, w: int) -> Tensor:
        """[1, t*h*w, D] in fp32."""
        emb = (
            self.pos_emb_t[:t, None, None, :].float()
            + self.pos_emb_h[None, :h, None, :].float()
            + self.pos_emb_w[None, None, :w, :].float()
        )
        emb = emb.reshape(1, t * h * w, -1)
        norm = torch.linalg.vector_norm(emb, dim=-1, keepdim=True)
        return emb / (self.eps + norm / math.sqrt(emb.shape[-1]))
