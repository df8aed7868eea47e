"""checkpoint.format=dcp (framework/trainer/checkpoint_dcp.py): sharded folders written in the
background, exact resume, a kill or a full disk at any point of a save, resume on another number
of processes (gloo, CPU), and the commands that read a step saved without a model file."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import tests.toy_experiments  # noqa: F401  (registers toy_regression)
from framework import io as io_mod
from framework import manifest
from framework.config import apply_overrides, get
from framework.trainer import EXIT_OK, Trainer, run
from framework.trainer import checkpoint_dcp as C
from framework.trainer.checkpoint import CheckpointWriteError
from framework.trainer.entry import EXIT_WRITE

ROOT = Path(__file__).resolve().parents[1]
STEPS = [
    "train.max_steps=8",
    "checkpoint.save_iter=4",
    "model.input_noise=0.1",
    "train.ema.enabled=true",
    "+checkpoint.format=dcp",
]


def cfg(tmp_path: Path, *overrides: str):
    return apply_overrides(
        get("toy_regression"), [f"job.output_root={tmp_path}", *STEPS, *overrides]
    )


def state(t: Trainer) -> list[torch.Tensor]:
    return [p.detach().clone() for p in t.model.parameters()] + [s.clone() for s in t.ema.shadow]


def root(tmp_path: Path, name: str = "toy_regression") -> Path:
    return tmp_path / "worldtune_tests" / "toy" / name / "checkpoints"


def latest(tmp_path: Path, name: str = "toy_regression") -> str:
    return (root(tmp_path, name) / "latest_checkpoint.txt").read_text().strip()


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, list[torch.Tensor]]:
    out = tmp_path_factory.mktemp("ref")
    t = Trainer(cfg(out))
    t.fit()
    return out, state(t)


def test_layout_sharded_folders_and_a_model_file_for_the_last_step(reference):
    out, _ = reference
    ckpt = root(out)
    assert latest(out) == "iter_000000008.pt"
    for step in (4, 8):
        folder = ckpt / "optim" / f"iter_{step:09d}"
        assert C.is_dcp_dir(folder)
        keys = C.stored_keys(folder)
        assert "model.net.0.weight" in keys and "model.net_ema.0.weight" in keys
        assert any(k.startswith("optim.state.net.0.weight") for k in keys)
        parts = manifest.read(ckpt / "manifest" / f"iter_{step:09d}.json")
        assert parts["optim"] == manifest.record_folder(folder)  # each file's size and hash
        assert {f: r["bytes"] for f, r in parts["optim"].items()} == C.file_sizes(folder)
        assert (ckpt / "scheduler" / f"iter_{step:09d}.pt").is_file()
    # The official-layout model file: the last step only; the folder holds the same weights.
    assert not (ckpt / "model" / "iter_000000004.pt").exists()
    whole = torch.load(ckpt / "model" / "iter_000000008.pt", weights_only=True)
    sharded = C.read_model_state(ckpt / "optim" / "iter_000000008")
    assert whole.keys() == sharded.keys() and all(torch.equal(whole[k], sharded[k]) for k in whole)
    assert not list(ckpt.rglob("*.tmp*"))


@pytest.mark.parametrize("threads", [1, 3])
def test_each_save_is_written_as_writer_threads_files(tmp_path, threads):
    t = Trainer(cfg(tmp_path, "train.max_steps=4", f"+checkpoint.writer_threads={threads}"))
    t.fit()
    folder = root(tmp_path) / "optim" / "iter_000000004"
    assert sorted(p.name for p in folder.glob("*.distcp")) == [
        f"__0_{i}.distcp" for i in range(threads)
    ]
    parts = manifest.read(root(tmp_path) / "manifest" / "iter_000000004.json")
    assert parts["optim"] == manifest.record_folder(folder)
    whole = C.read_model_state(folder)
    assert all(torch.equal(whole[f"net.{k}"], v) for k, v in t.model.net.state_dict().items())


def test_writer_threads_below_one_is_refused_in_one_line(tmp_path):
    from framework.config import ConfigError

    with pytest.raises(ConfigError, match="checkpoint.writer_threads"):
        Trainer(cfg(tmp_path, "+checkpoint.writer_threads=0"))


def test_resume_from_a_sharded_step_is_exact(tmp_path, reference):
    Trainer(cfg(tmp_path, "train.max_steps=6")).fit()
    # The run stopped at 6, after the save of 4; 6 (its last step) was saved too: go back to 4.
    (root(tmp_path) / "latest_checkpoint.txt").write_text("iter_000000004.pt\n")
    resumed = Trainer(cfg(tmp_path))
    assert resumed.step == 4
    resumed.fit()
    assert all(torch.equal(a, b) for a, b in zip(state(resumed), reference[1]))


@pytest.mark.slow
@pytest.mark.parametrize("buffers", [1, 2])
def test_sigkill_then_restart_gives_the_same_losses(tmp_path, buffers):
    def train(name: str, *extra: str, armed: bool = False) -> subprocess.CompletedProcess:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        env.pop("TOY_SIGNAL_ARMED", None)
        if armed:
            env["TOY_SIGNAL_ARMED"] = "1"
        cmd = [sys.executable, "-c", "from tests.toy_experiments import main; main()"]
        cmd += ["toy_regression", f"job.output_root={tmp_path}", f"job.name={name}", *STEPS]
        cmd += [
            "train.max_steps=12",
            "data.num_workers=1",
            f"+checkpoint.staging_buffers={buffers}",
        ]
        cmd += extra
        return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)

    kill = "+hooks.zz={_target_:tests.toy_experiments.SignalAtStep,step:10,sig:SIGKILL}"
    assert train("ref").returncode == 0
    assert train("crash", kill, armed=True).returncode == -9
    # Step 8's save was under way or done when the kill came: latest names 4 or 8, never a
    # half-written step (with one staging file, the save at 8 waited for 4's write; with two,
    # both can still be in flight: nothing may be named yet). The step it names matches its
    # manifest; a folder without one is newer than that step: the kill came after its rename
    # and before its manifest (the finalize order), and the restart replaces it.
    ckpt = root(tmp_path, "crash")
    marker = ckpt / "latest_checkpoint.txt"
    named = marker.read_text().strip() if marker.exists() else None
    assert named in ((None,) if buffers == 2 else ()) + ("iter_000000004.pt", "iter_000000008.pt")
    if named is not None:
        folder = ckpt / "optim" / named.removesuffix(".pt")
        parts = manifest.read(ckpt / "manifest" / f"{folder.name}.json")
        assert parts["optim"] == manifest.record_folder(folder)
    for folder in (ckpt / "optim").glob("iter_*[0-9]"):
        if not (ckpt / "manifest" / f"{folder.name}.json").exists():
            assert named is None or folder.name > named.removesuffix(".pt")
    again = train("crash", kill)
    assert again.returncode == 0, again.stderr[-3000:]

    def losses(name: str) -> dict[int, float]:
        job = tmp_path / "worldtune_tests" / "toy" / name
        rows = [json.loads(x) for x in (job / "metrics.jsonl").read_text().splitlines()]
        return {r["step"]: r["loss"] for r in rows}

    assert losses("crash") == losses("ref")


# A save of step 8 (the last) renames, in order: the folder, model, scheduler, trainer, manifest,
# latest. The writer thread catches the "kill"; the run stops with a write error.
STAGES = {
    "folder": "optim/iter_000000008",
    "model": "model/iter_000000008.pt",
    "scheduler": "scheduler/iter_000000008.pt",
    "trainer": "trainer/iter_000000008.pt",
    "manifest": "manifest/iter_000000008.json",
    "latest": "latest_checkpoint.txt",
}


@pytest.mark.parametrize("stage", list(STAGES))
def test_a_kill_at_any_stage_leaves_the_previous_checkpoint_named(
    tmp_path, monkeypatch, reference, stage
):
    real = os.replace
    armed = {"on": True}

    def dies(src, dst):
        if armed["on"] and str(dst).endswith(STAGES[stage]) and "iter_000000004" not in str(src):
            if stage != "latest" or (root(tmp_path) / "manifest/iter_000000008.json").exists():
                raise KeyboardInterrupt(f"killed before {dst}")
        real(src, dst)

    monkeypatch.setattr(io_mod.os, "replace", dies)
    with pytest.raises(CheckpointWriteError, match="killed before"):
        Trainer(cfg(tmp_path)).fit()
    armed["on"] = False
    assert latest(tmp_path) == "iter_000000004.pt"
    resumed = Trainer(cfg(tmp_path))
    assert resumed.step == 4
    resumed.fit()
    assert all(torch.equal(a, b) for a, b in zip(state(resumed), reference[1]))
    assert not list(root(tmp_path).rglob("*.tmpdir"))


def test_leftovers_of_a_killed_save_are_not_used_and_are_replaced(tmp_path, reference, caplog):
    Trainer(cfg(tmp_path, "train.max_steps=4")).fit()
    ckpt = root(tmp_path)
    # SIGKILL while writing step 8 (a half folder), and a killed run that renamed its folder of
    # step 12 but died before the manifest: neither is complete.
    (ckpt / "optim" / "iter_000000008.tmpdir").mkdir()
    (ckpt / "optim" / "iter_000000008.tmpdir" / "__0_0.distcp").write_bytes(b"half")
    (ckpt / "optim" / "iter_000000012").mkdir()
    (ckpt / "optim" / "iter_000000012" / ".metadata").write_bytes(b"x")
    (ckpt / "latest_checkpoint.txt").write_text("iter_000000012.pt\n")
    with caplog.at_level(logging.WARNING):
        resumed = Trainer(cfg(tmp_path))
    assert resumed.step == 4
    assert "iter_000000012.pt is incomplete or damaged" in caplog.text
    resumed.fit()
    assert latest(tmp_path) == "iter_000000008.pt"
    assert all(torch.equal(a, b) for a, b in zip(state(resumed), reference[1]))
    assert not (ckpt / "optim" / "iter_000000008.tmpdir").exists()


def test_a_config_that_does_not_fit_the_folder_is_refused_in_one_line(tmp_path):
    from framework.config import ConfigError

    Trainer(cfg(tmp_path, "train.max_steps=4")).fit()
    (root(tmp_path) / "optim" / "iter_000000002.tmpdir").mkdir()  # a cut-off save's leftover
    with pytest.raises(ConfigError, match="model.hidden=32: .* cannot change on resume"):
        Trainer(cfg(tmp_path, "model.hidden=32"))  # the job's config.yaml refuses it first
    config = root(tmp_path).parent / "config.yaml"
    config.rename(config.with_suffix(".bak"))  # without it, the folder itself must refuse
    with pytest.raises(ConfigError, match="does not fit this config"):
        Trainer(cfg(tmp_path, "model.hidden=32"))
    config.with_suffix(".bak").rename(config)
    t = Trainer(cfg(tmp_path, "train.max_steps=6", "checkpoint.save_iter=2"))
    t.fit()
    assert not (root(tmp_path) / "optim" / "iter_000000002.tmpdir").exists()  # pruned


def test_a_full_disk_in_the_background_stops_the_run_with_exit_5(
    tmp_path, monkeypatch, caplog, capfd
):
    from framework.trainer.checkpoint_proc import WriterProcess

    monkeypatch.setattr(WriterProcess, "command", [sys.executable, "-m", "tests.faulty_writer"])
    monkeypatch.setenv("FAULTY_WRITER_PATH", "iter_000000004")
    with caplog.at_level(logging.ERROR):
        code = run(cfg(tmp_path, "checkpoint.save_iter=2", "train.max_steps=12"), [])
    assert code == EXIT_WRITE
    assert "saving checkpoint iter_000000004.pt failed" in caplog.text
    assert "the disk is full" in caplog.text and "No space left on device" in caplog.text
    # Said in one line: neither the writer process nor a thread printed a traceback.
    assert "Traceback" not in capfd.readouterr().err
    job = root(tmp_path).parent
    steps = [json.loads(x)["step"] for x in (job / "metrics.jsonl").read_text().splitlines()]
    # Found at the next step's all-reduce after the write failed, at the latest after the save
    # that finds both staging files taken (8: 4 failing, 6 queued behind it); 6 is not
    # published after 4 failed.
    assert max(steps) <= 8
    assert latest(tmp_path) == "iter_000000002.pt"
    assert not list(root(tmp_path).rglob("*.tmpdir"))
    monkeypatch.delenv("FAULTY_WRITER_PATH")
    assert run(cfg(tmp_path, "checkpoint.save_iter=2", "train.max_steps=12"), []) == EXIT_OK
    assert latest(tmp_path) == "iter_000000012.pt"


def test_a_writer_killed_for_memory_stops_the_run_in_one_line(tmp_path, monkeypatch, caplog, capfd):
    from framework.trainer.checkpoint_proc import WriterProcess

    monkeypatch.setattr(WriterProcess, "command", [sys.executable, "-m", "tests.faulty_writer"])
    monkeypatch.setenv("FAULTY_WRITER_KILL", "iter_000000004")
    with caplog.at_level(logging.ERROR):
        code = run(cfg(tmp_path, "checkpoint.save_iter=2"), [])
    assert code == EXIT_WRITE
    line = next(r.getMessage() for r in caplog.records if "iter_000000004.pt failed" in r.message)
    assert "the checkpoint writer process was killed by SIGKILL" in line
    assert "out-of-memory killer" in line and "fewer checkpoint.staging_buffers" in line
    assert "disk" not in line  # not the full-disk advice
    assert "Traceback" not in capfd.readouterr().err
    assert latest(tmp_path) == "iter_000000002.pt"
    assert not list(root(tmp_path).rglob("*.tmpdir"))
    monkeypatch.delenv("FAULTY_WRITER_KILL")
    assert run(cfg(tmp_path, "checkpoint.save_iter=2"), []) == EXIT_OK
    assert latest(tmp_path) == "iter_000000008.pt"


@pytest.mark.parametrize("fmt", ["pt", "dcp"])
def test_a_save_that_does_not_fit_the_disk_is_refused_before_it_starts(
    tmp_path, monkeypatch, caplog, fmt
):
    """The free space is checked against the size of the save (all ranks) before anything is
    written: exit 5 naming both sizes, and the start line states the size of one save."""
    from framework.trainer import checkpoint_space as space

    free = {"bytes": 10**12}
    monkeypatch.setattr(space, "free_bytes", lambda root: free["bytes"])
    real = space.refusal

    def tight(name, need, root, marker):
        if name == "iter_000000004.pt":  # the disk fills up after the first save
            free["bytes"] = need // 2
        return real(name, need, root, marker)

    monkeypatch.setattr(space, "refusal", tight)
    with caplog.at_level(logging.INFO):
        code = run(cfg(tmp_path, "checkpoint.save_iter=2", f"checkpoint.format={fmt}"), [])
    assert code == EXIT_WRITE
    line = next(r.message for r in caplog.records if "one save is" in r.message)
    assert f"format={fmt}" in line and "keep_last=0 keeps every save (4 in this run" in line
    refused = next(r.message for r in caplog.records if "so it was not started" in r.message)
    assert "saving checkpoint iter_000000004.pt needs" in refused and "GB free" in refused
    assert latest(tmp_path) == "iter_000000002.pt"
    ckpt = root(tmp_path)
    assert not list(ckpt.rglob("iter_000000004*")) and not list(ckpt.rglob("*.tmp*"))


# ---- another number of processes (gloo) ---------------------------------------------------------

ENTRY = ["-c", "from tests.toy_experiments import main; main()", "toy_regression"]
COMMON = [
    "train.max_steps=8",
    "checkpoint.save_iter=4",
    "train.ema.enabled=true",
    "+checkpoint.format=dcp",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(out: Path, name: str, nproc: int, *overrides: str) -> str:
    """One run on `nproc` processes (torchrun for 2) with the global batch kept at 8."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = [f"job.output_root={out}", f"job.name={name}", *COMMON, *overrides]
    if nproc == 1:
        cmd = [sys.executable, *ENTRY, "data.batch_size=8", *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}"]
        cmd += [f"--master_port={free_port()}", "--no-python", sys.executable, *ENTRY]
        cmd += ["data.batch_size=4", "parallel.strategy=fsdp", "parallel.shard_size=-1", *args]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    return done.stdout + done.stderr


