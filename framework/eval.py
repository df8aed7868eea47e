"""Evaluate Video2World checkpoints on the experiment's fixed eval set; JSON + HTML report.

    python -m framework.eval [--experiment NAME] [--checkpoint PATH|base|latest ...]
        [--label NAME ...] [--num_items N] [--seeds 0 1] [--num_steps 35] [--guidance 7]
        [--metrics psnr,ssim,latent_l2] [--name SET] [--output eval/SET.json] [-- KEY=VALUE ...]

The eval set is `cfg.eval` (framework/evaluation/evalset.py): the first items of the dataset's
held-out split, frozen to a manifest of content hashes the first time and refused when they
change. Each item is conditioned on its first frame(s) and stored caption embedding and generated
once per seed; the metrics (framework/evaluation/metrics.py) compare the generated frames with
the clip (conditional frames excluded: they are given). Every number is a mean over items with a
95% interval (seeds averaged per item first). Checkpoints: a `model/iter_N.pt` (its job's
config), `latest` (the experiment job's newest), `base` (the weights training starts from:
`checkpoint.load_path`, or the untrained net at `train.seed`); append `@ema` for the EMA weights.
Default: `base latest`. Output: `<output_root>/<project>/eval/<SET>.json` and `.html`.
`framework.hooks.EvalHook` scores the same set during training.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from omegaconf.errors import OmegaConfBaseException

from framework import jobs
from framework.config import ConfigError
from framework.data.heldout import HeldOutItem
from framework.evaluation.evalset import EvalSpec, load_eval_set, output_dir
from framework.evaluation.evalset import spec_of as eval_spec_of
from framework.evaluation.metrics import build_metrics
from framework.evaluation.runner import score_model
from framework.inference import loading
from framework.io import atomic_write_text

log = logging.getLogger(__name__)
METRICS = ("psnr", "ssim", "latent_l2", "still_psnr", "still_ssim")


@torch.no_grad()
def evaluate(
    model: Any,
    items: list[HeldOutItem],
    num_steps: int = 35,
    seed: int | list[int] = 0,
    *,
    guidance: float = 7.0,
    num_conditional_frames: int = 1,
    metrics: list[str] | None = None,
) -> dict:
    """Metrics per held-out item and their means and intervals (see the module docstring)."""
    spec = EvalSpec(
        name="adhoc",
        num_items=len(items),
        seeds=list(seed) if isinstance(seed, (list, tuple)) else [int(seed)],
        guidance=guidance,
        num_steps=num_steps,
        num_conditional_frames=num_conditional_frames,
    )
    scorers = build_metrics(metrics or ["psnr", "ssim", "latent_l2"])
    for m in scorers:  # weights load (or their absence is said) before any video is generated
        m.setup(model._device())
    return score_model(model, items, spec, scorers)


def format_table(result: dict) -> str:
    """The per-item rows and the mean as a fixed-width text table."""
    keys = [k for k in result["intervals"]]
    width = max([len(r["name"]) for r in result["items"]] + [4])
    lines = [f"{'item':<{width}}  " + "  ".join(f"{k:>10}" for k in keys)]
    for r in [*result["items"], {"name": "mean", **result}]:
        lines.append(f"{r['name']:<{width}}  " + "  ".join(f"{r[k]:>10.4g}" for k in keys))
    return "\n".join(lines)


def comparison_table(runs: list[dict]) -> str:
    """Mean [95% interval] of every metric, one row per checkpoint."""
    keys = list(runs[0]["result"]["intervals"]) + list(runs[0]["result"].get("set_metrics", {}))
    width = max(len(r["label"]) for r in runs)
    lines = [f"{'checkpoint':<{width}}  " + "  ".join(f"{k:>26}" for k in keys)]
    for run in runs:
        res, cells = run["result"], []
        for k in keys:
            ci = res["intervals"].get(k, {})
            if ci.get("lo") is not None:
                cells.append(f"{res[k]:.4g} [{ci['lo']:.4g}, {ci['hi']:.4g}]".rjust(26))
            else:
                cells.append(f"{res[k]:.4g}".rjust(26))
        lines.append(f"{run['label']:<{width}}  " + "  ".join(cells))
    return "\n".join(lines)


def verdict_lines(runs: list[dict]) -> list[str]:
    """Per metric with a direction: is the last checkpoint better than the first, and do their
    95% intervals overlap (non-overlapping intervals: a difference the items support)?"""
    from framework.evaluation.stats import separated

    if len(runs) < 2:
        return []
    first, last = runs[0], runs[-1]
    a, b = first["result"], last["result"]
    lines = []
    for key, better in b.get("better", {}).items():
        if better not in ("higher", "lower") or key not in a["intervals"]:
            continue
        wins = b[key] > a[key] if better == "higher" else b[key] < a[key]
        apart = separated(a["intervals"][key], b["intervals"][key])
        lines.append(
            f"{key}: {last['label']} {'beats' if wins else 'does not beat'} {first['label']} "
            f"({a[key]:.4g} -> {b[key]:.4g}, {better} is better); intervals "
            f"{'do not overlap' if apart else 'overlap'}"
        )
    return lines


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
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(path, json.dumps(_finite(result), indent=2, default=str) + "\n")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m framework.eval", description=__doc__.split("\n\n")[0]
    )
    a = p.add_argument
    a("--experiment", help="registered experiment (default: the checkpoint's job, else tiny_gr1)")
    a(
        "--checkpoint",
        action="append",
        default=[],
        help="model/iter_N.pt, an official .pt, 'base' or 'latest'; append @ema for the EMA "
        "weights; repeat to compare (default: base latest)",
    )
    a("--label", action="append", default=[], help="a name per --checkpoint for the report")
    a("--module", action="append", default=[], help="extra experiment module to import")
    a(*loading.TRUST_CONFIG_ARG, **loading.TRUST_CONFIG_KW)
    a("--load_ema", action="store_true", help="EMA weights for every checkpoint")
    a("--dataset_dir", help="score the held-out split of this folder (cfg.eval.dataset_dir)")
    a("--name", help="eval set name (cfg.eval.name): the manifest and output file names")
    a("--num_items", type=int, help="cfg.eval.num_items")
    a("--seeds", type=int, nargs="+", help="cfg.eval.seeds")
    a("--num_steps", type=int, help="cfg.eval.num_steps")
    a("--guidance", type=float, help="cfg.eval.guidance")
    a("--num_conditional_frames", type=int, help="cfg.eval.num_conditional_frames")
    a("--metrics", help="comma list (cfg.eval.metrics), e.g. psnr,ssim,latent_l2,lpips")
    a("--output", help="JSON path (default <output_root>/<project>/eval/<name>.json)")
    a("--no_report", action="store_true", help="write the JSON only")
    return p


def resolve_checkpoint(
    spec: str, args: argparse.Namespace, overrides: list[str]
) -> tuple[Any, Path | None, bool, str]:
    """(config, checkpoint or None for an untrained net, ema, default label) of one
    --checkpoint value."""
    name, _, suffix = spec.partition("@")
    ema = args.load_ema or suffix == "ema"
    if name == "base":
        cfg, _ = _config_only(args, overrides)
        load_path = cfg.checkpoint.get("load_path") if "checkpoint" in cfg else None
        ckpt = loading.require_file(load_path, "Checkpoint") if load_path else None
        return cfg, ckpt, ema and ckpt is not None, "base"
    cfg, ckpt = loading.resolve(
        args.experiment,
        overrides,
        None if name == "latest" else name,
        modules=args.module,
        trust_config=args.trust_config,
    )
    job = jobs.job_of_checkpoint(ckpt)
    label = f"{job.name}/{Path(ckpt).stem}" if job else Path(ckpt).stem
    return cfg, ckpt, ema, label + (" ema" if ema else "")


def _config_only(args: argparse.Namespace, overrides: list[str]) -> tuple[Any, None]:
    from framework.config import apply_overrides, get, load_all

    load_all(args.module)
    cfg = get(args.experiment or "tiny_gr1")
    apply_overrides(cfg, overrides)
    return cfg, None


def build(cfg: Any, ckpt: Path | None, ema: bool) -> Any:
    if ckpt is None:
        # The untrained net as the trainer builds it: same seed before the build.
        from framework.trainer.state import seed_everything

        seed_everything(int(cfg.train.seed))
    return loading.build_model(cfg, ckpt, ema)


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "run"


class MediaWriter:
    """Saves, per item, the input frame, the ground truth and each checkpoint's first-seed
    video under <out>_media/ for the report."""

    def __init__(self, folder: Path, first_seed: int) -> None:
        self.folder, self.first_seed = folder, first_seed
        self.items: dict[str, dict[str, Any]] = {}

    def add_item(self, item: HeldOutItem) -> None:
        from PIL import Image

        from framework.inference.media import save_video

        d = self.folder / slug(item.name)
        d.mkdir(parents=True, exist_ok=True)
        frame = item.video[0, :, 0].permute(1, 2, 0).numpy()
        Image.fromarray(frame).save(d / "input.png")
        save_video(d / "truth.mp4", item.video[0], item.fps)
        self.items[item.name] = {
            "name": item.name,
            "prompt": item.prompt,
            "input": str(d / "input.png"),
            "truth": str(d / "truth.mp4"),
            "videos": {},
        }

    def saver(self, label: str) -> Callable[[HeldOutItem, int, torch.Tensor], None]:
        """`on_video` for score_model: keeps `label`'s first-seed video of each item."""
        from framework.inference.media import save_video

        def save(item: HeldOutItem, seed: int, video: torch.Tensor) -> None:
            if seed != self.first_seed:
                return
            path = self.folder / slug(item.name) / f"{slug(label)}.mp4"
            save_video(path, video[0], item.fps)
            self.items[item.name]["videos"][label] = str(path)

        return save


