"""Fault injection (docs/reliability.md): kills at every stage of a save, damaged and leftover
checkpoints, full disks, a second run of the same job, bad configs, bad batch items and data.
In-process on the toy model and the tiny Predict2 fixtures, so the whole module takes seconds."""

from __future__ import annotations

import json
import logging
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

import tests.toy_experiments  # noqa: F401  (registers toy_regression)
from framework import io as io_mod
from framework.config import ConfigError, apply_overrides, get
from framework.jobs import JobLock
from framework.trainer import EXIT_OK, Trainer, run
from framework.trainer.entry import EXIT_USER_ERROR, EXIT_WRITE
from launch import train as launch_train

STEPS = ["train.max_steps=8", "checkpoint.save_iter=4", "model.input_noise=0.1"]


def cfg(tmp_path: Path, *overrides: str):
    c = get("toy_regression")
    return apply_overrides(c, [f"job.output_root={tmp_path}", *STEPS, *overrides])


def weights(trainer: Trainer) -> list[torch.Tensor]:
    return [p.detach().clone() for p in trainer.model.parameters()]


def ckpt_root(tmp_path: Path, name: str = "toy_regression") -> Path:
    return tmp_path / "worldtune_tests" / "toy" / name / "checkpoints"


def latest(tmp_path: Path, name: str = "toy_regression") -> str:
    return (ckpt_root(tmp_path, name) / "latest_checkpoint.txt").read_text().strip()


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> list[torch.Tensor]:
    t = Trainer(cfg(tmp_path_factory.mktemp("ref")))
    t.fit()
    return weights(t)


# ---- kill at every stage of a save -------------------------------------------------------------

# A save of step 8 renames, in order: model, optim, scheduler, trainer, manifest, latest.
STAGES = ["model", "optim", "scheduler", "trainer", "manifest", "latest"]


@pytest.mark.parametrize("stage", range(len(STAGES)), ids=STAGES)
def test_a_kill_at_any_stage_of_a_save_leaves_the_previous_checkpoint_named(
    tmp_path, monkeypatch, reference, stage
):
    real = os.replace
    calls = {"n": 0}

    def dies(src, dst):
        if "000000008" in str(dst) or (calls["n"] and str(dst).endswith("latest_checkpoint.txt")):
            if calls["n"] == stage:
                raise KeyboardInterrupt(f"killed before {dst}")
            calls["n"] += 1
        real(src, dst)

    monkeypatch.setattr(io_mod.os, "replace", dies)
    with pytest.raises(KeyboardInterrupt):
        Trainer(cfg(tmp_path)).fit()
    monkeypatch.setattr(io_mod.os, "replace", real)
    assert latest(tmp_path) == "iter_000000004.pt"
    resumed = Trainer(cfg(tmp_path))
    assert resumed.step == 4
    resumed.fit()
    assert all(torch.equal(a, b) for a, b in zip(weights(resumed), reference))


# ---- damaged and leftover checkpoints ----------------------------------------------------------


def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(tmp_path, reference, caplog):
    Trainer(cfg(tmp_path, "train.max_steps=6", "checkpoint.save_iter=2")).fit()
    model = ckpt_root(tmp_path) / "model" / "iter_000000006.pt"
    model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])  # truncated copy
    with caplog.at_level(logging.WARNING):
        resumed = Trainer(cfg(tmp_path, "checkpoint.save_iter=2"))
    assert resumed.step == 4
    assert "iter_000000006.pt is incomplete or damaged" in caplog.text
    assert "resuming from iter_000000004.pt" in caplog.text


