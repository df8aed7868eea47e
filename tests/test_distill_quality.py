"""The tiny 4-step student against the tiny 35-step teacher on held-out clips (issue #28's CPU
target, with a looser bound): the teacher is the default job's step-1000 checkpoint (`make
train`, trained here first when missing), the student a short tiny_gr1_distill run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench.distill_quality import measure
from framework.io import read_checkpoint

ROOT = Path(__file__).resolve().parents[1]
TEACHER = ROOT / "checkpoints/worldtune/tiny/tiny_gr1/checkpoints/model/iter_000001000.pt"
STEPS = 50  # a short run: the bound must hold from the first steps on


@pytest.mark.slow
def test_tiny_student_stays_within_2_db_of_the_teacher(tmp_path, monkeypatch):
    from launch import train

    if not TEACHER.is_file():  # `make train`, as a user would (minutes on 2 free cores)
        subprocess.run(
            [sys.executable, "-m", "launch.train", "tiny_gr1", "~hooks.progress"],
            cwd=ROOT, check=True, timeout=3600, capture_output=True,
        )  # fmt: skip
    monkeypatch.setenv("DATASETS", str(ROOT / "datasets"))
    monkeypatch.setenv("OUTPUT_ROOT", str(tmp_path / "runs"))
    hooks = ["~hooks.eval", "~hooks.sample", "~hooks.loss_curve", "~hooks.progress"]
    steps = [f"train.max_steps={STEPS}", f"checkpoint.save_iter={STEPS}"]
    assert train.main(["tiny_gr1_distill", f"checkpoint.load_path={TEACHER}", *steps, *hooks]) == 0
    student = (
        tmp_path / f"runs/worldtune/tiny/tiny_gr1_distill/checkpoints/model/iter_{STEPS:09d}.pt"
    )
    teacher_sd = read_checkpoint(TEACHER)
    moved = read_checkpoint(student)
    assert any(not torch.equal(moved[k], v) for k, v in teacher_sd.items())  # it trained

    result = measure(student, TEACHER, seeds=2, num_items=4, cache=False)
    teacher_35, student_4 = result["teacher_35"]["truth"], result["student_4"]["truth"]
    # The target is 1 dB; 2 dB here leaves room for seeds and the shorter run.
    assert student_4["psnr"] >= teacher_35["psnr"] - 2.0, (student_4, teacher_35)
    # Better than holding the given frame still: the student predicts the motion.
    assert student_4["psnr"] > student_4["still_psnr"] + 2.0, student_4
