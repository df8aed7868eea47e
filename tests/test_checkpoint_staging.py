"""The parts of format=dcp saves under the trainer (framework/trainer/checkpoint_dcp.py,
checkpoint_stage.py, checkpoint_space.py, checkpoint_proc.py), one at a time: pinning ranges,
how many staging files fit in memory, the writer process's mapping of staging files, the disk
space that saves in flight still take, and which killed saves' folders pruning removes. The
trainer-level behaviour (waits, kills, a full disk) is in tests/test_checkpoint_dcp.py."""

from __future__ import annotations

import logging
import os

import torch

from framework.trainer import checkpoint_dcp as C


def test_pruning_keeps_the_folder_of_a_save_in_flight(tmp_path):
    """A published save prunes the folders of killed saves up to itself, not a later one being
    written (with several ranks, the other ranks' writers may already have made it)."""
    folder = tmp_path / "optim"
    for name in ("iter_000000002", "iter_000000004", "iter_000000006"):
        (folder / f"{name}{C.TMP_SUFFIX}").mkdir(parents=True)
    C.clear_tmp_dirs(folder, upto="iter_000000004.pt")
    assert [p.name for p in folder.iterdir()] == ["iter_000000006.tmpdir"]
    C.clear_tmp_dirs(folder)
    assert not list(folder.iterdir())


def test_the_bytes_still_coming_from_saves_in_flight(tmp_path):
    """A save made while others are written needs room for what they still write, less their
    part already on disk and the iterations their pruning drops (keep_last)."""
    from framework.trainer import checkpoint_space as space

    ckpt = tmp_path / "checkpoints"
    (ckpt / "optim" / "iter_000000002").mkdir(parents=True)
    (ckpt / "optim" / "iter_000000002" / "__0_0.distcp").write_bytes(b"x" * 100)
    (ckpt / "trainer").mkdir()
    (ckpt / "trainer" / "iter_000000002.pt").write_bytes(b"x" * 10)
    (ckpt / "latest_checkpoint.txt").write_text("iter_000000002.pt\n")
    (ckpt / "optim" / "iter_000000004.tmpdir").mkdir()
    (ckpt / "optim" / "iter_000000004.tmpdir" / "__0_0.distcp").write_bytes(b"x" * 30)
    assert space.still_coming(ckpt, 0, 110, keep_last=1) == 0
    # 4 still writes 80 of its 110 bytes; publishing it drops 2 (110 bytes) with keep_last=1.
    assert space.still_coming(ckpt, 1, 110, keep_last=1) == 80 - 110
    assert space.still_coming(ckpt, 1, 110, keep_last=2) == 80
    assert space.still_coming(ckpt, 1, 110, keep_last=0) == 80
    # Two in flight with keep_last=1: the older of them is pruned when the newer is published
    # (both are written before the new save starts): the disk ends with one 110-byte save.
    assert space.still_coming(ckpt, 2, 110, keep_last=1) == 110 - 30 - 110
    assert space.still_coming(ckpt, 2, 110, keep_last=0) == 220 - 30


def test_the_staging_file_is_pinned_in_ranges_that_never_split_a_tensor():
    from framework.trainer import checkpoint_stage as S

    sizes = [100_000_000, 10, 10, 10, 70_000_000, 3, 50_000_000, 1]
    state = {f"t{i}": torch.zeros(n) for i, n in enumerate(sizes)}
    layout = S.layout_of(state)
    size = max(off + n * 4 for (off, _, _), n in zip(layout.values(), sizes))
    ranges = S.pin_ranges(layout, size, target=256 * 2**20)
    assert ranges[0][0] == 0 and ranges[-1][1] == size
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))  # contiguous, no overlap
    assert len(ranges) == 3  # 400 MB alone (over the target), then 280 MB with 3 small, the rest
    for off, _, shape in layout.values():
        end = off + torch.Size(shape).numel() * 4
        assert any(a <= off and end <= b for a, b in ranges)
    assert S.pin_ranges(layout, size, target=1) == [
        (a, b) for a, b in zip([0, *sorted(o for o, _, _ in layout.values())[1:]],
                               [*sorted(o for o, _, _ in layout.values())[1:], size])
    ]  # fmt: skip


