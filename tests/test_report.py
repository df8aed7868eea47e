"""The end-of-run summary: generic lines from the trainer, the rest from the model and hooks."""

from __future__ import annotations

import json
from types import SimpleNamespace

from framework.hooks.evaluation import EvalHook
from framework.hooks.loss_curve import LossCurveHook
from framework.hooks.samples import SampleVideos
from framework.trainer.report import run_report


def test_report_lists_files_loss_and_what_hooks_add(tmp_path):
    (tmp_path / "metrics.jsonl").write_text(
        "\n".join(
            json.dumps(r)
            for r in [
                {"step": 0, "eval_before/psnr": 7.0},
                {"step": 10, "loss": 9.0, "edm_loss": 0.9},
                {"step": 20, "loss": 3.0, "edm_loss": 0.3},
            ]
        )
    )
    model = str(tmp_path / "checkpoints" / "model" / "iter_000000020.pt")
    text = "\n".join(run_report(tmp_path, model))
    assert "(loss 9 at step 10 -> 3 at step 20)" in text
    assert f"checkpoint   {model}" in text
    assert "edm_loss" not in text and "eval" not in text  # the trainer knows no model metric

    trainer = SimpleNamespace(job_dir=tmp_path)
    assert EvalHook().report_lines(trainer) == []  # absent files are not claimed
    assert SampleVideos().report_lines(trainer) == []
    assert LossCurveHook().report_lines(trainer) == []
    (tmp_path / "eval_before.json").write_text(json.dumps({"psnr": 7.0, "ssim": 0.1}))
    after = {"psnr": 20.0, "ssim": 0.5, "still_psnr": 18.0, "still_ssim": 0.4}
    (tmp_path / "eval_after.json").write_text(json.dumps(after))
    lines = "\n".join(EvalHook().report_lines(trainer))
    assert "psnr 7 -> 20, ssim 0.1 -> 0.5" in lines
    assert "holding the first frame still: psnr 18, ssim 0.4" in lines
    (tmp_path / "samples" / "iter_000000020").mkdir(parents=True)
    (tmp_path / "samples" / "iter_000000020" / "a.mp4").write_bytes(b"")
    assert SampleVideos().report_lines(trainer)[0].endswith("iter_000000020 (1 videos)")
