"""Prompt texts and prompt embedding for generation.

The default negative prompt lists the artefacts classifier-free guidance should steer away from (the
upstream default is a long list of the same kind, upstream/cosmos_predict2.md §4.3). An empty
negative prompt means the all-zero (dropped-text) embedding, which is what the model saw as "no
text" in training; it is never replaced by the positive prompt (upstream does that, which turns
guidance off)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from framework.models.text.base import encode_texts, no_text

DEFAULT_NEGATIVE_PROMPT = (
    "The video shows ugly, distorted and deformed content: blurry or out-of-focus frames, heavy "
    "noise, grain, compression and blocking artefacts, flickering, jitter and sudden jumps between "
    "frames, a frozen or static scene, overexposed or underexposed images, washed-out or "
    "oversaturated colours, smeared textures, warped geometry, objects that melt, merge, appear or "
    "vanish, extra or missing limbs, fingers or grippers, bodies and robot arms bending in "
    "impossible ways, physically implausible motion, floating objects, unnatural lighting, "
    "cartoonish, painted or computer-generated look, watermarks, text, logos, borders and "
    "subtitles, low resolution, low quality, poorly composed."
)

GR00T_PROMPT_PREFIX = "The robot arm is performing a task. "
GR00T_VARIANTS = {"gr1": "GR1", "droid": "DROID"}
# 14B at 480p (432x768), 93 frames, 16 fps (upstream/cosmos_predict2.md §7.2)
GR00T_EXPERIMENT = "groot_gr1_480_14b"
GR00T_CHECKPOINT = (
    "checkpoints/nvidia/Cosmos-Predict2-14B-Sample-GR00T-Dreams-{variant}/model-480p-16fps.pt"
)


def gr00t_checkpoint(variant: str) -> str:
    """The GR00T-Dreams 14B checkpoint path that the download command creates."""
    if variant not in GR00T_VARIANTS:
        raise ValueError(
            f"--gr00t_variant {variant!r} is unknown; use one of {sorted(GR00T_VARIANTS)}."
        )
    return GR00T_CHECKPOINT.format(variant=GR00T_VARIANTS[variant])


Encoder = Callable[[Sequence[str]], Tensor]


class PromptEmbedder:
    """Embeds prompts once each ([1, L, D] float32 on the CPU) with any text encoder object that
    has `encode(prompts) -> (emb, lengths)` or is a callable returning emb. An empty prompt
    follows the model's `empty_prompt` (framework/models/text/base.py), as its training did;
    an empty negative prompt is always the all-zero embedding (see the module docstring). With
    `no_text_shape` (the model's (tokens, width), `WorldModel.no_text_shape`), zeros are made
    without the encoder, which may then be None."""

    def __init__(
        self,
        encoder,
        empty_prompt: str = "zeros",
        no_text_shape: tuple[int, int] | None = None,
    ) -> None:
        self.encoder = encoder
        self.empty_prompt = empty_prompt
        self.no_text_shape = no_text_shape
        self.cache: dict[str, Tensor] = {}
        self.zeros: Tensor | None = None

    def _run(self, prompts: list[str]) -> Tensor:
        emb, _ = encode_texts(self.encoder, prompts, self.empty_prompt, self.no_text_shape)
        return emb.float().cpu()

    def __call__(self, prompt: str) -> Tensor:
        if prompt not in self.cache:
            self.cache[prompt] = self._run([prompt])
        return self.cache[prompt]

    def negative(self, prompt: str) -> Tensor:
        """The negative prompt's embedding: "" gives zeros, what caption dropout trained."""
        if prompt:
            return self(prompt)
        if self.zeros is None:
            shape = self.no_text_shape
            self.zeros = no_text(1, shape)[0] if shape else torch.zeros_like(self._run(["-"]))
        return self.zeros

    def embed_many(self, prompts: Sequence[str], batch_size: int = 8) -> None:
        """Fill the cache in batches (one forward per batch instead of per prompt), the empty
        prompt included, so nothing needs the encoder once it is freed."""
        prompts = set(prompts)
        todo = sorted(p for p in prompts if p and p not in self.cache)
        for i in range(0, len(todo), batch_size):
            chunk = todo[i : i + batch_size]
            emb = self._run(chunk)
            for j, prompt in enumerate(chunk):
                self.cache[prompt] = emb[j : j + 1].clone()
        if "" in prompts:
            self("")
            self.negative("")
