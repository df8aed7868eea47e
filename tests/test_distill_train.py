"""tiny_gr1_distill through the stock trainer and CLI: the teacher from the default job's path,
the phases seen in the checkpoints, resume, and the student generating through video2world
(its 4 steps and guidance 0 from the config, a batch JSON too) and best_of_n."""

from __future__ import annotations

import json

import pytest
import torch

from framework.config import get, instantiate, load_all
from framework.io import read_checkpoint
from framework.jobs import job_dir_of

STEPS_OFF = ["~hooks.eval", "~hooks.sample", "~hooks.loss_curve", "~hooks.progress"]


def teacher_file(cfg) -> None:
    """A tiny_gr1 model file where the distillation looks for it (random weights with
    non-zero adaLN gates, so that every block acts)."""
    torch.manual_seed(0)
    model = instantiate(cfg.model)
    with torch.no_grad():
        for name, p in model.net.named_parameters():
            if "adaln_modulation" in name:
                p.normal_(0, 0.05)
    path = job_dir_of(cfg) / "checkpoints" / "model" / "iter_000001000.pt"
    path.parent.mkdir(parents=True)
    torch.save({f"net.{k}": v for k, v in model.net.state_dict().items()}, path)


@pytest.mark.slow
def test_tiny_distill_trains_resumes_and_its_student_generates(tmp_path, monkeypatch):
    from framework.inference import video2world
    from launch import train

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATASETS", str(tmp_path / "datasets"))
    monkeypatch.setenv("OUTPUT_ROOT", str(tmp_path / "runs"))
    load_all()
    teacher_file(get("tiny_gr1"))
    args = ["tiny_gr1_distill", "data.batch_size=2", "checkpoint.save_iter=3", "logging.every=1"]
    args += STEPS_OFF
    assert train.main([*args, "train.max_steps=3"]) == 0
    job = job_dir_of(get("tiny_gr1_distill"))
    teacher = read_checkpoint(job_dir_of(get("tiny_gr1")) / "checkpoints/model/iter_000001000.pt")
    first = read_checkpoint(job / "checkpoints/model/iter_000000003.pt")
    # The file holds the student (net.*) and the critic, not the frozen teacher's weights.
    heads = {k.split(".")[0] for k in first}
    assert "net" in heads and "fake_score" in heads
    assert not any(k.startswith("teacher.") and k[8:] in teacher for k in first)
    # Step 0 trained the student against a critic equal to the teacher: no direction, no move;
    # steps 1-2 trained the critic.
    assert all(torch.equal(first[k], v) for k, v in teacher.items())
    assert any(not torch.equal(first[f"fake_score.{k[4:]}"], v) for k, v in teacher.items())
    assert train.main([*args, "train.max_steps=6"]) == 0  # resumes at 3; step 5 is a student step
    rows = [json.loads(line) for line in (job / "metrics.jsonl").open()]
    assert [r["student_step"] for r in rows if "student_step" in r] == [1, 0, 0, 0, 0, 1]
    last = read_checkpoint(job / "checkpoints/model/iter_000000006.pt")
    assert any(not torch.equal(last[k], v) for k, v in teacher.items() if k.startswith("net."))

    out = tmp_path / "out" / "student.mp4"
    ckpt = str(job / "checkpoints/model/iter_000000006.pt")
    assert video2world.main(["--checkpoint", ckpt, "--save_path", str(out)]) == 0
    assert out.is_file() and out.stat().st_size > 0
    clips = sorted((tmp_path / "datasets" / "synthetic_gr1" / "videos").glob("*.mp4"))[:2]
    batch = [
        {
            "input_video": str(c),
            "prompt": "move the cube",
            "output_video": str(tmp_path / f"{i}.mp4"),
        }
        for i, c in enumerate(clips)
    ]
    (tmp_path / "batch.json").write_text(json.dumps(batch))
    argv = [
        "--checkpoint",
        ckpt,
        "--batch_input_json",
        str(tmp_path / "batch.json"),
        "--steps",
        "2",
    ]
    assert video2world.main(argv) == 0
    assert all((tmp_path / f"{i}.mp4").is_file() for i in range(2))
    # More steps than the student was distilled for: the item fails with the fix named.
    assert video2world.main([*argv[:4], "--steps", "35"]) == 1

    # Best of N with the student: its own steps and guidance, a tiny random Reason1 as critic.
    from framework.inference import best_of_n
    from tests.critic_fixtures import make_tiny_reason1

    critic = make_tiny_reason1(tmp_path / "critic" / "Cosmos-Reason1-7B")
    save = tmp_path / "bon"
    argv = ["--checkpoint", ckpt, "--input_path", str(clips[0]), "--prompt", "a cube"]
    argv += ["--save_path", str(save), "--num_generations", "2", "--num_critic_trials", "1"]
    assert (
        best_of_n.main([*argv, "--checkpoint_dir", str(critic), "--critic_max_new_tokens", "4"])
        == 0
    )
    summary = json.loads((save / "summary.json").read_text())
    assert summary["settings"]["num_steps"] == 4 and summary["settings"]["guidance"] == 0.0
    assert summary["counts"]["generated"] == 2 and summary["counts"]["ok"] == 1
