"""The closing summary of a run: where everything is, and what it measured."""

from __future__ import annotations

import json
from pathlib import Path


def _json_lines(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def run_report(job_dir: Path) -> str:
    """A few lines naming the run's files, its loss at start and end, and eval before/after."""
    lines = [
        f"Run folder: {job_dir}",
        f"  config       {job_dir / 'config.yaml'} (+ overrides.txt)",
    ]
    losses = [r for r in _json_lines(job_dir / "metrics.jsonl") if "loss" in r]
    if losses:
        key = "edm_loss" if "edm_loss" in losses[0] else "loss"
        lines.append(
            f"  metrics      {job_dir / 'metrics.jsonl'} ({key} {losses[0][key]:.4g} at "
            f"step {losses[0]['step']} -> {losses[-1][key]:.4g} at step "
            f"{losses[-1]['step']})"
        )
    before, after = job_dir / "eval_before.json", job_dir / "eval_after.json"
    b = json.loads(before.read_text()) if before.is_file() else None
    a = json.loads(after.read_text()) if after.is_file() else None
    latest = job_dir / "checkpoints" / "latest_checkpoint.txt"
    if latest.is_file():
        name = latest.read_text().strip()
        model = job_dir / "checkpoints" / "model" / name
        lines.append(f"  checkpoint   {model}")
        # Suggest the guidance the eval scored with: tiny models oversaturate at the default 7.
        guidance = f" --guidance {a['guidance']:g}" if a and "guidance" in a else ""
        lines.append(
            "  generate     python -m framework.inference.video2world "
            f"--checkpoint {model}{guidance}"
        )
    samples = sorted((job_dir / "samples").glob("iter_*"))
    if samples:
        count = len(list(samples[-1].glob("*.mp4")))
        lines.append(f"  samples      {samples[-1]} ({count} videos)")
    if b and a:
        scores = ", ".join(
            f"{k} {b[k]:.4g} -> {a[k]:.4g}"
            for k in ("psnr", "ssim", "latent_l2")
            if k in b and k in a
        )
        lines.append(f"  eval         {scores} (before -> after training)")
        if "still_psnr" in a:
            # Holding the given frame still scores well on slow clips; motion must beat it.
            lines.append(
                "               holding the first frame still: "
                f"psnr {a['still_psnr']:.4g}, ssim {a['still_ssim']:.4g}"
            )
    curve = job_dir / "loss_curve.png"
    if curve.is_file():
        lines.append(f"  loss curve   {curve}")
    return "\n".join(lines)
