"""The generic world model: tokenizer + net + objective + sampler + conditioning + generate.

Implements the model protocol of docs/architecture.md for any registered model family. The
trainer sees only `training_step`, `trainable_parameters`, `parallelize`, `load_weights` and
`flops_per_sample`. Nothing here is specific to a family: the family object
(framework/models/family.py) says how to parallelize, load and count the net; the objective node
owns noise levels, preconditioning and the net call; the sampler node owns the noise schedule.

The tokenizer, text encoder, objective and sampler are kept outside the module tree, so
`state_dict()` holds the net under `net.` (the official layout) plus the objective's trainable
extras at the top level (e.g. Predict1's `logvar.`), nothing else.
"""

from __future__ import annotations

import fnmatch
import functools
import logging
from collections.abc import Callable, Mapping, Sequence
from os import PathLike
from typing import Any

import torch
from torch import Tensor, nn

from framework.config import ConfigError
from framework.data.latent_cache import REBUILD, identity_text
from framework.data.text_length import check_embeddings
from framework.diffusion.conditioning import Condition, guided_x0
from framework.models.dit.state_dict import split_top
from framework.models.family import ModelFamily, family_of, get_family
from framework.models.text.base import (
    TextEncoder,
    build_text_encoder,
    check_empty_prompt,
    declared_dim,
    encode_texts,
    fit_length,
    needs_encoder,
    net_text_width,
)
from framework.models.tokenizers import to_uint8, to_unit_range

log = logging.getLogger(__name__)
_LORA_MARKS = (".lora_A.", ".lora_B.")
# Batch keys of the text: the caption always, precomputed embeddings when the dataset has them
# (upstream's key name for T5 and Reason1 features alike).
CAPTION, TEXT_EMBEDDINGS = "caption", "t5_text_embeddings"
_BASE = ".base_layer."


