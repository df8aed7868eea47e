"""The layers of the Predict2.5 DiT, under the official module names.

These are the Cosmos MiniTrainDIT parts that Predict2 also has (docs/upstream/cosmos_predict2.md
§4.5; docs/upstream/cosmos_predict2_5.md §1.2 item 7). They live here, not imported from the
Predict2 family, because families do not import each other; they belong in the shared DiT layer
(framework/models/dit/, issue #23) once it exists. The Predict2.5-only piece is the fp32 island:
`fp32_linear` runs a Linear in float32 whatever the parameter and autocast dtypes (§1.2 item 5).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from framework.models.context_parallel import Layout, attention


def fp32_linear(layer: nn.Linear, x: Tensor) -> Tensor:
    """`layer(x)` in float32 with autocast off: upstream's `autocast(fp32)` regions (which upcast
    bf16 weights the same way)."""
    with torch.autocast(x.device.type, enabled=False):
        bias = None if layer.bias is None else layer.bias.float()
        return F.linear(x.float(), layer.weight.float(), bias)


class RMSNorm(nn.Module):
    """RMSNorm with a learnable scale, computed in fp32 like TransformerEngine's and returned in the
    input dtype."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        out = F.rms_norm(x.float(), (x.shape[-1],), self.weight.float(), self.eps)
        return out.to(x.dtype)


class Patchify(nn.Module):
    """b c (t r) (h m) (w n) -> b t h w (c r m n): channel is the outermost factor."""

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
        # Index 0 holds no weights; the Linear sits at the official `proj.1`.
        self.proj = nn.Sequential(
            Patchify(patch_spatial, patch_temporal), nn.Linear(n_in, dim, bias=False)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x)


class Timesteps(nn.Module):
    """Sinusoid [cos | sin] with half = dim / 2, in fp32."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, t: Tensor) -> Tensor:
        half = self.dim // 2
        k = torch.arange(half, dtype=torch.float32, device=t.device)
        angles = t.float().unsqueeze(-1) * torch.exp(-math.log(10000.0) * k / half)
        return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)


class TimestepEmbedding(nn.Module):
    """(raw sinusoid, adaLN-LoRA term [.., 3D]); with Predict2.5's fp32 strategy the MLP runs in
    fp32 (§1.2 item 5)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.linear_1 = nn.Linear(dim, dim, bias=False)
        self.activation = nn.SiLU()
        self.linear_2 = nn.Linear(dim, 3 * dim, bias=False)

    def forward(self, sample: Tensor) -> tuple[Tensor, Tensor]:
        hidden = F.silu(fp32_linear(self.linear_1, sample))
        return sample.float(), fp32_linear(self.linear_2, hidden)


