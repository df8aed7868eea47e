"""Context parallel (CP) for video DiTs: one sample's latent frames split across a process group.

Facts and options: docs/upstream/context_parallel.md; token arithmetic:
docs/upstream/cosmos_predict2.md §4.8c. What a net does with it (both families):

- Split: whole latent frames (after the temporal patch). Rank r of C takes a consecutive run of
  frames; when C does not divide T the first T % C ranks take one frame more (T = 5 on 2 ranks:
  3 + 2). A frame is the unit of Predict2's adaLN modulation and of RoPE's t axis, so a rank
  slices the per-frame tables of the whole video and its tokens keep their global (t, h, w)
  positions. Upstream splits latent T too (§4.8c), but needs C to divide T.
- Self-attention: Ulysses. One all-to-all turns [B, L_r, H, d] (this rank's tokens, all heads)
  into [B, L, H/C, d] (all tokens, this rank's heads), q, k and v in one message; attention is
  then one plain full-sequence SDPA call (so the cuDNN/flash kernels run unchanged), and a second
  all-to-all brings the output back. Exact: attention is independent per head.
- Fallback when C does not divide the heads: every rank all-gathers K and V (the whole sequence)
  and attends with its own queries; exact too (no mask, no causality). Its backward all-reduces
  the K/V gradients, so it moves C times more than Ulysses: pick C among the divisors of the
  heads (16 for 2B, 40 for 14B) where it matters.
- Cross-attention, MLP, norms, embeddings: local, no communication (text K/V are replicated).
- Output: gathered along frames at the end of the net. Every rank holds the whole prediction, so
  objectives, losses and samplers run unchanged and see identical tensors on every rank.

Gradients. Every rank computes the same loss from the gathered output, and each rank's parameter
gradients hold only its own tokens' share: the true gradient is their sum over the CP group.
The trainer's data-parallel reduction (FSDP2's reduce-scatter/all-reduce or DDP's all-reduce)
averages over every rank of the world, CP ranks included. So the backward of the output gather
multiplies by C: the world average then equals the sum over CP ranks, averaged over data-parallel
groups. Trainable state outside the net (Predict1's logvar head) is computed identically on every
rank and needs no factor. A CP net's gradients are therefore meant to be averaged over its group.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor


def split_sizes(n: int, parts: int) -> tuple[int, ...]:
    """n items over `parts` ranks in consecutive runs; the first n % parts take one more."""
    base, extra = divmod(n, parts)
    return tuple(base + (r < extra) for r in range(parts))


def context_parallel_of(group: dist.ProcessGroup | None) -> ContextParallel | None:
    """A ContextParallel over `group`; None (CP off) for no group or a group of one."""
    if group is None or dist.get_world_size(group) == 1:
        return None
    return ContextParallel(group)


class ContextParallel:
    """A CP process group; `layout(frames, tokens_per_frame)` describes one forward's split."""

    def __init__(self, group: dist.ProcessGroup) -> None:
        self.group = group
        self.size = dist.get_world_size(group)
        self.rank = dist.get_rank(group)
        # One Layout per shape, so a compiled block sees the same object every step (no
        # recompilation from a guard on a fresh argument).
        self._layouts: dict[tuple[int, int], Layout] = {}

    def layout(self, frames: int, tokens_per_frame: int) -> Layout:
        if frames < self.size:
            raise ValueError(
                f"context parallel over {self.size} processes splits latent frames, but this "
                f"input has {frames}; use at most {frames} processes for context parallel."
            )
        key = (frames, tokens_per_frame)
        if key not in self._layouts:
            self._layouts[key] = Layout(self, split_sizes(frames, self.size), tokens_per_frame)
        return self._layouts[key]


