"""`python -m framework.inference.best_of_n` end to end on CPU: the tiny random Predict2 job
generates, a tiny random Cosmos-Reason1 (real transformers path) scores, the winners are copied,
summary.json and report.html are written; a second run reuses everything; a bad item fails
alone; the winner is the highest score; missing critic weights stop the run before generation;
ranks split the items, and under torchrun rank 0 writes one summary for all."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from framework.inference import best_of_n as bon
from framework.inference import critic as C
from framework.inference import loading
from tests.critic_fixtures import make_tiny_reason1
from tests.test_dist import free_port
from tests.test_html_report import dump_dom
from tests.test_inference import png
from tests.test_inference_fixtures import (
    SIZE,
    STATE_T,
    decode,
)


@pytest.fixture(scope="module")
def job(tiny_job):
    return tiny_job.path


@pytest.fixture(scope="module")
def reason1(tmp_path_factory):
    return make_tiny_reason1(tmp_path_factory.mktemp("critic") / "Cosmos-Reason1-7B")


def args(ckpt: Path, save: Path, *extra: str) -> list[str]:
    return [
        "--checkpoint",
        str(ckpt),
        "--num_steps",
        "2",
        "--guidance",
        "0",
        "--save_path",
        str(save),
        *extra,
    ]


def batch(tmp_path: Path) -> Path:
    items = [
        {"input_video": str(png(tmp_path / "a.png")), "prompt": "pick up the red cube"},
        {"input_video": str(png(tmp_path / "b.png", 48, 48)), "prompt": "put it on the plate"},
        {"input_video": str(tmp_path / "gone.png"), "prompt": "x"},
    ]
    for item, name in zip(items, "abc"):
        item["output_video"] = str(tmp_path / "winners" / f"{name}.mp4")
    path = tmp_path / "batch.json"
    path.write_text(json.dumps(items))
    return path


def test_two_items_n2_videos_scores_winners_summary_report_and_resume(
    job, reason1, tmp_path, capsys, monkeypatch
):
    save = tmp_path / "bon"
    argv = args(job, save, "--batch_input_json", str(batch(tmp_path)))
    argv += ["--num_generations", "2", "--num_critic_trials", "2"]
    argv += ["--checkpoint_dir", str(reason1), "--critic_max_new_tokens", "8"]
    assert bon.main(argv) == bon.ITEM_FAILED  # the third item's input does not exist
    out = capsys.readouterr().out

    videos = sorted(p.name for p in save.glob("*.mp4"))
    assert videos == ["a_seed0.mp4", "a_seed1.mp4", "b_seed0.mp4", "b_seed1.mp4"]
    assert all(decode(save / v) == (STATE_T, SIZE, SIZE, 8.0) for v in videos)
    assert all((save / v).with_suffix(".txt").is_file() for v in videos)
    scores = sorted(save.glob("*_score[0-9][0-9][0-9].json"))
    assert len(scores) == 4
    for path in scores:
        record = json.loads(path.read_text())
        assert record["critic"] == "cosmos_reason1" and record["num_trials"] == 2
        assert len(record["responses"]) == 2 and all(
            isinstance(r, str) for r in record["responses"]
        )
        assert 0.0 <= record["score"] <= 1.0
        assert (
            path.name == f"{Path(record['video']).stem}_score{int(record['score'] * 100):03d}.json"
        )
        assert record["settings"]["temperature"] == 0.6 and record["max_new_tokens"] == 8

    summary = json.loads((save / "summary.json").read_text())
    assert summary["counts"] == {
        "items": 3,
        "ok": 2,
        "failed": 1,
        "generated": 4,
        "scored": 4,
        "reused_scores": 0,
    }
    ok = [it for it in summary["items"] if it["status"] == "ok"]
    for item in ok:
        win = next(c for c in item["candidates"] if c["seed"] == item["winner_seed"])
        assert win["score"] == max(c["score"] for c in item["candidates"])
        assert Path(item["output"]).read_bytes() == Path(win["video"]).read_bytes()
        assert Path(item["output"]).with_suffix(".txt").is_file()
    bad = next(it for it in summary["items"] if it["status"] == "failed")
    assert "gone.png does not exist" in bad["reason"] and "gone.png does not exist" in out
    assert "summary: 2 written, 1 failed" in out

    dom = dump_dom(save / "report.html")
    assert dom.count("<video ") == 4 and dom.count('data-loaded="1"') == 4
    assert dom.count('data-playing="1"') == 4
    assert dom.count('class="badge">winner<') == 2 and "FAILED" in dom

    # Second run: every video and score is reused; nothing is loaded.
    def refuse(*a, **k):
        raise AssertionError("nothing should be loaded on a complete rerun")

    monkeypatch.setattr(loading, "build_model", refuse)
    monkeypatch.setattr(C.CosmosReason1, "__init__", refuse)
    stamps = {p: p.stat().st_mtime_ns for p in [*save.glob("*.mp4"), *scores]}
    assert bon.main(argv) == bon.ITEM_FAILED
    assert "reused" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    again = json.loads((save / "summary.json").read_text())
    assert (again["counts"]["generated"], again["counts"]["scored"]) == (0, 0)
    assert again["counts"]["reused_scores"] == 4
    monkeypatch.undo()

    # Partial: one video and another video's score are gone -> only those two are redone.
    old = hashlib.sha256((save / "b_seed1.mp4").read_bytes()).hexdigest()
    (save / "b_seed1.mp4").unlink()
    next(save.glob("a_seed0_score*.json")).unlink()
    assert bon.main(argv) == bon.ITEM_FAILED
    counts = json.loads((save / "summary.json").read_text())["counts"]
    # b_seed1 comes back from the same seed. Scores are keyed by the file's sha256, so its old
    # score applies when the encoder wrote the same bytes; the H.264 encode is not always
    # byte-reproducible on this box (docs/performance.md), and then it is scored again.
    same = hashlib.sha256((save / "b_seed1.mp4").read_bytes()).hexdigest() == old
    want = (1, 1, 3) if same else (1, 2, 2)
    assert (counts["generated"], counts["scored"], counts["reused_scores"]) == want


class SeedCritic(C.Critic):
    """Answers "No" as many times as the video's seed (capped at K): later seeds score higher."""

    name = "seed_critic"

    def __init__(self, **kwargs) -> None:
        pass

    def responses(self, video: Path, num_trials: int, seed: int) -> list[str]:
        k = int(video.stem.rsplit("_seed", 1)[1])
        return ["<answer>No</answer>"] * min(k, num_trials) + ["<answer>Yes</answer>"] * max(
            num_trials - k, 0
        )


