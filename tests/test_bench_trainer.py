"""bench_model's end-to-end trainer part, at its CPU smoke shape (tiny_gr1 through launch.train,
with the tokenizer in the step and from a latent cache)."""

from __future__ import annotations

import json

import pytest

from bench import bench_model


@pytest.mark.slow
def test_trainer_part_reports_both_runs(tmp_path):
    out = tmp_path / "trainer.json"
    assert bench_model.main(["--smoke", "--parts", "trainer", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert not report.get("errors"), report.get("errors")
    rows = {r["name"]: r for r in report["rows"] if r["part"] == "trainer"}
    assert set(rows) == {"trainer tiny_gr1 step, vae_in_step", "trainer tiny_gr1 step, cached"}
    assert all(r["seconds"] > 0 for r in rows.values())
    assert "data wait" in rows["trainer tiny_gr1 step, cached"]["note"]
