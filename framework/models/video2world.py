"""The Video2World model: tokenizer + DiT + frame conditioning + objective + sampling.

Implements the model protocol of docs/architecture.md. The trainer sees only `training_step`,
`trainable_parameters`, `parallelize` and the checkpoint hooks; diffusion details stay here, and
files and processes stay out. The tokenizer and text encoder are frozen helpers kept outside
the module tree, so `state_dict()` holds only `net.` keys (the official layout, spec §4.7).
"""

from __future__ import annotations

import fnmatch
import importlib
from collections.abc import Callable, Sequence
from types import ModuleType

import torch
from torch import Tensor, nn

from framework.diffusion.objective import Video2WorldObjective, condition_mask, denoise
from framework.diffusion.sampler import guided_x0, sample
from framework.models.tokenizers import to_uint8, to_unit_range


class Video2WorldModel(nn.Module):
    """Cosmos-Predict2 Video2World post-training and generation around a given `net`."""

    def __init__(
        self,
        net: nn.Module,
        tokenizer: nn.Module,
        state_t: int = 24,
        text_encoder: str | Callable[[Sequence[str]], Tensor] | None = None,
        high_sigma_ratio: float = 0.05,
        loss_scale: float = 10.0,
        sigma_conditional: float = 1e-4,
        min_num_conditional_frames: int = 1,
        max_num_conditional_frames: int = 2,
        text_dropout: float = 0.2,
        adjust_video_noise: bool = True,
        lora: dict | None = None,
        fps: float = 16.0,
        max_text_tokens: int = 512,
    ) -> None:
        super().__init__()
        self.net = net
        # Frozen helpers, deliberately unregistered: not in state_dict, not sharded by FSDP.
        object.__setattr__(self, "tokenizer", tokenizer)
        object.__setattr__(self, "text_encoder", text_encoder)
        self.state_t = state_t
        self.fps = fps
        # Cross-attention context length: zero-padded slots still take softmax mass, so a net is
        # run with the length it was trained with (512 upstream, spec §6.3).
        self.max_text_tokens = int(max_text_tokens)
        self.lora = dict(lora) if lora else None
        self.objective = Video2WorldObjective(
            state_t=state_t,
            high_sigma_ratio=high_sigma_ratio,
            loss_scale=loss_scale,
            sigma_conditional=sigma_conditional,
            min_num_conditional_frames=min_num_conditional_frames,
            max_num_conditional_frames=max_num_conditional_frames,
            text_dropout=text_dropout,
            adjust_video_noise=adjust_video_noise,
        )
        if self.lora:
            apply = self._family("lora", required=True).apply_lora
            apply(self.net, **self.lora)  # freezes the base; only LoRA params train (§4.8)
        else:
            self.net.requires_grad_(True)

    # ---- helpers -------------------------------------------------------------------------

    def _family(self, name: str, required: bool = False) -> ModuleType | None:
        """Sibling module of the net's package (e.g. cosmos2.lora), so one model class serves
        every DiT family that provides the same helpers."""
        package = type(self.net).__module__.rpartition(".")[0]
        try:
            if not package:
                raise ModuleNotFoundError(name)
            return importlib.import_module(f"{package}.{name}")
        except ModuleNotFoundError:
            if required:
                raise ValueError(
                    f"{type(self.net).__name__} has no `{package}.{name}` module; "
                    f"use a net family that provides it or turn the feature off."
                ) from None
            return None

    @property
    def expected_pixel_frames(self) -> int:
        return self.tokenizer.pixel_frames(self.state_t)

    def _device(self) -> torch.device:
        return next(self.net.parameters()).device

    def _crop_start(self, length: int, want: int, what: str) -> int:
        if length < want:
            raise ValueError(
                f"The {what} has {length} frames but state_t={self.state_t} needs {want}; "
                "use longer clips or a smaller state_t."
            )
        return int(torch.randint(0, length - want + 1, ()).item()) if length > want else 0

    def latents(self, batch: dict) -> Tensor:
        """Clean latents [B,C,state_t,H',W']: a prefix of the cached `latent`, else the encoded
        `video` after a random consecutive crop to the expected length (spec §6.2)."""
        dev = self._device()
        if "latent" in batch:
            lat = batch["latent"].to(dev, torch.float32)
            if lat.shape[2] < self.state_t:
                raise ValueError(
                    f"The cached latent has {lat.shape[2]} frames but state_t={self.state_t}; "
                    "rebuild the latent cache with longer clips."
                )
            # The VAE is causal, so the first state_t latents equal the encoding of the first
            # pixel_frames(state_t) frames; a later latent window would not match any clip.
            return lat[:, :, : self.state_t]
        video = batch["video"].to(dev)
        want = self.expected_pixel_frames
        start = self._crop_start(video.shape[2], want, "video")
        with torch.no_grad():
            return self.tokenizer.encode(video[:, :, start : start + want]).float()

    # ---- training protocol ---------------------------------------------------------------

    def training_step(self, batch: dict, step: int) -> tuple[Tensor, dict[str, float]]:
        """Scaled loss to backpropagate and unscaled metrics (`edm_loss`, `mse_loss`)."""
        x0 = self.latents(batch)
        dev = x0.device
        emb = self._fit_text(batch["t5_text_embeddings"].to(dev))
        padding_mask = batch.get("padding_mask")
        n_cond = batch.get("num_conditional_frames")
        if isinstance(n_cond, Tensor):
            n_cond = int(n_cond.reshape(-1)[0])
        return self.objective(
            self.net,
            x0,
            emb,
            padding_mask=None if padding_mask is None else padding_mask.to(dev),
            num_conditional_frames=n_cond,
        )

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.net.parameters() if p.requires_grad]

    def parallelize(self, mesh, parallel) -> None:
        """Activation checkpointing, compile and FSDP2 through the family's parallelize_net."""
        family = self._family("parallelize", required=True)
        family.parallelize_net(
            self.net,
            mesh,
            activation_checkpointing=parallel.activation_checkpointing,
            compile=parallel.compile,
            fsdp=parallel.strategy == "fsdp",
        )

    @property
    def ignored_checkpoint_keys(self) -> tuple[str, ...]:
        module = importlib.import_module(type(self.net).__module__)
        return tuple(getattr(module, "IGNORED_CHECKPOINT_KEYS", ()))

    def load_pretrained(self, state_dict: dict[str, Tensor]) -> None:
        """Load base weights strictly (keys with or without `net.`); official buffers in
        `ignored_checkpoint_keys` are dropped. With LoRA, base keys map to `base_layer`."""
        if self.lora:
            self._family("lora", required=True).load_base_into_lora(self.net, state_dict)
            return
        loading = self._family("loading")
        if loading is not None:
            loading.load_official(self.net, state_dict)
            return
        sd = {k.removeprefix("net."): v for k, v in state_dict.items()}
        sd = {
            k: v
            for k, v in sd.items()
            if not any(fnmatch.fnmatchcase(k, p) for p in self.ignored_checkpoint_keys)
        }
        self.net.load_state_dict(sd, strict=True)

    def flops_per_sample(self, batch: dict) -> float:
        """Training FLOPs per sample from the family's formula (0.0 when it has none)."""
        flops = self._family("flops")
        if flops is None:
            return 0.0
        if "latent" in batch:
            h, w = batch["latent"].shape[-2:]
        else:
            s = self.tokenizer.spatial_compression
            h, w = batch["video"].shape[-2] // s, batch["video"].shape[-1] // s
        text_len = self.max_text_tokens
        return float(flops.flops_per_sample(self.net, self.state_t, h, w, text_len))

    # ---- inference -----------------------------------------------------------------------

    def condition_video(self, video: Tensor, num_conditional_frames: int) -> Tensor:
        """Full-length [-1,1] conditioning clip as upstream builds it (spec §7.1): one frame
        (an image) is followed by black frames; a clip gives its last `num_conditional_frames`
        frames, padded with copies of the last one."""
        x = to_unit_range(video).float()
        want = self.expected_pixel_frames
        if x.shape[2] == 1:
            if num_conditional_frames != 1:
                raise ValueError(
                    "An image input conditions exactly one frame; use num_conditional_frames=1 "
                    "or pass a video."
                )
            pad = torch.full_like(x[:, :, :1], -1.0).expand(-1, -1, want - 1, -1, -1)
            return torch.cat([x, pad], dim=2)
        if x.shape[2] < num_conditional_frames:
            raise ValueError(
                f"The input video has {x.shape[2]} frames, fewer than "
                f"num_conditional_frames={num_conditional_frames}; pass a longer clip."
            )
        x = x[:, :, x.shape[2] - num_conditional_frames :]
        pad = x[:, :, -1:].expand(-1, -1, want - num_conditional_frames, -1, -1)
        return torch.cat([x, pad], dim=2)[:, :, :want]

    @torch.no_grad()
    def generate(
        self,
        video: Tensor,
        text_emb: Tensor | Sequence[str],
        neg_text_emb: Tensor | Sequence[str] | None = None,
        num_conditional_frames: int = 1,
        guidance: float = 7.0,
        num_steps: int = 35,
        seed: int = 0,
    ) -> Tensor:
        """uint8 video [B,3,N,H,W] continuing `video` (uint8 or [-1,1]; an image or a clip).

        `num_conditional_frames` counts pixel frames (1 or 5 -> 1 or 2 latent frames).
        `neg_text_emb=None` means the all-zero (dropout) embedding, not the positive prompt.
        Conditional and unconditional passes run as one batched net forward.
        """
        if num_conditional_frames not in (1, 5) and self.tokenizer.temporal_compression == 4:
            raise ValueError(
                f"num_conditional_frames must be 1 or 5, got {num_conditional_frames}."
            )
        dev = self._device()
        cond = self.tokenizer.encode(self.condition_video(video.to(dev), num_conditional_frames))
        b = cond.shape[0]
        emb = self._embed(text_emb).to(dev)
        neg = torch.zeros_like(emb) if neg_text_emb is None else self._embed(neg_text_emb).to(dev)
        mask = condition_mask(
            torch.full((b,), self.tokenizer.latent_frames(num_conditional_frames), device=dev),
            cond.shape,
        )
        pad = torch.zeros(b, 1, video.shape[-2], video.shape[-1], device=dev)
        guided = guidance != 0.0  # g = 0 gives cond exactly; skip the unconditional half
        two = (lambda t: torch.cat([t, t])) if guided else (lambda t: t)
        gt, mask2, pad2 = two(cond), two(mask), two(pad)
        emb2 = torch.cat([emb, neg]) if guided else emb
        sigma_cond = self.objective.sigma_conditional

        def x0_fn(x: Tensor, sigma: float) -> Tensor:
            xx = two(x)
            s = torch.full((xx.shape[0], 1), sigma, device=dev)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
                x0 = denoise(self.net, xx, s, gt, mask2, emb2, pad2, sigma_cond)
            return guided_x0(*x0.chunk(2), guidance) if guided else x0

        was_training = self.net.training
        self.net.eval()
        try:
            latent = sample(x0_fn, tuple(cond.shape), num_steps=num_steps, seed=seed, device=dev)
        finally:
            self.net.train(was_training)
        return to_uint8(self.tokenizer.decode(latent))

    def _fit_text(self, emb: Tensor) -> Tensor:
        """Zero-pad or cut [B,N,D] embeddings to [B,max_text_tokens,D]."""
        n = self.max_text_tokens
        if emb.shape[1] >= n:
            return emb[:, :n]
        return torch.nn.functional.pad(emb, (0, 0, 0, n - emb.shape[1]))

    def _embed(self, text: Tensor | Sequence[str]) -> Tensor:
        """T5 embeddings [B,max_text_tokens,1024]; prompts go through the text encoder, which a
        config names by path and which is built here on first use (training never needs it,
        spec §10)."""
        if isinstance(text, Tensor):
            return self._fit_text(text.float())
        enc = self.text_encoder
        if enc is None:
            raise ValueError(
                "Prompts were given as strings but the model has no text_encoder; "
                "pass T5 embeddings or configure model.text_encoder."
            )
        if isinstance(enc, str):
            from framework.models.text import T5TextEncoder

            enc = T5TextEncoder(enc, device=self._device(), max_length=self.max_text_tokens)
            object.__setattr__(self, "text_encoder", enc)
        out = enc.encode(list(text)) if hasattr(enc, "encode") else enc(list(text))
        return self._fit_text((out[0] if isinstance(out, tuple) else out).float())