def test_single_input_winner_is_the_highest_score_with_a_critic_from_config(job, tmp_path):
    save = tmp_path / "single"
    argv = args(job, save, "--input_path", str(png(tmp_path / "frame.png")), "--prompt", "go")
    argv += ["--num_generations", "3", "--seed", "5", "--num_critic_trials", "8"]
    argv += ["--critic", "tests.test_best_of_n:SeedCritic"]
    assert bon.main(argv) == 0
    summary = json.loads((save / "summary.json").read_text())
    (item,) = summary["items"]
    assert [c["seed"] for c in item["candidates"]] == [5, 6, 7]
    assert [c["score"] for c in item["candidates"]] == [5 / 8, 6 / 8, 7 / 8]
    assert item["winner_seed"] == 7 and item["output"] == str(save / "frame.mp4")
    assert (save / "frame.mp4").read_bytes() == (save / "frame_seed7.mp4").read_bytes()
    assert (save / "frame_seed7_score087.json").is_file()


def test_missing_critic_weights_stop_before_any_generation(job, tmp_path, capsys):
    save = tmp_path / "nothing"
    missing = tmp_path / "checkpoints" / "nvidia" / "Cosmos-Reason1-7B"
    argv = args(job, save, "--input_path", str(png(tmp_path / "f.png")))
    assert bon.main([*argv, "--checkpoint_dir", str(missing)]) == bon.USER_ERROR
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error: cosmos_reason1 weights not found")
    assert f"hf download nvidia/Cosmos-Reason1-7B --local-dir {missing}" in err
    assert not save.exists()
    for bad, msg in [
        (["--critic", "nope"], "critic 'nope' is not registered"),
        (["--num_generations", "0"], "must be >= 1"),
        (
            [
                "--critic",
                "tests.test_best_of_n:SeedCritic",
                "--save_path",
                str(png(tmp_path / "g.png")),
            ],
            "is a file; best_of_n writes into a folder",
        ),
    ]:
        assert bon.main([*argv, *bad]) == bon.USER_ERROR
        assert msg in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:  # argparse: usage and the error, named as ours
        bon.main([*argv, "--num_gen", "2"])
    assert exit_.value.code == 2
    assert "best_of_n: error: unrecognized arguments: --num_gen" in capsys.readouterr().err


