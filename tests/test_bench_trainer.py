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


@pytest.mark.slow
def test_saves_part_reports_the_time_lost_per_save_for_both_formats(tmp_path):
    out = tmp_path / "saves.json"
    assert bench_model.main(["--smoke", "--parts", "saves", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert not report.get("errors"), report.get("errors")
    rows = {r["name"]: r for r in report["rows"] if r["part"] == "saves"}
    assert set(rows) == {
        "tiny_gr1 training time lost per save, format=dcp",
        "tiny_gr1 training time lost per save, format=pt",
    }
    for fmt in ("dcp", "pt"):
        cost = report["details"][f"saves_{fmt}"]
        assert cost["saves"] == 2  # at steps 3 and 6 of 8 (the last step's save has no step after)
        assert cost["held_per_save"] > 0 and cost["lost_per_save"] >= cost["held_per_save"]
