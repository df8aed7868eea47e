"""Quality of few-step generation on held-out clips: the distilled student, the teacher and the
step cache, against ground truth and against the teacher's own videos.

    python -m bench.distill_quality [--student CKPT] [--teacher CKPT] [--seeds 4]
        [--num_items 4] [--threshold 0.05] [--no_cache] [--json out.json]
        [--student_experiment tiny_gr1_distill] [--teacher_experiment tiny_gr1]
        [--student_override KEY=VALUE ...]

Defaults: the tiny jobs' latest checkpoints (`make train`, then
`make train EXP=tiny_gr1_distill`); for the Predict2.5 pair pass
`--student_experiment tiny_predict2_5_gr1_distill --teacher_experiment tiny_predict2_5_gr1`
(the experiments name the jobs whose latest checkpoints are used, and the config of a file
outside a job folder). Each held-out clip is continued from its first frame with
seeds 0..S-1 by:

  teacher_35        the teacher, its sampler's 35 steps (the reference)
  teacher_4         the teacher's own sampler cut to the student's step count (no distillation)
  student_4         the student, its trained steps, unguided (guidance distilled in)
  undistilled_4     the teacher's weights under the student's sampler (the student at step 0)
  teacher_35_cache  the teacher with First-Block-Cache at `--threshold`

Scores over the generated frames: PSNR / SSIM / latent L2 against the truth
(`framework.eval.evaluate`, the project's evaluation) and against teacher_35's video of the same
clip and seed (framework/inference/metrics.py), sharpness (mean absolute difference of
neighbouring pixels: an undistilled few-step sampler blurs), seconds per video and, for the
cache, the share of net calls that ran every block.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from framework.data.heldout import build_dataset, heldout_of
from framework.diffusion.step_cache import enable_step_cache
from framework.eval import evaluate
from framework.inference import loading
from framework.inference.metrics import latent_l2, video_metrics

KEYS = ("psnr", "ssim", "latent_l2")


def load(checkpoint: str | Path | None, experiment: str, overrides: list[str] = ()):
    # A file outside a job folder (an official or copied one) is read with `experiment`'s config.
    in_job = checkpoint and loading.job_dir_of_checkpoint(checkpoint) is not None
    cfg, path = loading.resolve(None if in_job else experiment, list(overrides), checkpoint)
    return cfg, path, loading.build_model(cfg, path, device="cpu")


def sampler_guidance(cfg) -> float:
    return float((cfg.model.get("sampler") or {}).get("guidance", 0.0))


def run_config(model, items, num_steps: int, guidance: float, seeds: int) -> dict:
    """evaluate() over seeds 0..S-1 (means) and every generated video, for the teacher
    comparison; the model's generate is wrapped to keep what it returns."""
    videos, generate = [], model.generate

    def keep(*args, **kwargs):
        out = generate(*args, **kwargs)
        videos.append(out.cpu())
        return out

    object.__setattr__(model, "generate", keep)
    t0, rows = time.perf_counter(), []
    try:
        for seed in range(seeds):
            rows.append(evaluate(model, items, num_steps, seed, guidance=guidance))
    finally:
        object.__setattr__(model, "generate", generate)
    seconds = (time.perf_counter() - t0) / max(len(videos), 1)  # includes the metric time
    truth = {k: sum(r[k] for r in rows) / len(rows) for k in (*KEYS, "still_psnr")}
    return {"truth": truth, "videos": videos, "seconds_per_video": seconds}


def sharpness(videos: list, n_cond: int = 1) -> float:
    """Mean absolute difference of horizontally and vertically neighbouring pixels over the
    generated frames (uint8 units): a few-step sampler without distillation averages over the
    possible futures and gives blurrier frames than the 35-step teacher."""
    total = []
    for v in videos:
        x = v[:, :, n_cond:].float()
        dx = (x[..., 1:] - x[..., :-1]).abs().mean()
        dy = (x[..., 1:, :] - x[..., :-1, :]).abs().mean()
        total.append(float(dx + dy) / 2)
    return sum(total) / len(total)


def against(videos: list, reference: list, tokenizer, n_cond: int = 1) -> dict:
    """Mean PSNR/SSIM over generated frames and latent L2 over generated latents vs `reference`."""
    skip = tokenizer.latent_frames(n_cond)
    scores = {k: [] for k in KEYS}
    for v, r in zip(videos, reference):
        for k, x in video_metrics(v[:, :, n_cond:], r[:, :, n_cond:]).items():
            scores[k].append(x)
        with torch.no_grad():
            zv, zr = tokenizer.encode(v), tokenizer.encode(r)
        scores["latent_l2"].append(latent_l2(zv[:, :, skip:], zr[:, :, skip:]))
    finite = lambda xs: [x for x in xs if math.isfinite(x)] or [math.inf]  # noqa: E731
    return {k: sum(finite(v)) / len(finite(v)) for k, v in scores.items()}


