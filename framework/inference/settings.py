"""The generation settings of one run: the command line's options, and for each option not given
the default that the model's config carries on its sampler node.

The sampler node (`model.sampler`, framework/diffusion/samplers.py `GenerationDefaults`) holds
`num_steps`, `guidance` and `negative_prompt`; a recipe sets them where it sets its sampler, so
generation follows the recipe's upstream without the commands knowing recipe names: Predict2.5
nodes carry upstream's negative prompt, the action recipes guidance 0 (upstream's action
inference runs `--guidance 0`), a distilled student the steps it was trained for and guidance 0.
Explicit options always win. video2world (single, batch JSON) and best-of-N use these."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from framework.inference import prompts


@dataclass
class Settings:
    size: tuple[int, int]
    fps: float
    negative_prompt: str
    prompt_prefix: str = ""
    num_conditional_frames: int = 1
    guidance: float = 7.0
    num_steps: int = 35
    seed: int = 0
    empty_prompt: str = "zeros"  # the model's `empty_prompt`: what "" embeds to
    chunk_size: int | None = None  # actions per chunk of a rollout (default: the model's clip)
    num_chunks: int | None = None  # chunks rolled out (default: every whole one)


def sampler_node(cfg) -> dict:
    return cfg.model.get("sampler") or {}


def guidance_for(cfg, asked: float | None) -> float:
    """The guidance a command uses: what was asked; else the sampler node's `guidance` (the
    action recipes' 0, a distilled student's built-in 0); else 7 (upstream's default), or 0
    for a model trained without caption dropout, which guidance would break
    (`loading.warn_unguidable`)."""
    if asked is not None:
        return float(asked)
    default = sampler_node(cfg).get("guidance")
    if default is not None:
        return float(default)
    objective = cfg.model.get("objective") or {}
    return 0.0 if float(objective.get("text_dropout", 0.2)) == 0 else 7.0


def fill_sampler_defaults(args: argparse.Namespace, cfg) -> None:
    """Fill the options not given from the model's sampler node: --num_steps (35 upstream; the
    count a distilled student was trained for), --guidance (`guidance_for`) and
    --negative_prompt (the node's: upstream's for Predict2.5, "" for Predict2's action
    recipe; without one `prompts.DEFAULT_NEGATIVE_PROMPT`)."""
    sampler = sampler_node(cfg)
    if args.num_steps is None:
        args.num_steps = int(sampler.get("num_steps", 35))
    args.guidance = guidance_for(cfg, args.guidance)
    if args.negative_prompt is None:
        default = sampler.get("negative_prompt")
        args.negative_prompt = prompts.DEFAULT_NEGATIVE_PROMPT if default is None else default


def settings_of(args: argparse.Namespace, cfg) -> Settings:
    """The generation settings of the command line and the model's config (after
    `fill_sampler_defaults`)."""
    return Settings(
        size=tuple(int(v) for v in cfg.data.dataset.video_size),
        fps=16.0 if args.gr00t_variant else float(cfg.model.get("fps", 16.0)),
        negative_prompt=args.negative_prompt,
        prompt_prefix=args.prompt_prefix,
        num_conditional_frames=args.num_conditional_frames,
        guidance=guidance_for(cfg, args.guidance),
        num_steps=args.num_steps,
        seed=args.seed,
        empty_prompt=str(cfg.model.get("empty_prompt") or "zeros"),
        chunk_size=args.chunk_size,
        num_chunks=args.num_chunks,
    )
