"""Feedback during training (issue 30 item 7): log lines do not break the progress bar, the
last step is always logged, held-out evaluation and samples show a bar."""

from __future__ import annotations

import io
import json
import logging
import sys
from types import SimpleNamespace

import tests.toy_experiments  # noqa: F401  registers toy_regression
from framework.config import apply_overrides, get
from framework.hooks.training import ProgressHook
from framework.trainer import Trainer


def test_log_lines_do_not_break_the_progress_bar(monkeypatch):
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    root = logging.getLogger()
    handler = logging.StreamHandler(sys.stderr)  # what basicConfig installs
    monkeypatch.setattr(root, "handlers", [handler])
    monkeypatch.setattr(root, "level", logging.INFO)
    trainer = SimpleNamespace(
        is_main=True, max_steps=10, step=0, cfg=SimpleNamespace(job=SimpleNamespace(name="bar"))
    )
    hook = ProgressHook(mininterval=0)
    hook.before_train(trainer)
    for step in (1, 2, 3):
        hook.after_step(trainer, step, 0.5, {})
        logging.getLogger("framework.hooks.training").info("line at step %d", step)
    hook.after_train(trainer)
    assert root.handlers == [handler]  # the console handler is back after training
    text = err.getvalue()
    assert "bar:" in text  # the bar was drawn
    for step in (1, 2, 3):
        # Each log line stands alone: the bar was cleared (\r) before it, not glued to it.
        lines = [ln.split("\r")[-1] for ln in text.split("\n")]
        assert f"line at step {step}" in lines, text


def test_the_last_step_is_logged_when_max_steps_is_not_a_multiple(tmp_path):
    cfg = apply_overrides(
        get("toy_regression"),
        [f"job.output_root={tmp_path}", "train.max_steps=7", "logging.every=5"],
    )
    trainer = Trainer(cfg)
    assert trainer.fit() is True
    rows = (trainer.job_dir / "metrics.jsonl").read_text().splitlines()
    steps = [json.loads(r)["step"] for r in rows if "loss" in json.loads(r)]
    assert steps == [5, 7]