class RopePosition3D(nn.Module):
    """3D RoPE angles with NTK-scaled bases (docs/upstream/cosmos_predict2_5.md §1.3). Holds no
    state: the official buffers are recomputed, so they are dropped on load."""

    def __init__(
        self,
        head_dim: int,
        ratios: tuple[float, float, float],
        max_thw: tuple[int, int, int],
    ) -> None:
        super().__init__()
        self.dim_h = self.dim_w = head_dim // 6 * 2
        self.dim_t = head_dim - 2 * self.dim_h
        h_ratio, w_ratio, t_ratio = ratios
        self.theta_h = 10000.0 * h_ratio ** (self.dim_h / (self.dim_h - 2))
        self.theta_w = 10000.0 * w_ratio ** (self.dim_w / (self.dim_w - 2))
        self.theta_t = 10000.0 * t_ratio ** (self.dim_t / (self.dim_t - 2))
        self.max_t, self.max_h, self.max_w = max_thw

    def angles(self, t: int, h: int, w: int, device: torch.device) -> Tensor:
        """Per-token angles [t*h*w, head_dim/2] in fp32, ordered [t-part, h-part, w-part]."""
        if h > self.max_h or w > self.max_w or t > self.max_t:
            raise ValueError(
                f"Latent grid (T={t}, H={h}, W={w}) after patching exceeds the RoPE limits "
                f"({self.max_t}, {self.max_h}, {self.max_w}); raise max_frames/max_img_h/max_img_w."
            )

        def outer(n: int, theta: float, dim: int) -> Tensor:
            exponents = torch.arange(0, dim, 2, dtype=torch.float32, device=device) / dim
            pos = torch.arange(n, dtype=torch.float32, device=device)
            return torch.outer(pos, 1.0 / theta**exponents)

        at = outer(t, self.theta_t, self.dim_t)[:, None, None, :].expand(t, h, w, -1)
        ah = outer(h, self.theta_h, self.dim_h)[None, :, None, :].expand(t, h, w, -1)
        aw = outer(w, self.theta_w, self.dim_w)[None, None, :, :].expand(t, h, w, -1)
        return torch.cat([at, ah, aw], dim=-1).reshape(t * h * w, -1)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate-half RoPE (pair i with i + d/2) on x [B, L, heads, d]; cos/sin [L, 1, d/2] fp32.
    Returns fp32: Predict2.5 casts q and k to fp32 before RoPE (§1.2 item 5)."""
    x1, x2 = x.float().chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


class Attention(nn.Module):
    """Bias-free multi-head attention with q/k RMSNorm (eps 1e-6) over head_dim and no mask."""

    def __init__(self, query_dim: int, context_dim: int, num_heads: int, head_dim: int) -> None:
        super().__init__()
        inner = num_heads * head_dim
        self.num_heads, self.head_dim = num_heads, head_dim
        self.q_proj = nn.Linear(query_dim, inner, bias=False)
        self.k_proj = nn.Linear(context_dim, inner, bias=False)
        self.v_proj = nn.Linear(context_dim, inner, bias=False)
        self.q_norm = RMSNorm(head_dim, eps=1e-6)
        self.k_norm = RMSNorm(head_dim, eps=1e-6)
        self.v_norm = nn.Identity()
        self.output_proj = nn.Linear(inner, query_dim, bias=False)

    def forward(
        self,
        x: Tensor,
        context: Tensor | None = None,
        rope: tuple[Tensor, Tensor] | None = None,
        cp: Layout | None = None,
    ) -> Tensor:
        """`cp`: the context-parallel layout of x's tokens (self-attention only)."""
        context = x if context is None else context
        heads = (self.num_heads, self.head_dim)
        q = self.q_norm(self.q_proj(x).unflatten(-1, heads))
        k = self.k_norm(self.k_proj(context).unflatten(-1, heads))
        v = self.v_norm(self.v_proj(context).unflatten(-1, heads))
        if rope is not None:
            # fp32 RoPE, then one rounding to the compute dtype (upstream's attention op casts).
            q, k = apply_rope(q, *rope).to(v.dtype), apply_rope(k, *rope).to(v.dtype)
        return self.output_proj(attention(q, k, v, cp).flatten(2))


class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.layer1 = nn.Linear(dim, hidden, bias=False)
        self.activation = nn.GELU()  # exact erf GELU
        self.layer2 = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.layer2(self.activation(self.layer1(x)))


def adaln(dim: int, lora_dim: int, n: int) -> nn.Sequential:
    """AdaLN-LoRA modulation: SiLU, Linear(D -> lora), Linear(lora -> n D) at indices 1, 2."""
    return nn.Sequential(
        nn.SiLU(), nn.Linear(dim, lora_dim, bias=False), nn.Linear(lora_dim, n * dim, bias=False)
    )


def modulation(layer: nn.Sequential, emb: Tensor, adaln_lora: Tensor, n: int) -> tuple[Tensor, ...]:
    """n chunks of layer(emb) + adaln_lora[..., :n D], computed in fp32 (§1.2 item 5)."""
    d = emb.shape[-1]
    hidden = fp32_linear(layer[1], F.silu(emb.float()))
    out = fp32_linear(layer[2], hidden) + adaln_lora[..., : n * d].float()
    return out.chunk(n, dim=-1)