def run(args: argparse.Namespace, overrides: list[str]) -> dict[str, Any]:
    specs = args.checkpoint or ["base", "latest"]
    if args.label and len(args.label) != len(specs):
        raise ValueError(f"{len(args.label)} --label for {len(specs)} checkpoints; give one each.")
    resolved = [resolve_checkpoint(s, args, overrides) for s in specs]
    labels = args.label or [r[3] for r in resolved]
    if len(set(labels)) != len(labels):
        raise ValueError(f"checkpoint labels repeat ({labels}); name them with --label.")
    cfg0 = resolved[-1][0]  # the eval set of the (last) trained job's config
    metrics = args.metrics.split(",") if args.metrics else None
    spec = eval_spec_of(
        cfg0,
        name=args.name,
        num_items=args.num_items,
        seeds=args.seeds,
        num_steps=args.num_steps,
        guidance=args.guidance,
        num_conditional_frames=args.num_conditional_frames,
        metrics=metrics,
        dataset_dir=args.dataset_dir,
    )
    loading.warn_unguidable(cfg0, spec.guidance)
    out = Path(args.output) if args.output else output_dir(cfg0) / f"{spec.name}.json"
    scorers = build_metrics(spec.metrics)
    runs, evalset, media = [], None, MediaWriter(out.with_name(f"{out.stem}_media"), spec.seeds[0])
    for (cfg, ckpt, ema, _), label in zip(resolved, labels, strict=True):
        model = build(cfg, ckpt, ema)
        if evalset is None:
            evalset = load_eval_set(cfg0, model.expected_pixel_frames, spec)
            for item in evalset.items:
                media.add_item(item)
            for m in scorers:
                m.setup(model._device())
        t0 = time.perf_counter()
        result = score_model(model, evalset.items, spec, scorers, on_video=media.saver(label))
        result["seconds"] = round(time.perf_counter() - t0, 2)
        run = {"label": label, "checkpoint": str(ckpt) if ckpt else None, "ema": ema}
        runs.append({**run, "result": result})
        del model
    summary = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "eval_set": evalset.describe(),
        "metric_settings": {m.name: m.settings() for m in scorers},
        "runs": runs,
        "media": list(media.items.values()),
    }
    summary["json"] = str(write_json(summary, out))
    if not args.no_report:
        from framework.evaluation.report import write_report

        summary["html"] = str(write_report(summary, out.with_suffix(".html")))
    return summary


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    cut = argv.index("--") if "--" in argv else len(argv)
    try:
        args = build_parser().parse_args(argv[:cut])
        loading.check_guidance(args.guidance)
        summary = run(args, argv[cut + 1 :])
    except (ConfigError, OmegaConfBaseException, FileNotFoundError, ValueError) as err:
        print(f"error: {str(err).splitlines()[0]}", file=sys.stderr)
        return 2
    print(comparison_table(summary["runs"]))
    for line in verdict_lines(summary["runs"]):
        print(line)
    if summary["eval_set"]["frozen_now"]:
        print(f"froze eval set {summary['eval_set']['name']} in {summary['eval_set']['manifest']}")
    print(f"wrote {summary['json']}" + (f" and {summary['html']}" if "html" in summary else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
