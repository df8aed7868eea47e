"""What checkpoint saves cost training, measured where users train (issue #29 item 4):
`python -m bench.bench_model --parts saves`.

The trainer itself (`launch.train`, one process per run) saves every `checkpoint.save_iter`
steps with format=dcp and with format=pt; from each run's metrics.jsonl (bench.step_times
.save_cost): the training time lost per save (the seconds the loop spent in the save call plus
every step's excess over the median step, per save) and the peak GPU memory before the first
save and over the run.

Real shape: groot_gr1_480 (2B, random weights) from a latent cache of synthetic 100-frame
432x432 clips, one GPU, keep_last=1 (a 2B save is 23.5 GB; the machine's disk holds two).
dcp: 30 steps, saves at 6, 12, 18 and 24 (and the last step), 13 s apart: about as close as
the lent machines' disks write one (13-21 s measured), with `checkpoint.staging_buffers` from
$BENCH_SAVES_BUFFERS (default 2, as measured on 2026-12-07; the recipes' default is 1) and
`checkpoint.writer_threads` from $BENCH_SAVES_THREADS (default 2, the recipes'); pt: 14
steps, a save at 7 (each pt save holds training ~33 s). Smoke: tiny_gr1 on the CPU.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from bench.parts_model import Ctx
from bench.parts_trainer import _run
from bench.step_times import save_cost


def _gr1_cache(work: Path) -> tuple[Path, Path]:
    data, cache = work / "gr1", work / "latents"
    if (cache / "cache.json").is_file():  # made by an earlier part of the same device call
        return data, cache
    _run(
        ["data_prep.synthetic", str(data), "--num_videos", "4", "--num_val", "1"]
        + ["--size", "432", "--num_frames", "100"],
        300,
    )
    _run(
        ["data_prep.latent_cache", "groot_gr1_480", f"data.dataset.dataset_dir={data}"]
        + ["model.tokenizer.path=null", "--output", str(cache), "--windows_per_video", "2"],
        600,
    )
    return data, cache


def part_saves(ctx: Ctx) -> None:
    smoke = not ctx.cuda
    # BENCH_SAVES_WORK keeps the data and cache there (a device script reuses them for another
    # run); BENCH_SAVES_FORMATS picks the formats (default both).
    keep = os.environ.get("BENCH_SAVES_WORK")
    work = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="bench_saves_"))
    runs = work / "runs"
    formats = os.environ.get("BENCH_SAVES_FORMATS", "dcp,pt").split(",")
    try:
        if smoke:
            exp, skip, common = "tiny_gr1", 1, [f"data.dataset.dataset_dir={work / 'gr1'}"]
            plans = {"dcp": (8, 3), "pt": (8, 3)}
        else:
            exp, skip = "groot_gr1_480", 3
            data, cache = _gr1_cache(work)
            common = [f"data.dataset.dataset_dir={data}", f"data.dataset.latent_cache_dir={cache}"]
            common += ["checkpoint.load_path=", "model.tokenizer.path=null"]
            common += ["parallel.shard_size=1"]
            plans = {"dcp": (30, 6), "pt": (14, 7)}
        buffers = os.environ.get("BENCH_SAVES_BUFFERS", "2")
        threads = os.environ.get("BENCH_SAVES_THREADS", "2")
        for fmt, (steps, every) in ((f, plans[f]) for f in formats):
            extra = []
            if fmt == "dcp":
                extra = [f"checkpoint.staging_buffers={buffers}"]
                extra += [f"checkpoint.writer_threads={threads}"]
            _run(
                ["launch.train", exp, *common, f"train.max_steps={steps}", "logging.every=1"]
                + ["~hooks.progress", f"checkpoint.save_iter={every}", "checkpoint.keep_last=1"]
                + [f"checkpoint.format={fmt}", f"job.output_root={runs}", f"job.name={fmt}"]
                + extra,
                900,
            )
            job = next(runs.glob(f"*/*/{fmt}"))
            c = save_cost(job / "metrics.jsonl", skip)
            if keep:
                shutil.copy(job / "metrics.jsonl", work / f"{fmt}_metrics.jsonl")
            if not ctx.cuda:
                c["peak"] = c["peak_before_save"] = None
            ctx.report.detail(f"saves_{fmt}", c)
            grew = (
                f"; peak {c['peak_before_save']:.1f} GiB before the first save"
                if c["peak"] is not None
                else ""
            )
            ctx.report.row(
                "saves",
                f"{exp} training time lost per save, format={fmt}",
                c["lost_per_save"],
                c["peak"],
                None,
                note=(
                    f"{c['saves']} saves; held {c['held_per_save']:.2f} s + steps' excess "
                    f"{c['excess_per_save']:.2f} s per save over the median step "
                    f"{c['median']:.3f} s; slowest step after a save "
                    f"{c['slowest_after_save']:.2f} s{grew}; once before the first save "
                    f"{c['startup_excess']:.2f} s; waited {c['waited_each']}, "
                    f"writes {c['write_each']} s at {c['write_gb_per_s']} GB/s"
                ),
            )
            shutil.rmtree(runs / job.relative_to(runs).parts[0], ignore_errors=True)
    finally:
        shutil.rmtree(runs if keep else work, ignore_errors=True)
