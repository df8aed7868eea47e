"""The tiny 4-step student against the tiny 35-step teacher on held-out clips (issue #28's CPU
target, with a looser bound), for both families: the teacher is the tiny job's step-1000
checkpoint (`make train` / `make train EXP=tiny_predict2_5_gr1`, trained here first when
missing), the student a short distillation run from it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench.distill_quality import measure
from framework.io import read_checkpoint

ROOT = Path(__file__).resolve().parents[1]
STEPS = 50  # a short run: the bound must hold from the first steps on


@pytest.mark.slow
@pytest.mark.parametrize(
    "teacher_exp, student_exp",
    [("tiny_gr1", "tiny_gr1_distill"), ("tiny_predict2_5_gr1", "tiny_predict2_5_gr1_distill")],
)
def test_tiny_student_stays_within_2_db_of_the_teacher(
    tmp_path, monkeypatch, teacher_exp, student_exp
):
    from launch import train

    teacher = ROOT / f"checkpoints/worldtune/tiny/{teacher_exp}/checkpoints/model/iter_000001000.pt"
    if not teacher.is_file():  # `make train`, as a user would (minutes on 2 free cores)
        subprocess.run(
            [sys.executable, "-m", "launch.train", teacher_exp, "~hooks.progress"],
            cwd=ROOT, check=True, timeout=3600, capture_output=True,
        )  # fmt: skip
    monkeypatch.setenv("DATASETS", str(ROOT / "datasets"))
    monkeypatch.setenv("OUTPUT_ROOT", str(tmp_path / "runs"))
    hooks = ["~hooks.eval", "~hooks.sample", "~hooks.loss_curve", "~hooks.progress"]
    steps = [f"train.max_steps={STEPS}", f"checkpoint.save_iter={STEPS}"]
    assert train.main([student_exp, f"checkpoint.load_path={teacher}", *steps, *hooks]) == 0
    student = tmp_path / f"runs/worldtune/tiny/{student_exp}/checkpoints/model/iter_{STEPS:09d}.pt"
    teacher_sd = read_checkpoint(teacher)
    moved = read_checkpoint(student)
    assert any(not torch.equal(moved[k], v) for k, v in teacher_sd.items())  # it trained

    result = measure(
        student, teacher, seeds=2, num_items=4, cache=False,
        student_experiment=student_exp, teacher_experiment=teacher_exp,
    )  # fmt: skip
    teacher_35, student_4 = result["teacher_35"]["truth"], result["student_4"]["truth"]
    # The target is 1 dB; 2 dB here leaves room for seeds and the shorter run.
    assert student_4["psnr"] >= teacher_35["psnr"] - 2.0, (student_4, teacher_35)
    # Better than holding the given frame still: the student predicts the motion.
    assert student_4["psnr"] > student_4["still_psnr"] + 2.0, student_4