def run_losses(out: Path, name: str) -> list[float]:
    job = out / "worldtune_tests" / "toy" / name
    rows = [json.loads(x) for x in (job / "metrics.jsonl").read_text().splitlines()]
    by_step = {r["step"]: r["loss"] for r in rows}
    return [by_step[s] for s in sorted(by_step)]


@pytest.mark.dist
@pytest.mark.parametrize("before,after", [(2, 1), (1, 2)], ids=["2to1", "1to2"])
@pytest.mark.slow
def test_resume_on_another_number_of_processes(tmp_path, before, after):
    """Saved by FSDP shards on 2 processes and resumed by one (or the reverse): the optimizer,
    EMA and weights are resharded by DCP, and with the same global batch the losses continue
    as an uninterrupted one-process run's (random streams restart from the seed: this toy
    draws none)."""
    launch(tmp_path, "single", 1)
    launch(tmp_path, "moved", before, "train.max_steps=4")
    log = launch(tmp_path, "moved", after)
    assert "random streams restart from the seed" in log
    assert run_losses(tmp_path, "moved") == pytest.approx(
        run_losses(tmp_path, "single"), rel=1e-5, abs=1e-6
    )
    a = torch.load(
        tmp_path / "worldtune_tests/toy/moved/checkpoints/model/iter_000000008.pt",
        weights_only=True,
    )
    b = torch.load(
        tmp_path / "worldtune_tests/toy/single/checkpoints/model/iter_000000008.pt",
        weights_only=True,
    )
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)