def test_ranks_take_every_other_item(job, tmp_path, monkeypatch, capsys):
    save = tmp_path / "ranks"
    argv = args(job, save, "--batch_input_json", str(batch(tmp_path)), "--num_generations", "1")
    argv += ["--critic", "tests.test_best_of_n:SeedCritic", "--num_critic_trials", "1"]
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    assert bon.main(argv) == 0  # rank 1: item 1 only; the bad item 2 is rank 0's
    assert sorted(p.name for p in save.glob("*.mp4")) == ["b_seed0.mp4"]
    summary = json.loads((save / "summary_rank1.json").read_text())
    assert [it["name"] for it in summary["items"]] == ["b"]
    assert (save / "report_rank1.html").is_file()


@pytest.mark.slow
def test_torchrun_two_ranks_write_one_summary_and_report(job, tmp_path):
    save = tmp_path / "tr"
    root = Path(__file__).resolve().parents[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2"]
    cmd += [f"--master_port={free_port()}", "-m", "framework.inference.best_of_n"]
    cmd += args(job, save, "--batch_input_json", str(batch(tmp_path)), "--num_generations", "2")
    cmd += ["--critic", "tests.test_best_of_n:SeedCritic", "--num_critic_trials", "2"]
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    run = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    log = run.stdout + run.stderr[-3000:]
    assert run.returncode != 0, log  # the missing input fails its item (exit 1 on that rank)
    assert "all 2 ranks: 2 written, 1 failed" in run.stdout, log
    summary = json.loads((save / "summary.json").read_text())
    assert sorted(it["status"] for it in summary["items"]) == ["failed", "ok", "ok"]
    assert summary["counts"]["generated"] == 4 and summary["counts"]["scored"] == 4
    assert sorted(p.name for p in save.glob("*_seed?.mp4")) == [
        "a_seed0.mp4",
        "a_seed1.mp4",
        "b_seed0.mp4",
        "b_seed1.mp4",
    ]
    assert not list(save.glob("summary_rank*.json"))
    assert (save / "report.html").read_text().count("<video ") == 4


def test_a_critic_that_cannot_load_stops_with_one_line_and_a_summary(
    job, reason1, tmp_path, capsys
):
    broken = tmp_path / "broken"
    shutil.copytree(reason1, broken)
    (broken / "model.safetensors").unlink()
    save = tmp_path / "run"
    argv = args(job, save, "--input_path", str(png(tmp_path / "f.png")), "--num_generations", "1")
    assert bon.main([*argv, "--checkpoint_dir", str(broken)]) == bon.USER_ERROR
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after the T5 loader's progress bar
    assert err.startswith("error: critic cosmos_reason1 cannot be loaded from")
    assert err.endswith("check the folder or pass --checkpoint_dir.")
    summary = json.loads((save / "summary.json").read_text())  # written all the same
    assert [it["status"] for it in summary["items"]] == ["failed"]
    assert (save / "f_seed0.mp4").is_file()  # kept for the next run