@dataclass(frozen=True, eq=False)
class Layout:
    """How the tokens of one forward lie across the CP group: latent frames per rank (in rank
    order) and tokens per frame."""

    cp: ContextParallel
    frames: tuple[int, ...]
    tokens_per_frame: int

    @property
    def start(self) -> int:
        """This rank's first frame."""
        return sum(self.frames[: self.cp.rank])

    @property
    def count(self) -> int:
        """This rank's number of frames."""
        return self.frames[self.cp.rank]

    @property
    def lengths(self) -> list[int]:
        """Tokens per rank, in rank order."""
        return [f * self.tokens_per_frame for f in self.frames]

    def local(self, x: Tensor, dim: int, per: int = 1) -> Tensor:
        """This rank's part of a whole-video tensor whose `dim` holds `per` entries per latent
        frame (a per-frame table: 1; pixels of a temporal patch: patch_t; tokens: h*w)."""
        return x.narrow(dim, self.start * per, self.count * per)

    def gather(self, x: Tensor, dim: int, per: int = 1) -> Tensor:
        """Every rank's part of `x` along `dim`, concatenated (inverse of `local`); its backward
        keeps this rank's slice of the gradient times C (module docstring: Gradients)."""
        return _GatherFrames.apply(x, self, dim, per)

    @torch.compiler.disable  # collectives: a clean graph break inside a compiled block
    def attention(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """Exact self-attention over the whole sequence for this rank's queries.
        q, k, v: [B, L_r, H, d] (RoPE applied); returns [B, L_r, H, d]."""
        heads = q.shape[2]
        if heads % self.cp.size == 0:  # Ulysses
            q, k, v = (t.transpose(1, 2) for t in _AllToAll.apply(self, True, q, k, v))
            out = F.scaled_dot_product_attention(q, k, v)  # [B, H/C, L, d]
            return _AllToAll.apply(self, False, out.transpose(1, 2))[0]
        k, v = (t.transpose(1, 2) for t in _GatherTokens.apply(self, k, v))
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k, v)
        return out.transpose(1, 2)

    # ---- the collectives (called by the autograd functions below) -------------------------

    def seq_to_heads(self, tensors: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        """N tensors [B, L_r, H, d] -> [B, L, H/C, d] each, in one all-to-all."""
        c, lengths = self.cp.size, self.lengths
        b, lr, h, d = tensors[0].shape
        n, hc = len(tensors), h // c
        # Send buffer [C, N, B, L_r, H/C, d]: chunk j holds head group j of every tensor.
        send = tensors[0].new_empty(c, n, b, lr, hc, d)
        for i, t in enumerate(tensors):
            send[:, i].copy_(t.reshape(b, lr, c, hc, d).permute(2, 0, 1, 3, 4))
        unit = n * b * hc * d
        recv = send.new_empty(unit * sum(lengths))
        dist.all_to_all_single(
            recv, send.view(-1), [unit * n_i for n_i in lengths], [unit * lr] * c, self.cp.group
        )
        # Source i sent [N, B, L_i, H/C, d]; sources in rank order are the sequence in order.
        parts = [
            p.view(n, b, n_i, hc, d)
            for p, n_i in zip(recv.split([unit * n_i for n_i in lengths]), lengths)
        ]
        # One fresh tensor per input (not views of one buffer: autograd.Function outputs).
        return tuple(torch.cat([p[i] for p in parts], dim=1) for i in range(n))

    def heads_to_seq(self, tensors: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        """N tensors [B, L, H/C, d] -> [B, L_r, H, d] each, in one all-to-all."""
        c, lengths = self.cp.size, self.lengths
        b, _, hc, d = tensors[0].shape
        n, lr = len(tensors), lengths[self.cp.rank]
        unit = n * b * hc * d
        # Send buffer: for each destination i in rank order, [N, B, L_i, H/C, d] of its tokens.
        send = tensors[0].new_empty(unit * sum(lengths))
        offset, start = 0, 0
        for n_i in lengths:
            chunk = send[offset : offset + unit * n_i].view(n, b, n_i, hc, d)
            for j, t in enumerate(tensors):
                chunk[j].copy_(t[:, start : start + n_i])
            offset, start = offset + unit * n_i, start + n_i
        recv = send.new_empty(unit * lr * c)
        dist.all_to_all_single(
            recv, send, [unit * lr] * c, [unit * n_i for n_i in lengths], self.cp.group
        )
        # From source j: head group j of this rank's tokens -> [N, B, L_r, C, H/C, d].
        out = recv.view(c, n, b, lr, hc, d).permute(1, 2, 3, 0, 4, 5)
        return tuple(out[i].reshape(b, lr, c * hc, d) for i in range(n))

    def all_gather(self, x: Tensor, dim: int, sizes: list[int]) -> Tensor:
        """Concatenate every rank's `x` along `dim` (rank r contributes sizes[r] entries);
        parts are padded to the largest so one equal-size all-gather serves uneven splits."""
        longest = max(sizes)
        x = x.contiguous()
        if x.shape[dim] < longest:
            pad = list(x.shape)
            pad[dim] = longest - x.shape[dim]
            x = torch.cat([x, x.new_zeros(pad)], dim=dim)
        parts = [torch.empty_like(x) for _ in sizes]
        dist.all_gather(parts, x, group=self.cp.group)
        return torch.cat([p.narrow(dim, 0, s) for p, s in zip(parts, sizes)], dim=dim)


class _AllToAll(torch.autograd.Function):
    """Ulysses' exchange; each direction's backward is the other direction."""

    @staticmethod
    def forward(ctx, layout: Layout, to_heads: bool, *tensors: Tensor) -> tuple[Tensor, ...]:
        ctx.layout, ctx.to_heads = layout, to_heads
        fn = layout.seq_to_heads if to_heads else layout.heads_to_seq
        return fn(tensors)

    @staticmethod
    def backward(ctx, *grads: Tensor) -> tuple:
        lay = ctx.layout
        fn = lay.heads_to_seq if ctx.to_heads else lay.seq_to_heads
        return (None, None, *fn(grads))


class _GatherTokens(torch.autograd.Function):
    """K and V of the whole sequence on every rank (the fallback); backward sums every rank's
    K/V gradient and keeps this rank's tokens."""

    @staticmethod
    def forward(ctx, layout: Layout, *tensors: Tensor) -> tuple[Tensor, ...]:
        ctx.layout = layout
        return tuple(layout.all_gather(t, 1, layout.lengths) for t in tensors)

    @staticmethod
    def backward(ctx, *grads: Tensor) -> tuple:
        lay = ctx.layout
        g = torch.stack(grads)
        dist.all_reduce(g, group=lay.cp.group)
        start = sum(lay.lengths[: lay.cp.rank])
        return (None, *g.narrow(2, start, lay.lengths[lay.cp.rank]).unbind(0))


class _GatherFrames(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, layout: Layout, dim: int, per: int) -> Tensor:
        ctx.layout, ctx.dim, ctx.per = layout, dim, per
        return layout.all_gather(x, dim, [f * per for f in layout.frames])

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple:
        lay = ctx.layout
        # Times C: see the module docstring (Gradients).
        return lay.local(grad, ctx.dim, ctx.per) * lay.cp.size, None, None, None


def attention(q: Tensor, k: Tensor, v: Tensor, cp: Layout | None = None) -> Tensor:
    """Unmasked attention on [B, L, H, d] tensors (returns [B, L, H, d]): one SDPA call, or its
    context-parallel form when `cp` is a Layout."""
    if cp is not None:
        return cp.attention(q, k, v)
    # Viewed as [B, H, L, d]: the last dim stays unit-stride, the layout flash/cuDNN SDPA
    # consume without a copy.
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    return out.transpose(1, 2)