def test_the_writer_hashes_the_shards_as_it_writes_them(tmp_path, monkeypatch):
    """No second pass over a save's shards: only DCP's small .metadata (written under a
    temporary name, then renamed) is hashed after the write; the records still match a fresh
    pass over the files (test_layout... checks every file)."""
    from framework import manifest

    passes = []
    real = manifest.record_file
    monkeypatch.setattr(manifest, "record_file", lambda p: passes.append(p.name) or real(p))
    Trainer(cfg(tmp_path, "train.max_steps=4", "checkpoint.save_iter=2")).fit()
    folder = root(tmp_path) / "optim" / "iter_000000004"
    assert any(p.suffix == ".distcp" for p in folder.iterdir())
    assert set(passes) == {".metadata"}
    parts = manifest.read(root(tmp_path) / "manifest" / "iter_000000004.json")
    assert parts["optim"] == {p.name: real(p) for p in sorted(folder.iterdir())}


# A slowed writer's time per save: far longer than the toy's steps between two saves.
WRITE_S = 3.0


@pytest.mark.parametrize("buffers", [1, 2])
def test_a_save_waits_only_when_every_staging_file_is_taken(tmp_path, monkeypatch, caplog, buffers):
    # A save that comes while earlier ones are still being written takes a free staging file;
    # with none free it waits for the oldest write. The metrics name that wait apart from the
    # rest of the save, and a line says what to change (on an H100, 2B saves 13 s apart with one
    # staging file held 0.4 s, then 5.0 s: the disk, not the copy).
    import time

    from framework.trainer.checkpoint_proc import WriterProcess

    real = WriterProcess.write

    def slow(self, request):
        time.sleep(WRITE_S)
        return real(self, request)

    monkeypatch.setattr(WriterProcess, "write", slow)
    overrides = ["checkpoint.save_iter=2", f"+checkpoint.staging_buffers={buffers}"]
    with caplog.at_level(logging.WARNING):
        assert run(cfg(tmp_path, *overrides), []) == EXIT_OK
    rows = [
        json.loads(x) for x in (root(tmp_path).parent / "metrics.jsonl").read_text().splitlines()
    ]
    held = {r["step"]: r for r in rows if "save_held" in r}
    assert sorted(held) == [3, 5, 7]  # the saves at 2, 4 and 6 (8 is the last: no step follows)
    assert held[3].get("save_waited", 0.0) < 0.5  # the first save found the writer free
    # The toy's steps take milliseconds: a save that finds no free staging file waits for most
    # of a 3 s write (1 s of margin is 100s of toy steps, for a loaded CI machine); with two
    # files the save at 4 is copied while 2's is written.
    waits = [s for s in (5, 7) if held[s].get("save_waited", 0.0) >= 1.0]
    assert waits == ([5, 7] if buffers == 1 else [7])
    assert all(held[s]["save_waited"] <= held[s]["save_held"] for s in waits)
    assert "waited" in caplog.text and "raise checkpoint.save_iter" in caplog.text
    # The writes that finished before the last step are in the metrics with their size (each
    # took the sleep), and every save is published, in order.
    written = [r for r in rows if "save_write" in r]
    assert written and all(r["save_write"] >= WRITE_S for r in written)
    assert all(r["save_write_gb"] > 0 for r in written)
    assert latest(tmp_path) == "iter_000000008.pt"
    assert sorted(p.name for p in (root(tmp_path) / "optim").iterdir()) == [
        f"iter_00000000{n}" for n in (2, 4, 6, 8)
    ]