def measure(
    student: str | Path | None = None,
    teacher: str | Path | None = None,
    seeds: int = 4,
    num_items: int = 4,
    threshold: float = 0.05,
    cache: bool = True,
    student_experiment: str = "tiny_gr1_distill",
    teacher_experiment: str = "tiny_gr1",
    student_overrides: list[str] = (),
) -> dict:
    torch.manual_seed(0)
    s_cfg, s_path, s_model = load(student, student_experiment, student_overrides)
    t_cfg, t_path, t_model = load(teacher, teacher_experiment)
    items = heldout_of(build_dataset(t_cfg.data.dataset), num_items, t_model.expected_pixel_frames)
    # The teacher as the student was taught to imitate it: the distillation's guidance.
    guidance = float(s_cfg.model.objective.guidance)
    k = int(s_cfg.model.sampler.num_steps)
    runs = {
        "teacher_35": run_config(t_model, items, 35, guidance, seeds),
        f"teacher_{k}": run_config(t_model, items, k, guidance, seeds),
        f"student_{k}": run_config(s_model, items, k, sampler_guidance(s_cfg), seeds),
    }
    # The student before distillation: the teacher's weights under the student's sampler.
    s_init = loading.build_model(s_cfg, t_path, device="cpu")
    runs[f"undistilled_{k}"] = run_config(s_init, items, k, sampler_guidance(s_cfg), seeds)
    if cache:
        enable_step_cache(t_model, threshold)
        calls = [0, 0]
        generate = t_model.generate

        def counted(*args, **kwargs):
            out = generate(*args, **kwargs)
            calls[0] += t_model.step_cache_stats[0]
            calls[1] += t_model.step_cache_stats[1]
            return out

        object.__setattr__(t_model, "generate", counted)
        runs["teacher_35_cache"] = run_config(t_model, items, 35, guidance, seeds)
        runs["teacher_35_cache"]["computed_share"] = calls[0] / max(calls[1], 1)
    ref = runs["teacher_35"]["videos"]
    result = {
        "teacher": str(t_path),
        "student": str(s_path),
        "items": len(items),
        "seeds": seeds,
        "guidance": guidance,
        "cache_threshold": threshold,
    }
    result["truth_sharpness"] = sharpness([it.video for it in items])
    for name, r in runs.items():
        videos = r.pop("videos")
        r["vs_teacher_35"] = against(videos, ref, t_model.tokenizer)
        r["sharpness"] = sharpness(videos)
        result[name] = r
    return result


def table(result: dict) -> str:
    head = f"{'config':<18} {'truth PSNR':>10} {'SSIM':>6} {'lat L2':>8}   "
    head += f"{'vs teacher PSNR':>15} {'SSIM':>6} {'lat L2':>8} {'sharp':>6} {'s/video':>8}"
    lines = [head]
    for name, r in result.items():
        if not isinstance(r, dict) or "truth" not in r:
            continue
        t, v = r["truth"], r["vs_teacher_35"]
        lines.append(
            f"{name:<18} {t['psnr']:>10.2f} {t['ssim']:>6.3f} {t['latent_l2']:>8.4f}   "
            f"{v['psnr']:>15.2f} {v['ssim']:>6.3f} {v['latent_l2']:>8.4f} "
            f"{r['sharpness']:>6.2f} {r['seconds_per_video']:>8.3f}"
            + (f"  (computed {r['computed_share']:.0%} of calls)" if "computed_share" in r else "")
        )
    lines.append(f"{'truth':<18} sharpness {result['truth_sharpness']:.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.distill_quality", description=__doc__)
    p.add_argument("--student", default=None)
    p.add_argument("--teacher", default=None)
    p.add_argument("--seeds", type=int, default=4)
    p.add_argument("--num_items", type=int, default=4)
    p.add_argument("--threshold", type=float, default=0.05)
    p.add_argument("--json", default=None)
    p.add_argument("--no_cache", action="store_true", help="skip the step-cache run")
    p.add_argument("--student_experiment", default="tiny_gr1_distill")
    p.add_argument("--teacher_experiment", default="tiny_gr1")
    p.add_argument(
        "--student_override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override of the student's config (its rows and undistilled_K), e.g. "
        "model.objective.replace_gt_timesteps=true; repeatable",
    )
    args = p.parse_args(argv)
    result = measure(
        args.student,
        args.teacher,
        args.seeds,
        args.num_items,
        args.threshold,
        cache=not args.no_cache,
        student_experiment=args.student_experiment,
        teacher_experiment=args.teacher_experiment,
        student_overrides=args.student_override,
    )
    print(table(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
