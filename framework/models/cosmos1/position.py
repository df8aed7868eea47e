"""Position embeddings of the Predict1 DiT (docs/upstream/cosmos_predict1.md §4.3): 3D RoPE with
NTK-scaled bases and fps-scaled temporal positions, and the learnable extra absolute embedding
added at the start of every transformer block."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from framework.models.dit.rope import Rope3D

BASE_FPS = 24.0  # temporal positions are t * BASE_FPS / fps


class VideoRopePosition3DEmb(Rope3D):
    """The shared 3D RoPE with fps-scaled temporal positions (§4.3), plus the `seq` buffer that
    official files carry (kept so our checkpoints keep the official layout; positions are
    computed from arange, equal values)."""

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
        super().__init__(head_dim, h_ratio, w_ratio, t_ratio, len_h, len_w, len_t, BASE_FPS)
        self.register_buffer("seq", self.default_seq(), persistent=True)

    def default_seq(self) -> Tensor:
        """The value official files hold for `pos_embedder.seq`."""
        return torch.arange(max(self.max_h, self.max_w, self.max_t), dtype=torch.float32)


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
