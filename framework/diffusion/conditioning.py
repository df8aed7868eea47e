"""What every objective conditions on, and the pieces objectives share.

`Condition` is the batch the generic model wrapper hands an objective: the clean latent of the
given frames (`gt`), how many leading latent frames are given (`num_frames`, per sample), the text
embedding, and the per-sample extras a net may use (padding mask, fps). Each objective turns it
into its own net call.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor


@dataclass
class Condition:
    gt: Tensor  # [B,C,T,H,W] clean latent; only the first num_frames[b] frames are used
    num_frames: Tensor  # int64 [B]: conditioned (given) latent frames per sample
    text: Tensor  # [B,L,D] text embedding (zeros = no text)
    padding_mask: Tensor | None = None  # [B,1,H,W] pixels, resized by the net
    fps: Tensor | None = None  # [B] frames per second of the clip

    @property
    def mask(self) -> Tensor:
        return condition_mask(self.num_frames, self.gt.shape)

    def doubled(self, other_text: Tensor) -> Condition:
        """This condition twice along the batch, the second half with `other_text`: one net call
        for classifier-free guidance."""

        def two(t: Tensor | None) -> Tensor | None:
            return None if t is None else torch.cat([t, t])

        return replace(
            self,
            gt=two(self.gt),
            num_frames=two(self.num_frames),
            text=torch.cat([self.text, other_text]),
            padding_mask=two(self.padding_mask),
            fps=two(self.fps),
        )


def condition_mask(num_frames: Tensor, shape: torch.Size | tuple[int, ...]) -> Tensor:
    """Float mask [B,1,T,H,W] that is 1 on the first `num_frames[b]` latent frames."""
    b, _, t, h, w = shape
    frame = torch.arange(t, device=num_frames.device)
    mask = (frame[None, :] < num_frames[:, None]).float()  # [B,T]
    return mask[:, None, :, None, None].expand(b, 1, t, h, w)


def drop_text(emb: Tensor, rate: float, generator: torch.Generator | None = None) -> Tensor:
    """Zero each sample's whole embedding with probability `rate` (classifier-free dropout)."""
    if rate <= 0:
        return emb
    keep = torch.rand(emb.shape[0], generator=generator, device=emb.device) >= rate
    return emb * keep.view(-1, *([1] * (emb.dim() - 1))).to(emb.dtype)


def guided_x0(x0_cond: Tensor, x0_uncond: Tensor, guidance: float) -> Tensor:
    """Upstream CFG of both Cosmos generations: cond + g * (cond - uncond), i.e. classic scale
    g + 1 (docs/upstream/cosmos_predict2.md §4.3, cosmos_predict1.md §3.8)."""
    return x0_cond + guidance * (x0_cond - x0_uncond)