class WorldModel(nn.Module):
    """Video-to-world post-training and generation around a `net` of a registered family."""

    def __init__(
        self,
        net: nn.Module,
        tokenizer: nn.Module,
        objective: Any,
        sampler: Callable[..., Tensor],
        state_t: int = 24,
        text_encoder: Any = None,
        lora: dict | None = None,
        fps: float = 16.0,
        max_text_tokens: int = 512,
        family: str | None = None,
        empty_prompt: str = "zeros",
    ) -> None:
        super().__init__()
        self.family: ModelFamily = get_family(family) if family else self._family_of(net)
        self.net = net
        # Frozen helpers and config objects, deliberately unregistered: not in state_dict, not
        # sharded by FSDP, not moved by .to() (the tokenizer places itself).
        for name, value in (
            ("tokenizer", tokenizer),
            ("text_encoder", text_encoder),
            ("objective", objective),
            ("sampler", sampler),
        ):
            object.__setattr__(self, name, value)
        # Trainable state outside the net (e.g. an EDM logvar head) lives at the top level, so
        # checkpoints hold it beside `net.` as the official files do.
        self.extra_names = tuple(objective.extra_modules())
        for name, module in objective.extra_modules().items():
            self.add_module(name, module)
        self.state_t, self.fps = int(state_t), float(fps)
        # Cross-attention context length: zero-padded slots still take softmax mass, so a net is
        # run with the length it was trained with.
        self.max_text_tokens = int(max_text_tokens)
        # What an empty caption or prompt becomes, in training and generation alike
        # (framework/models/text/base.py: "zeros" or "encode").
        self.empty_prompt = check_empty_prompt(empty_prompt)
        self._latent_identity_ok = False
        self.lora = dict(lora) if lora else None
        if self.lora:
            # Freezes the base; LoRA params train. No targets: the family's default ones.
            self.family.add_lora(
                self.net,
                int(self.lora["rank"]),
                float(self.lora["alpha"]),
                self.lora.get("targets"),
            )
        else:
            self.net.requires_grad_(True)

    @staticmethod
    def _family_of(net: nn.Module) -> ModelFamily:
        family = family_of(net)
        if family is None:
            raise ValueError(
                f"{type(net).__name__} belongs to no registered model family; register one "
                "(framework/models/family.py) or set model.family."
            )
        return family

    # ---- helpers -------------------------------------------------------------------------

    @property
    def expected_pixel_frames(self) -> int:
        return self.tokenizer.pixel_frames(self.state_t)

    def _device(self) -> torch.device:
        return next(self.net.parameters()).device

    def _crop_start(self, length: int, want: int) -> int:
        if length < want:
            raise ValueError(
                f"The video has {length} frames but state_t={self.state_t} needs {want}; "
                "use longer clips or a smaller state_t."
            )
        return int(torch.randint(0, length - want + 1, ()).item()) if length > want else 0

    def latents(self, batch: dict) -> Tensor:
        """Clean latents [B,C,state_t,H',W']: a prefix of the cached `latent`, else the encoded
        `video` after a random consecutive crop to the expected length."""
        dev = self._device()
        if "latent" in batch:
            self._check_latent_identity(batch.get("latent_identity"))
            lat = batch["latent"].to(dev, torch.float32)
            if lat.shape[2] < self.state_t:
                raise ConfigError(
                    f"The cached latent has {lat.shape[2]} frames but state_t={self.state_t}; "
                    f"{REBUILD}."
                )
            # The tokenizers are causal, so the first state_t latents equal the encoding of the
            # first pixel_frames(state_t) frames; a later latent window would match no clip.
            return lat[:, :, : self.state_t]
        video = batch["video"].to(dev)
        want = self.expected_pixel_frames
        start = self._crop_start(video.shape[2], want)
        with torch.no_grad():
            return self.tokenizer.encode(video[:, :, start : start + want]).float()

    def _check_latent_identity(self, identity: str | Sequence[str] | None) -> None:
        """Cached latents carry the identity of the tokenizer that made them (a list after
        collation): refuse latents of another VAE (file, config or scaling) than this model's."""
        if identity is None or self._latent_identity_ok:
            return
        made_by = {identity} if isinstance(identity, str) else set(identity)
        mine = identity_text(getattr(self.tokenizer, "identity", None))
        if made_by != {mine}:
            raise ConfigError(
                f"the latent cache was made by tokenizer {', '.join(sorted(made_by))}, not this "
                f"model's {mine}: {REBUILD}."
            )
        self._latent_identity_ok = True

    def _fps(self, batch: dict, b: int, dev: torch.device) -> Tensor:
        fps = batch.get("fps")
        if fps is None:
            return torch.full((b,), self.fps, device=dev)
        return torch.as_tensor(fps, dtype=torch.float32, device=dev).reshape(-1).expand(b)

    # ---- training protocol ---------------------------------------------------------------

    def batch_text(self, batch: dict) -> Tensor:
        """[B, max_text_tokens, D]: the batch's precomputed embeddings when it has them, else its
        captions through the text encoder (Predict2.5 encodes online, as upstream trains)."""
        if TEXT_EMBEDDINGS in batch:
            return self.embed_text(batch[TEXT_EMBEDDINGS].to(self._device()))
        if CAPTION not in batch:
            raise ValueError(
                f"the batch has neither {TEXT_EMBEDDINGS!r} nor {CAPTION!r}; the dataset must "
                "yield captions (and optionally precomputed embeddings)."
            )
        return self.embed_text(list(batch[CAPTION]))

    def batch_conditions(self, batch: dict) -> dict[str, Tensor]:
        """The conditioning inputs beyond text and frames that the family's nets take (e.g.
        `actions` [B, T_a, D]), on the net's device. A declared input missing from the batch
        fails: a net trained with actions would otherwise silently train without them."""
        missing = [name for name in self.family.conditions if name not in batch]
        if missing:
            raise ValueError(
                f"model family {self.family.name!r} conditions on {missing} but the batch has no "
                f"such key; use a dataset that yields {', '.join(missing)}."
            )
        dev = self._device()
        return {n: batch[n].to(dev, torch.float32) for n in self.family.conditions}

    def _net_fn(self, conditions: Mapping[str, Tensor]) -> Callable[..., Tensor]:
        """The net as the objective calls it, with the conditioning inputs bound."""
        if not conditions:
            return self.net
        return functools.partial(self.net, **conditions)

    def training_step(self, batch: dict, step: int) -> tuple[Tensor, dict[str, float]]:
        """The objective's loss to backpropagate and its metrics."""
        x0 = self.latents(batch)
        b, dev = x0.shape[0], x0.device
        padding_mask = batch.get("padding_mask")
        cond = Condition(
            gt=x0,
            num_frames=torch.zeros(b, dtype=torch.long, device=dev),
            text=self.batch_text(batch),
            padding_mask=None if padding_mask is None else padding_mask.to(dev),
            fps=self._fps(batch, b, dev),
        )
        n_cond = batch.get("num_conditional_frames")
        if isinstance(n_cond, Tensor):
            n_cond = int(n_cond.reshape(-1)[0])
        net = self._net_fn(self.batch_conditions(batch))
        return self.objective.loss(net, x0, cond, num_conditional_frames=n_cond)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def _parallelize_net(self, mesh, **options) -> bool:
        """The family's checkpointing/compile/FSDP on the net; False when it has none (a net
        without `units()` and no family parallelize)."""
        if self.family.parallelize is None and not hasattr(self.net, "units"):
            return False
        self.family.parallelize_net(self.net, mesh, **options)
        return True

    def parallelize(self, mesh, parallel) -> None:
        """The family's checkpointing/compile/FSDP for the net; each extra module is its own FSDP
        unit (its forward runs inside the objective, so FSDP's hooks see it)."""
        from framework.models.dit.parallelize import shard

        fsdp = parallel.strategy == "fsdp"
        done = self._parallelize_net(
            mesh,
            activation_checkpointing=parallel.activation_checkpointing,
            compile=parallel.compile,
            fsdp=fsdp,
        )
        if not done:
            if parallel.activation_checkpointing != "none" or parallel.compile:
                raise ValueError(
                    f"model family {self.family.name!r} has no parallelize; set "
                    "parallel.activation_checkpointing=none and parallel.compile=false."
                )
            if fsdp:
                shard(self.net, mesh)  # the whole net as one FSDP unit
        if fsdp:
            for name in self.extra_names:
                shard(getattr(self, name), mesh)

    def compile_for_inference(self, backend: str = "inductor") -> None:
        """Per-block torch.compile of the net for generation: the family's parallelize with
        compile only (no checkpointing, no FSDP). Identical blocks share one graph, so the first
        call compiles one block; later calls reuse it."""
        options = dict(activation_checkpointing="none", fsdp=False, compile_backend=backend)
        if not self._parallelize_net(None, compile=True, **options):
            raise ValueError(
                f"model family {self.family.name!r} has no per-block compile; drop --compile."
            )

    def context_parallel(self, group) -> None:
        """Split each sample's latent frames across the process group `group` through the
        family's hook (docs/training.md, Context parallel). Every rank of the group then runs
        the same training step or generation on the same sample and sees the same output."""
        size = group.size() if group is not None else 1
        if self.state_t < size:
            raise ValueError(
                f"context parallel over {size} processes splits the {self.state_t} latent frames "
                f"of model.state_t; set parallel.context_parallel (--num_gpus) to at most "
                f"{self.state_t}."
            )
        self.family.context_parallel(self.net, group)

    def flops_per_sample(self, batch: dict) -> float:
        """Training FLOPs per sample from the family's formula (0.0 when it has none)."""
        if self.family.flops_per_sample is None:
            return 0.0
        if "latent" in batch:
            h, w = batch["latent"].shape[-2:]
        else:
            s = self.tokenizer.spatial_compression
            h, w = batch["video"].shape[-2] // s, batch["video"].shape[-1] // s
        return float(
            self.family.flops_per_sample(self.net, self.state_t, h, w, self.max_text_tokens)
        )

    # ---- weights -------------------------------------------------------------------------

    def load_weights(
        self,
        state_dict: Mapping[str, Tensor],
        *,
        ema: bool = False,
        ignore: Sequence[str] = (),
        merge_lora: dict | None = None,
        assign: bool = False,
    ) -> None:
        """Load an official file or one of ours, strictly.

        Keys under `net.` (`net_ema.` with `ema`) go to the net through the family's loader,
        which drops exactly its documented keys and names missing ones; keys under an extra
        module's name (`logvar.`) go to it; keys the family declares foreign are dropped; any
        other key fails. A dict without prefixes is taken as the net's own keys. `ignore`:
        extra fnmatch patterns (on the net's keys) to drop. With LoRA in this model, base
        weights go under `base_layer`; `merge_lora` ({rank, alpha}) folds a LoRA file's adapters
        into a plain net.
        """
        parts = self._split(state_dict, ema)
        net_sd = {
            k: v
            for k, v in parts.pop("net").items()
            if not any(fnmatch.fnmatchcase(k, p) for p in ignore)
        }
        if any(m in k for k in net_sd for m in _LORA_MARKS) and not self.lora:
            if not merge_lora:
                raise ValueError(
                    "the checkpoint holds LoRA weights but the config has no model.lora; pass "
                    "the LoRA experiment or the run's job folder."
                )
            net_sd = self.family.merged_lora(
                net_sd, int(merge_lora["rank"]), float(merge_lora["alpha"])
            )
        if self.lora:
            self.family.load_lora_base(self.net, net_sd)
        else:
            # A LoRA net saved without adapters still carries base_layer names.
            net_sd = {k.replace(_BASE, "."): v for k, v in net_sd.items()}
            self.family.load(self.net, net_sd, assign=assign)
        for name in self.extra_names:
            sub = parts.get(name)
            if sub:
                getattr(self, name).load_state_dict(sub, strict=True, assign=assign)
            else:
                log.warning(
                    "the checkpoint has no %s.* weights; %s keeps its initial values", name, name
                )

    def _split(self, state_dict: Mapping[str, Tensor], ema: bool) -> dict[str, dict[str, Tensor]]:
        """{top-level module name: its keys without the prefix}; `net` is always present."""
        return split_top(state_dict, ("net", *self.extra_names), ema, self.family.is_extra)

    # ---- inference -----------------------------------------------------------------------

    def condition_video(self, video: Tensor, num_conditional_frames: int) -> Tensor:
        """Full-length [-1,1] conditioning clip as upstream builds it: one frame (an image) is
        followed by black frames; a clip gives its last `num_conditional_frames` frames, padded
        with copies of the last one."""
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
        num_steps: int | None = None,
        seed: int = 0,
        fps: float | None = None,
        conditions: Mapping[str, Tensor] | None = None,
    ) -> Tensor:
        """uint8 video [B,3,N,H,W] continuing `video` (uint8 or [-1,1]; an image or a clip).

        `num_conditional_frames` counts pixel frames. `neg_text_emb=None` means the all-zero
        (dropout) embedding, not the positive prompt. With guidance, the conditional and
        unconditional passes run as one batched net call. `conditions`: the family's extra
        inputs (e.g. {"actions": [B, T_a, D]}), the same for both guidance halves.
        """
        if (num_conditional_frames - 1) % self.tokenizer.temporal_compression:
            k = self.tokenizer.temporal_compression
            raise ValueError(
                f"num_conditional_frames={num_conditional_frames} does not fill whole latent "
                f"frames; use 1, {1 + k}, {1 + 2 * k}, ... (1 + a multiple of {k})."
            )
        dev = self._device()
        gt = self._encode_condition(video.to(dev), num_conditional_frames)
        b = gt.shape[0]
        emb = self.embed_text(text_emb).to(dev)
        n = torch.full((b,), self.tokenizer.latent_frames(num_conditional_frames), device=dev)
        pad = torch.zeros(b, 1, video.shape[-2], video.shape[-1], device=dev)
        rate = torch.full((b,), float(fps or self.fps), device=dev)
        cond = Condition(gt, n.long(), emb, pad, rate)
        guided = guidance != 0.0  # g = 0 gives cond exactly; skip the unconditional half
        if guided:
            neg = torch.zeros_like(emb) if neg_text_emb is None else self.embed_text(neg_text_emb)
            cond = cond.doubled(neg.to(dev))
        extra = self.batch_conditions(dict(conditions or {}))
        if guided:
            extra = {k: torch.cat([v, v]) for k, v in extra.items()}
        net = self._net_fn(extra)

        def x0_fn(x: Tensor, sigma: float) -> Tensor:
            xx = torch.cat([x, x]) if guided else x
            s = torch.full((xx.shape[0], 1), sigma, device=dev)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
                x0 = self.objective.x0(net, xx, s, cond)
            return guided_x0(*x0.chunk(2), guidance) if guided else x0

        if hasattr(self.objective, "seed_generation"):  # Predict1: upstream's augmentation noise
            self.objective.seed_generation(seed, b)
        was_training = self.net.training
        self.net.eval()
        try:
            latent = self.sampler(x0_fn, tuple(gt.shape), seed, num_steps=num_steps, device=dev)
        finally:
            self.net.train(was_training)
        return to_uint8(self.tokenizer.decode(latent))

    def _encode_condition(self, video: Tensor, num_conditional_frames: int) -> Tensor:
        """The clean latent of the conditioning clip, [B,C,state_t,H',W']. Only its first
        latent_frames(num_conditional_frames) frames are used (Condition.gt), and a causal
        tokenizer's first latents do not depend on later frames: then only the given frames are
        encoded and the rest is zeros (a 93-frame encode less, 1.1 s of a 2B 480p generation
        on an H200)."""
        clip = self.condition_video(video, num_conditional_frames)
        if not getattr(self.tokenizer, "causal", False):
            return self.tokenizer.encode(clip)
        given = self.tokenizer.encode(clip[:, :, :num_conditional_frames])
        gt = given.new_zeros(*given.shape[:2], self.state_t, *given.shape[3:])
        gt[:, :, : given.shape[2]] = given
        return gt

    def text_encoder_component(self) -> TextEncoder | None:
        """The configured text encoder, built on first use (training with precomputed
        embeddings never builds it)."""
        enc = self.text_encoder
        # A T5 folder given as a string has a `str.encode` too: build it as well.
        if enc is not None and (isinstance(enc, (str, PathLike)) or not hasattr(enc, "encode")):
            enc = build_text_encoder(enc, device=self._device())
            object.__setattr__(self, "text_encoder", enc)
        return enc

    def no_text_shape(self) -> tuple[int, int] | None:
        """(max_text_tokens, width) of the all-zero "no text" embedding, known without the text
        encoder: the net's text input width, else the encoder's declared one; None when neither
        says (the encoder's output then gives it)."""
        width = net_text_width(self.net) or declared_dim(self.text_encoder)
        return None if width is None else (self.max_text_tokens, width)

    def embed_text(self, text: Tensor | Sequence[str]) -> Tensor:
        """Text embeddings [B, max_text_tokens, D] (float32) from embeddings of any length or
        from prompts, which go through the text encoder. Eval, samples and inference call this.
        Prompts that are all empty under `empty_prompt="zeros"` give zeros of
        `no_text_shape()`: no encoder is built or run (Predict2's action recipe needs no T5)."""
        if isinstance(text, Tensor):
            check_embeddings(text, self.max_text_tokens, "the text embeddings")
            return fit_length(text.float(), self.max_text_tokens)
        texts, mode = list(text), getattr(self, "empty_prompt", "zeros")
        shape = None if needs_encoder(texts, mode) else self.no_text_shape()
        enc = self.text_encoder_component() if shape is None else None
        if shape is None and enc is None:
            raise ValueError(
                "Prompts were given as strings but the model has no text_encoder; "
                "pass precomputed embeddings or configure model.text_encoder."
            )
        # Encoders report true lengths; an empty prompt follows `empty_prompt`.
        emb, lengths = encode_texts(enc, texts, mode, shape, self._device())
        check_embeddings(emb, self.max_text_tokens, "the prompts", lengths)
        return fit_length(emb.float().to(self._device()), self.max_text_tokens)

    # ---- what the end-of-run report shows ---------------------------------------------------

    def report_lines(self, checkpoint: str) -> list[str]:
        """The command that generates from `checkpoint`. A model trained without caption dropout
        never learned the caption-free prediction guidance pushes away from: suggest none."""
        unguidable = float(getattr(self.objective, "text_dropout", 0.2)) == 0
        cmd = f"python -m framework.inference.video2world --checkpoint {checkpoint}"
        return [f"  generate     {cmd}{' --guidance 0' if unguidable else ''}"]
