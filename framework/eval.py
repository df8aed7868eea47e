"""Evaluate a Video2World model on held-out clips: PSNR, SSIM and latent L2 against the truth.

    python -m framework.eval [--experiment NAME] [--checkpoint PATH] [--dataset_dir DIR]
        [--num_items 4] [--num_steps 35] [--seed 0] [--output eval.json] [-- KEY=VALUE ...]

Each held-out clip (the dataset's `val/` split when present) is conditioned on its first
frame(s) and its stored caption embedding; the rest is generated with a fixed seed and compared
with the clip: PSNR and SSIM (framework/inference/metrics.py) over the generated pixel frames,
latent L2 (mean squared difference) over the generated latent frames, in the model tokenizer's
space. Conditional frames are excluded: they are given, not predicted. `still_psnr` and
`still_ssim` score the still baseline (the last conditional frame repeated): a model that beats
them predicts motion, not just the scene. `framework.hooks.EvalHook` runs the same before and
after training.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from pathlib import Path
from typing import Any

import torch
from omegaconf.errors import OmegaConfBaseException

from framework import jobs
from framework.config import ConfigError
from framework.data.heldout import HeldOutItem, build_dataset, heldout_of
from framework.inference import loading
from framework.inference.metrics import latent_l2, video_metrics
from framework.io import atomic_write_text

log = logging.getLogger(__name__)
METRICS = ("psnr", "ssim", "latent_l2", "still_psnr", "still_ssim")


@torch.no_grad()
def evaluate(
    model: Any,
    items: list[HeldOutItem],
    num_steps: int = 35,
    seed: int = 0,
    *,
    guidance: float = 7.0,
    num_conditional_frames: int = 1,
) -> dict:
    """Metrics per held-out item (a dataset's `heldout_items`) and their means (see the module
    docstring)."""
    n = num_conditional_frames
    tok = model.tokenizer
    skip = tok.latent_frames(n)
    rows = []
    for item in items:
        truth = item.video
        video = model.generate(
            truth[:, :, :n],
            item.text_emb,
            None,
            num_conditional_frames=n,
            guidance=guidance,
            num_steps=num_steps,
            seed=seed,
            fps=item.fps,
        ).cpu()
        dev = model._device()
        z_gen, z_true = tok.encode(video.to(dev)), tok.encode(truth.to(dev))
        still = truth[:, :, n - 1 : n].expand_as(truth[:, :, n:])
        still_scores = {f"still_{k}": v for k, v in video_metrics(still, truth[:, :, n:]).items()}
        row = {
            "name": item.name,
            **video_metrics(video[:, :, n:], truth[:, :, n:]),
            "latent_l2": latent_l2(z_gen[:, :, skip:], z_true[:, :, skip:]),
            **still_scores,
        }
        rows.append(row)
    means = {k: _mean([r[k] for r in rows]) for k in METRICS}
    return {
        **means,
        "num_items": len(rows),
        "num_steps": num_steps,
        "seed": seed,
        "guidance": guidance,
        "num_conditional_frames": n,
        "items": rows,
    }


def _mean(values: list[float]) -> float:
    return float(sum(values) / len(values)) if values else math.nan


def format_table(result: dict) -> str:
    """The per-item rows and the mean as a fixed-width text table."""
    width = max([len(r["name"]) for r in result["items"]] + [4])
    lines = [
        f"{'item':<{width}}  {'PSNR dB':>8}  {'SSIM':>6}  {'latent L2':>10}  "
        f"{'still PSNR':>10}  {'still SSIM':>10}"
    ]
    for r in [*result["items"], {"name": "mean", **result}]:
        lines.append(
            f"{r['name']:<{width}}  {r['psnr']:>8.2f}  {r['ssim']:>6.3f}  "
            f"{r['latent_l2']:>10.4g}  {r['still_psnr']:>10.2f}  {r['still_ssim']:>10.3f}"
        )
    return "\n".join(lines)


def _finite(value: Any) -> Any:
    # JSON has no Infinity/NaN: identical videos (PSNR inf) are written as the string "inf".
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def write_json(result: dict, path: str | Path) -> Path:
    return atomic_write_text(path, json.dumps(_finite(result), indent=2, default=str) + "\n")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m framework.eval", description=__doc__.split("\n\n")[0]
    )
    a = p.add_argument
    a("--experiment", help="registered experiment that defines the model (default tiny_gr1)")
    a("--checkpoint", help="model/iter_N.pt of a job, or an official .pt (needs --experiment)")
    a("--module", action="append", default=[], help="extra experiment module to import")
    a("--load_ema", action="store_true", help="load the net_ema. weights")
    a(
        "--dataset_dir",
        help="point the experiment's dataset at this folder (its held-out split is used); "
        "default: the experiment's training data",
    )
    a("--num_items", type=int, default=4)
    a("--num_steps", type=int, default=35)
    a("--seed", type=int, default=0)
    a("--guidance", type=float, default=7.0)
    a(
        "--num_conditional_frames",
        type=int,
        default=1,
        help="pixel frames given: 1, or 1 + a multiple of the tokenizer's time stride (5 for "
        "Predict2's Wan VAE, 9 for Predict1's CV8x8x8)",
    )
    a("--output", help="JSON path (default: <job_dir>/eval_<checkpoint>.json)")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    cut = argv.index("--") if "--" in argv else len(argv)
    try:
        args = build_parser().parse_args(argv[:cut])
        cfg, checkpoint = loading.resolve(
            args.experiment, argv[cut + 1 :], args.checkpoint, modules=args.module
        )
        loading.warn_unguidable(cfg, args.guidance)
        model = loading.build_model(cfg, checkpoint, args.load_ema)
        dataset = build_dataset(cfg.data.dataset, args.dataset_dir)
        items = heldout_of(dataset, args.num_items, model.expected_pixel_frames)
        result = evaluate(
            model,
            items,
            args.num_steps,
            args.seed,
            guidance=args.guidance,
            num_conditional_frames=args.num_conditional_frames,
        )
    except (ConfigError, OmegaConfBaseException, FileNotFoundError, ValueError) as err:
        print(f"error: {str(err).splitlines()[0]}", file=sys.stderr)
        return 2
    result["checkpoint"] = str(checkpoint)
    job = jobs.job_of_checkpoint(checkpoint)
    default = (job / f"eval_{Path(checkpoint).stem}.json") if job else Path("output/eval.json")
    out = write_json(result, args.output or default)
    print(format_table(result))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