def test_a_staging_file_that_cannot_be_pinned_is_unpinned_and_said(monkeypatch, caplog):
    """cudaHostRegister failing part way (host memory ran out): the ranges already registered
    are released, the file stays usable unpinned, and one line says what that costs."""
    from framework.trainer import checkpoint_stage as S

    calls: list[tuple[str, int]] = []

    class Cudart:
        def cudaHostRegister(self, ptr, size, flags):
            calls.append(("register", ptr))
            return 2 if len([c for c in calls if c[0] == "register"]) == 3 else 0

        def cudaHostUnregister(self, ptr):
            calls.append(("unregister", ptr))
            return 0

    monkeypatch.setattr(torch.cuda, "cudart", lambda: Cudart())
    real = S.pin_ranges
    monkeypatch.setattr(S, "pin_ranges", lambda layout, size: real(layout, size, target=2**20))
    monkeypatch.setattr(S.time, "sleep", lambda s: None)
    state = {f"t{i}": torch.zeros(2**18) for i in range(6)}  # 1 MiB each: one range each
    with caplog.at_level(logging.WARNING):
        slab = S.Slab(S.layout_of(state), pin=True)
    registered = [p for kind, p in calls if kind == "register"][:2]
    assert [p for kind, p in calls if kind == "unregister"] == registered
    assert not slab.pinned and slab.ranges == []
    assert "pinning the checkpoint staging file failed at 0.0 of 0.0 GB (CUDA error 2)" in (
        caplog.text
    )
    assert "training waits for each copy" in caplog.text
    slab.view("/t3").copy_(torch.ones(2**18))  # still a working staging file
    assert float(slab.view("/t3").sum()) == 2**18
    slab.close()


def test_fewer_staging_files_when_they_would_take_half_the_memory(monkeypatch, caplog):
    """Each staging file pins one save's size of host memory: a run asks for 2 but gets what
    half of the node's available memory holds, said in one line."""
    from framework.trainer import checkpoint_stage as S
    from framework.trainer import dist as D

    writer = C.AsyncDCPWriter(D.DistEnv(), buffers=2)
    monkeypatch.setattr(S, "available_memory", lambda: 5 * 10**9)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    assert writer._affordable(1_250_000_000) == 2  # 2 x 1.25 GB: half of the 5 GB available
    assert "would pin" not in caplog.text
    with caplog.at_level(logging.WARNING):
        assert writer._affordable(1_250_000_001) == 1
    assert "checkpoint.staging_buffers=2 would pin 2.5 GB" in caplog.text
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")  # the node's other ranks pin theirs too
    assert writer._affordable(150_000_000) == 2 and writer._affordable(160_000_000) == 1
    caplog.clear()
    writer.buffers = 1  # one is the least, and asked for: nothing to say while it fits
    with caplog.at_level(logging.WARNING):
        assert writer._affordable(600_000_000) == 1
        assert caplog.text == ""
        # 8 x 0.7 GB does not fit in 5 GB: still one file, and one line says the run may die.
        assert writer._affordable(700_000_000) == 1
    assert "would pin" not in caplog.text
    assert "pins 5.6 GB of host memory on this node and only 5.0 GB is available" in caplog.text
    assert "give the job more host memory (SLURM --mem)" in caplog.text


def fake_cgroups(tmp_path, lines: str, files: dict[str, str]):
    """A /proc/self/cgroup and a /sys/fs/cgroup tree of `files` ({path: text}) under tmp_path."""
    proc = tmp_path / "proc_cgroup"
    proc.write_text(lines)
    root = tmp_path / "cgroup"
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       2000000000 kB\nMemAvailable:   1500000000 kB\n")
    return meminfo, proc, root


GiB = 2**30