def test_a_save_that_fits_only_after_the_one_in_flight_waits_for_it(tmp_path, monkeypatch):
    """The space check counts saves still being written at their whole size; when only they
    make a save not fit, it waits for them and checks again (it is not refused)."""
    import time

    from framework.trainer import checkpoint_space as space
    from framework.trainer.checkpoint_proc import WriterProcess

    real_write, real_refusal = WriterProcess.write, space.refusal
    monkeypatch.setattr(
        WriterProcess, "write", lambda self, r: time.sleep(WRITE_S) or real_write(self, r)
    )
    asked: list[int] = []

    def room_for_one_and_a_half(name, need, root, marker):
        asked.append(need)
        free = space.HEADROOM + asked[0] * 3 // 2
        monkeypatch.setattr(space, "free_bytes", lambda root: free)
        return real_refusal(name, need, root, marker)

    monkeypatch.setattr(space, "refusal", room_for_one_and_a_half)
    assert run(cfg(tmp_path, "checkpoint.save_iter=4"), []) == EXIT_OK
    one = asked[0]  # the start line's size of one save
    assert 2 * one in asked  # the save at 8 with 4's still in flight...
    assert latest(tmp_path) == "iter_000000008.pt"  # ...waited for it instead of being refused
    assert asked[-1] == one