def test_pruning_never_removes_latest_nor_a_newer_leftover(tmp_path):
    # An earlier run in the same folder left iterations 10 and 12, then latest was reset.
    Trainer(cfg(tmp_path, "train.max_steps=12", "checkpoint.save_iter=2")).fit()
    root = ckpt_root(tmp_path)
    (root / "latest_checkpoint.txt").write_text("iter_000000004.pt\n")
    t = Trainer(
        cfg(tmp_path, "train.max_steps=8", "checkpoint.save_iter=2", "checkpoint.keep_last=1")
    )
    assert t.step == 4
    t.fit()
    assert latest(tmp_path) == "iter_000000008.pt"
    kept = sorted(p.name for p in (root / "model").glob("iter_*.pt"))
    # keep_last=1 up to latest: only 8 of 2..8; the leftovers above latest are not this run's.
    assert kept == ["iter_000000008.pt", "iter_000000010.pt", "iter_000000012.pt"]
    assert Trainer(cfg(tmp_path, "train.max_steps=8")).step == 8


# ---- a full disk, a second run of the same job -------------------------------------------------


def test_a_full_disk_says_where_removes_temp_files_and_keeps_latest(tmp_path, monkeypatch, caplog):
    real = torch.save

    def full(obj, f, *args, **kwargs):
        if "iter_000000008" in str(getattr(f, "name", "")):
            f.write(b"partial")
            raise OSError(28, "No space left on device", str(f.name))
        real(obj, f, *args, **kwargs)

    monkeypatch.setattr(io_mod.torch, "save", full)
    with caplog.at_level(logging.ERROR):
        assert run(cfg(tmp_path), []) == EXIT_WRITE
    monkeypatch.setattr(io_mod.torch, "save", real)
    assert "saving checkpoint iter_000000008.pt failed at" in caplog.text
    assert "No space left on device" in caplog.text and "resumes from it" in caplog.text
    assert not list(ckpt_root(tmp_path).rglob("*.tmp"))
    assert latest(tmp_path) == "iter_000000004.pt"
    assert run(cfg(tmp_path), []) == EXIT_OK