def test_a_slurm_jobs_cgroup_v2_limit_caps_the_memory_a_run_may_pin(tmp_path):
    """A job given 10 GiB (`--mem`) on a node with 1.4 TiB available: its steps' folders set no
    limit, the job's folder does; the room is the limit less the usage plus the inactive page
    cache, and the tightest folder wins."""
    from framework.trainer import host_memory as H

    job = "slurm/uid_0/job_7"
    meminfo, proc, root = fake_cgroups(
        tmp_path,
        f"0::/{job}/step_0/user/task_0\n",
        {
            f"{job}/memory.max": str(10 * GiB),
            f"{job}/memory.current": str(6 * GiB),
            f"{job}/memory.stat": f"anon {4 * GiB}\nfile {2 * GiB}\ninactive_file {GiB}\n",
            f"{job}/step_0/memory.max": "max",
            f"{job}/step_0/user/task_0/memory.max": "max",
            "slurm/memory.max": str(500 * GiB),
            "slurm/memory.current": str(100 * GiB),
        },
    )
    assert H.cgroup_room(proc, root) == 5 * GiB  # 10 - 6 + 1, under slurm's 400
    assert H.available(meminfo, proc, root) == 5 * GiB
    # No limit anywhere: MemAvailable.
    (root / job / "memory.max").write_text("max\n")
    (root / "slurm" / "memory.max").write_text("max\n")
    assert H.cgroup_room(proc, root) is None
    assert H.available(meminfo, proc, root) == 1_500_000_000 * 1024
    # A container's own limit at the root of its namespace ("0::/").
    proc.write_text("0::/\n")
    (root / "memory.max").write_text(str(3 * GiB))
    (root / "memory.current").write_text(str(GiB))
    assert H.available(meminfo, proc, root) == 2 * GiB


def test_a_cgroup_v1_memory_limit_counts_too(tmp_path):
    from framework.trainer import host_memory as H

    meminfo, proc, root = fake_cgroups(
        tmp_path,
        "12:cpu,cpuacct:/slurm/job_3\n11:memory:/slurm/job_3/step_batch\n1:name=systemd:/x\n",
        {
            "memory/slurm/job_3/memory.limit_in_bytes": str(8 * GiB),
            "memory/slurm/job_3/memory.usage_in_bytes": str(7 * GiB),
            "memory/slurm/job_3/memory.stat": f"cache 0\ntotal_inactive_file {GiB}\n",
            "memory/slurm/job_3/step_batch/memory.limit_in_bytes": "9223372036854771712",
        },
    )
    assert H.cgroup_room(proc, root) == 2 * GiB
    assert H.available(meminfo, proc, root) == 2 * GiB
    # Nothing readable: 0 (unknown), which keeps the staging files asked for.
    assert H.available(tmp_path / "none", tmp_path / "none", root) == 0


def test_the_writer_maps_a_new_staging_file_that_took_a_closed_ones_fd(tmp_path):
    """A staging file closed (a new layout) and a new one of the same size usually get the same
    fd number: the writer process must map the new file, not reuse the old mapping."""
    from framework.trainer import checkpoint_proc as P
    from framework.trainer import checkpoint_stage as S

    files: dict = {}
    for value in (1.0, 2.0):
        state = {"w": torch.full((1000,), value)}
        slab = S.Slab(S.layout_of(state), pin=False)
        request = {
            "pid": os.getpid(),
            "fd": slab.fd,
            "size": slab.size,
            "serial": slab.serial,
            "live": [slab.serial],
            "dir": str(tmp_path / f"save{int(value)}"),
            "state": S.stage(state, slab),
            "threads": 1,
        }
        assert "records" in P._write(request, None, files)
        slab.close()
    # The case this test is about: the lowest free fd comes back for the second file (not
    # asserted: another thread of the test process could take it in between in rare runs).
    back = {"w": torch.zeros(1000)}
    C.dcp_load(tmp_path / "save2", back)
    assert torch.equal(back["w"], torch.full((1000,), 2.0))
