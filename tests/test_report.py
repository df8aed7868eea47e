"""The end-of-run summary names the files and the before/after numbers."""

from __future__ import annotations

import json

from framework.trainer.report import run_report


def test_report_lists_files_loss_and_eval(tmp_path):
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
    ckpt = tmp_path / "checkpoints"
    (ckpt / "model").mkdir(parents=True)
    (ckpt / "latest_checkpoint.txt").write_text("iter_000000020.pt\n")
    (tmp_path / "eval_before.json").write_text(json.dumps({"psnr": 7.0, "ssim": 0.1}))
    after = {"psnr": 20.0, "ssim": 0.5, "still_psnr": 18.0, "still_ssim": 0.4, "guidance": 0.0}
    (tmp_path / "eval_after.json").write_text(json.dumps(after))
    text = run_report(tmp_path)
    assert "edm_loss 0.9 at step 10 -> 0.3 at step 20" in text
    assert str(ckpt / "model" / "iter_000000020.pt") in text
    assert "psnr 7 -> 20, ssim 0.1 -> 0.5" in text
    assert "holding the first frame still: psnr 18, ssim 0.4" in text
    # The suggested command generates with the guidance the eval scored with.
    assert "iter_000000020.pt --guidance 0\n" in text
    assert "samples" not in text and "loss curve" not in text  # absent files are not claimed