def test_a_data_worker_killed_for_memory_is_one_line_and_resumable(
    tmp_path, monkeypatch, caplog, capfd
):
    """A loader worker SIGKILLed (the out-of-memory killer's signal) after some steps: exit 4,
    one line naming it, the fix and the last checkpoint; the same command then finishes."""
    from framework.trainer.entry import EXIT_OOM

    over = ["data.num_workers=1", "+data.dataset.kill_worker_after=28", "checkpoint.save_iter=2"]
    monkeypatch.setenv("TOY_SIGNAL_ARMED", "1")
    with caplog.at_level(logging.ERROR):
        assert run(cfg(tmp_path, *over), []) == EXIT_OOM
    (line,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    # torch says "(pid N) is killed by signal: Killed" from its SIGCHLD handler, or "(pid(s) N)
    # exited unexpectedly" when its queue's timeout check sees the death first (the suite saw it).
    assert line.startswith("error: a data loader worker died (DataLoader worker (pid")
    assert "killed by signal" in line or "exited unexpectedly" in line
    assert "lower data.num_workers" in line and "run the same command again" in line
    assert line.endswith(f"{ckpt_root(tmp_path)}/*/{latest(tmp_path)}).")
    assert "Traceback" not in capfd.readouterr().err
    assert 2 <= int(latest(tmp_path)[5:14]) < 8  # it died mid-run, after a save
    monkeypatch.delenv("TOY_SIGNAL_ARMED")
    assert run(cfg(tmp_path, *over), []) == EXIT_OK
    assert latest(tmp_path) == "iter_000000008.pt"


def test_other_runtime_errors_still_raise():
    from framework.trainer.entry import worker_killed

    assert worker_killed(RuntimeError("DataLoader worker (pid 12) is killed by signal: Killed."))
    assert worker_killed(RuntimeError("DataLoader worker (pid(s) 12) exited unexpectedly"))
    assert worker_killed(RuntimeError("mat1 and mat2 shapes cannot be multiplied")) is None
    assert worker_killed(RuntimeError("Caught ValueError in DataLoader worker process 0.")) is None


def test_a_second_run_of_the_same_job_is_refused_naming_the_holder(tmp_path):
    import subprocess
    import sys

    job = tmp_path / "worldtune_tests" / "toy" / "toy_regression"
    job.mkdir(parents=True)
    holder = subprocess.Popen(  # another process holds the folder, as a running job does
        [
            sys.executable,
            "-c",
            "import fcntl,sys,time; f=open(sys.argv[1],'a+');"
            "fcntl.flock(f, fcntl.LOCK_EX); f.write('pid 4242 on node7 since noon'); f.flush();"
            "print('locked', flush=True); time.sleep(60)",
            str(job / JobLock.NAME),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(ConfigError, match="is in use by pid 4242 on node7 since noon"):
            Trainer(cfg(tmp_path))
        assert not (job / "config.yaml").exists()  # refused before writing anything
    finally:
        holder.kill()
        holder.wait()
    Trainer(cfg(tmp_path, "train.max_steps=1")).fit()  # the lock died with its holder


# ---- configs: one line, exit 2, nothing written -------------------------------------------------

BAD = [
    ("train.grad_clip=-1", "train.grad_clip=-1.0 is not allowed: use a number >= 0"),
    ("parallel.strategy=fsdpp", "use one of none, ddp, fsdp"),
    ("data.batch_size=0", "data.batch_size=0 is not allowed: use an integer >= 1"),
    ("optim.lr=-0.1", "optim.lr=-0.1 is not allowed: use a number > 0"),
    ("job.name=../../elsewhere", "use a single folder name"),
    ("job.group=a/b", "use a single folder name"),
    ("logging.every=0", "logging.every=0 is not allowed"),
    ("checkpoint.keep_last=-2", "checkpoint.keep_last=-2 is not allowed"),
    ("optim.betas=[0.9,1.5]", "use two numbers in [0, 1)"),
]


@pytest.mark.parametrize("override,message", BAD, ids=[b[0] for b in BAD])
def test_values_out_of_domain_are_one_line_before_anything_is_written(
    tmp_path, capsys, override, message
):
    argv = ["toy_regression", "--module", "tests.toy_experiments", f"job.output_root={tmp_path}"]
    assert launch_train.main([*argv, override]) == EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not list(tmp_path.iterdir())


def test_a_refused_resume_keeps_the_runs_config(tmp_path):
    Trainer(cfg(tmp_path, "train.max_steps=4")).fit()
    config = tmp_path / "worldtune_tests" / "toy" / "toy_regression" / "config.yaml"
    before = config.read_text()
    with pytest.raises(ConfigError, match="model.hidden=32: .* cannot change on resume"):
        Trainer(cfg(tmp_path, "model.hidden=32"))
    assert config.read_text() == before


def test_load_path_problems_are_one_line(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"net.0.weight": Evil()}))
    assert run(cfg(tmp_path, f"checkpoint.load_path={evil}", "job.name=evil"), []) == 2
    assert not (tmp_path / "pwned").exists()
    other = tmp_path / "other.pt"
    torch.save({"net.0.weight": torch.zeros(3)}, other)
    with pytest.raises(ConfigError, match="other.pt: the file does not match the model"):
        Trainer(cfg(tmp_path, f"checkpoint.load_path={other}", "job.name=other"))


# ---- data: a corrupt held-out clip is skipped, not fatal ----------------------------------------


def test_a_corrupt_heldout_clip_is_skipped(tmp_path, caplog):
    from data_prep.synthetic import generate
    from framework.data.dataset import VideoDataset

    root = generate(tmp_path / "d", num_videos=1, num_frames=5, size=16, num_val=2)
    first = sorted((root / "val" / "videos").glob("*.mp4"))[0]
    first.write_bytes(os.urandom(3000))
    with caplog.at_level(logging.WARNING):
        items = VideoDataset(root, num_frames=3, video_size=(16, 16)).heldout_items(2, 3)
    assert [i.name for i in items] == [sorted((root / "val" / "videos").glob("*.mp4"))[1].stem]
    assert "held-out item skipped" in caplog.text
    for p in (root / "val" / "videos").glob("*.mp4"):
        p.write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="no readable held-out clip"):
        VideoDataset(root, num_frames=3, video_size=(16, 16)).heldout_items(2, 3)


