"""What every Cosmos video DiT does around its blocks: build the input channels (latent,
condition mask, padding mask), check latent shapes against the patch, unpatchify, and switch
context parallel on. Families subclass `VideoDiT` and keep their official module names.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from framework.models.dit.context_parallel import ContextParallel, context_parallel_of


class VideoDiT(nn.Module):
    """Base of the Cosmos DiTs. Subclasses set in_channels, out_channels, patch_spatial,
    patch_temporal and concat_padding_mask in their constructor."""

    in_channels: int
    out_channels: int
    patch_spatial: int
    patch_temporal: int
    concat_padding_mask: bool
    cp: ContextParallel | None = None

    def enable_context_parallel(self, group=None) -> None:
        """Split each sample's latent frames across `group` (None: off; context_parallel.py):
        every rank of it passes the same whole inputs and gets the same whole output."""
        self.cp = context_parallel_of(group)

    def units(self) -> list[nn.Module]:
        """The units of activation checkpointing, compile and FSDP2, in forward order."""
        raise NotImplementedError

    def _check_latent(self, x: Tensor) -> None:
        if x.ndim != 5 or x.shape[1] != self.in_channels:
            raise ValueError(f"x must be [B, {self.in_channels}, T, H, W]; got {tuple(x.shape)}.")
        _, _, t, h, w = x.shape
        p, pt = self.patch_spatial, self.patch_temporal
        if t % pt or h % p or w % p:
            raise ValueError(
                f"Latent size (T={t}, H={h}, W={w}) must be divisible by the patch "
                f"({pt}, {p}, {p}); choose a video size and frame count that the tokenizer's "
                "compression times the patch divides."
            )

    def _input_channels(
        self, x: Tensor, cond_mask: Tensor | None, padding_mask: Tensor | None
    ) -> Tensor:
        b, _, t, h, w = x.shape
        if cond_mask is None:  # image batches: the condition channel is zeros (§4.5.1)
            cond_mask = x.new_zeros(b, 1, t, h, w)
        parts = [x, cond_mask.to(x.dtype).expand(b, 1, t, h, w)]
        if self.concat_padding_mask:
            if padding_mask is None:
                padding_mask = x.new_zeros(b, 1, h, w)
            # Nearest resize of the pixel mask to the latent grid, repeated over frames.
            pm = F.interpolate(padding_mask.to(x.dtype), size=(h, w), mode="nearest")
            parts.append(pm.unsqueeze(2).expand(b, 1, t, h, w))
        return torch.cat(parts, dim=1)

    def _unpatchify(self, x: Tensor) -> Tensor:
        """B T H W (p1 p2 t C) -> B C (T t) (H p1) (W p2): channel innermost (§4.5.8)."""
        b, t, h, w, _ = x.shape
        p, pt, c = self.patch_spatial, self.patch_temporal, self.out_channels
        x = x.view(b, t, h, w, p, p, pt, c).permute(0, 7, 1, 6, 2, 4, 3, 5)
        return x.reshape(b, c, t * pt, h * p, w * p)
