"""Layers every Cosmos DiT is built from: RMSNorm, the GELU MLP, adaLN-LoRA modulation heads,
q/k-normalised attention and the checkpointable unit.

Formulas follow docs/upstream/cosmos_predict2.md §4.5.6 (Predict1 and Predict2.5 use the same).
The attention here carries Predict2's official names (`q_proj`, `q_norm`, `output_proj`, ...);
Predict1 wraps the same math under its own names in its package.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from framework.models.dit.context_parallel import Layout, attention
from framework.models.dit.rope import apply_rope


class RMSNorm(nn.Module):
    """RMSNorm with a learnable scale, computed in fp32 like TE's RMSNorm (§4.5)."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        out = F.rms_norm(x.float(), (x.shape[-1],), self.weight.float(), self.eps)
        return out.to(x.dtype)


class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.layer1 = nn.Linear(dim, hidden, bias=False)
        self.activation = nn.GELU()  # exact erf GELU (§4.5.6)
        self.layer2 = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.layer2(self.activation(self.layer1(x)))


def adaln(dim: int, lora_dim: int, n: int) -> nn.Sequential:
    """adaLN-LoRA head: SiLU, D -> lora_dim, lora_dim -> n*D (official indices 1 and 2)."""
    return nn.Sequential(
        nn.SiLU(), nn.Linear(dim, lora_dim, bias=False), nn.Linear(lora_dim, n * dim, bias=False)
    )


def qk_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    rope: tuple[Tensor, Tensor] | None,
    cp: Layout | None,
) -> Tensor:
    """Attention of normalised heads [B, L, heads, d] with optional RoPE; flattened heads out."""
    if rope is not None:
        q, k = apply_rope(q, *rope), apply_rope(k, *rope)
    return attention(q, k, v, cp).flatten(2)


class Attention(nn.Module):
    """Bias-free multi-head attention with q/k RMSNorm over head_dim and no mask (§4.5.6)."""

    def __init__(
        self, query_dim: int, context_dim: int, num_heads: int, head_dim: int, eps: float = 1e-6
    ) -> None:
        super().__init__()
        inner = num_heads * head_dim
        self.num_heads, self.head_dim = num_heads, head_dim
        self.q_proj = nn.Linear(query_dim, inner, bias=False)
        self.k_proj = nn.Linear(context_dim, inner, bias=False)
        self.v_proj = nn.Linear(context_dim, inner, bias=False)
        self.q_norm = RMSNorm(head_dim, eps=eps)
        self.k_norm = RMSNorm(head_dim, eps=eps)
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
        return self.output_proj(qk_attention(q, k, v, rope, cp))


class CheckpointedUnit(nn.Module):
    """A unit of activation checkpointing, compile and FSDP2. `parallelize` sets
    `checkpoint_kwargs`; the unit checkpoints inside its own forward, so parameter and
    state-dict names stay official (no wrapper prefix). Subclasses implement `_forward`."""

    checkpoint_kwargs: dict | None = None

    def forward(self, *args: object) -> Tensor:
        if self.checkpoint_kwargs is not None and torch.is_grad_enabled():
            return checkpoint(
                self._forward,
                *args,
                use_reentrant=False,
                preserve_rng_state=False,
                **self.checkpoint_kwargs,
            )
        return self._forward(*args)

    def _forward(self, *args: object) -> Tensor:
        raise NotImplementedError