# ---- batch items fail alone ---------------------------------------------------------------------


def test_batch_items_are_checked_up_front_and_fail_alone(tmp_path):
    from PIL import Image

    from framework.inference.video2world import read_batch

    good = tmp_path / "in" / "g.png"
    good.parent.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(good)
    (tmp_path / "in" / "g.txt").write_text("the benchmark's prompt")
    out = tmp_path / "out"
    entries = [
        {"input_video": str(good), "prompt": "ok", "output_video": str(out / "a.mp4")},
        {"input_video": str(good), "output_video": str(out / "b.mp4")},  # no prompt: ""
        {"input_video": str(good), "prompt": "dup", "output_video": str(out / "a.mp4")},
        {"input_video": str(good), "prompt": ["a", "list"]},
        {"input_video": str(good), "prompt": "x", "output_video": str(good)},
        {"input_video": str(good), "prompt": "x", "output_video": str(tmp_path / "in" / "g.mp4")},
        "not an object",
        {"input_video": 3, "prompt": "x"},
    ]
    batch = tmp_path / "batch.json"
    batch.write_text(json.dumps(entries))
    items, rejected = read_batch(batch, out)
    assert [(i.prompt, Path(i.output).name) for i in items] == [("ok", "a.mp4"), ("", "b.mp4")]
    reasons = dict(rejected)
    assert "is also item 0's output" in reasons["item 2"]
    assert "prompt must be a string, not a list" in reasons["item 3"]
    assert "is an input of this batch" in reasons["item 4"]
    assert "would replace the prompt file" in reasons["item 5"]
    assert "not an object" in reasons["item 6"] and "needs input_video" in reasons["item 7"]


def test_an_image_too_large_is_refused_without_decoding_it(tmp_path):
    from PIL import Image

    from framework.inference import media

    big = tmp_path / "big.png"
    Image.new("1", (9000, 9000)).save(big)  # 81 MP in a few kB
    with pytest.raises(media.InputError, match="9000x9000 pixels, more than"):
        media.load_conditioning(big, (16, 16), 1)


def test_dreamgen_refuses_to_write_into_the_benchmark_folder(tmp_path, capsys):
    from data_prep import dreamgen

    bench = tmp_path / "gr1_object"
    bench.mkdir()
    (bench / "a.png").write_bytes(b"")
    (bench / "a.txt").write_text("pick up the cup")
    assert dreamgen.main(["--dataset_path", str(bench), "--save_path", str(bench)]) == 2
    assert "is the benchmark folder itself" in capsys.readouterr().err
    assert (bench / "a.txt").read_text() == "pick up the cup"


def test_synthetic_bad_flags_are_one_line(tmp_path, capsys):
    from data_prep import synthetic

    assert synthetic.main([str(tmp_path / "s"), "--size", "7"]) == 2
    assert capsys.readouterr().err.strip() == "error: --size must be an even number >= 16"


def test_a_preemption_signal_during_setup_is_kept_and_acted_on(tmp_path, monkeypatch):
    """SLURM's warning may come while a 14B model is still being built: the run must not die
    without a checkpoint, but save after its first step and exit 75 (requeue)."""
    import signal

    from framework.trainer import EXIT_PREEMPTED

    real_init = Trainer.__init__

    def init_then_signal(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        os.kill(os.getpid(), signal.SIGUSR1)  # before fit() installs its own handler

    monkeypatch.setattr(Trainer, "__init__", init_then_signal)
    assert run(cfg(tmp_path), []) == EXIT_PREEMPTED
    assert latest(tmp_path) == "iter_000000001.pt"
