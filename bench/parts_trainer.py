"""The end-to-end training step as a user runs it (`python -m bench.bench_model --parts trainer`):
the trainer itself (`launch.train`, one process per run) on a synthetic GR1-layout set, with the
VAE encoding each clip in the step and from a latent cache built by `data_prep.latent_cache`.
Random weights: the real experiment with `checkpoint.load_path=` and `model.tokenizer.path=null`.

Real shape: groot_gr1_480 (2B, Wan VAE, 93 frames at 432x768 resized from 100-frame 432x432
clips), one GPU, 16 steps, the median of steps 4-16. Smoke: tiny_gr1 on the CPU, 6 steps.
Each run is a subprocess so it measures the command users run, import and build included in
the wall time but not in the step times.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.parts_model import Ctx
from bench.step_times import summarize

ROOT = Path(__file__).resolve().parents[1]


def _run(args: list[str], timeout: float) -> None:
    done = subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise RuntimeError(f"{' '.join(args[:2])} exited {done.returncode}: {' | '.join(tail)}")


def part_trainer(ctx: Ctx) -> None:
    smoke = not ctx.cuda
    exp = "tiny_gr1" if smoke else "groot_gr1_480"
    steps, skip = (6, 2) if smoke else (16, 3)
    work = Path(tempfile.mkdtemp(prefix="bench_trainer_"))
    data, cache, runs = work / "gr1", work / "latents", work / "runs"
    try:
        if not smoke:  # tiny_gr1 writes its own synthetic set on first use
            _run(
                ["data_prep.synthetic", str(data), "--num_videos", "4", "--num_val", "1"]
                + ["--size", "432", "--num_frames", "100"],
                300,
            )
        common = [
            f"data.dataset.dataset_dir={data}",
            f"train.max_steps={steps}",
            "logging.every=1",
            "~hooks.progress",
            "~hooks.checkpoint",
            f"job.output_root={runs}",
        ]
        if not smoke:
            common += ["checkpoint.load_path=", "model.tokenizer.path=null"]
            common += ["parallel.shard_size=1"]
        _run(["launch.train", exp, *common, "job.name=vae_in_step"], 900)
        encode = [f"data.dataset.dataset_dir={data}"]
        encode += [] if smoke else ["model.tokenizer.path=null"]
        _run(
            ["data_prep.latent_cache", exp, *encode, "--output", str(cache)]
            + ["--windows_per_video", "2"],
            600,
        )
        add = "+" if smoke else ""  # tiny_gr1's dataset block has no such key by default
        cached = [*common, f"{add}data.dataset.latent_cache_dir={cache}", "job.name=cached"]
        _run(["launch.train", exp, *cached], 900)
        for name, what in (
            ("vae_in_step", "the tokenizer encodes each clip in the step"),
            ("cached", "from data_prep.latent_cache (2 windows per video)"),
        ):
            job = next(runs.glob(f"*/*/{name}"))
            s = summarize(job / "metrics.jsonl", skip)
            ctx.report.row(
                "trainer",
                f"trainer {exp} step, {name}",
                s["median"],
                s["peak"],
                None,
                note=f"{what}; median of {s['steps']} steps; data wait {s['data_wait']:.4f} s",
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
