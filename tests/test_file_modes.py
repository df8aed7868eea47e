"""Files worldtune writes get the modes a plain write gives under the umask (issue 30 item 1):
checkpoints and run folders on shared storage stay readable by the lab's group."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

import tests.toy_experiments  # noqa: F401  registers toy_regression
from framework.config import apply_overrides, get
from framework.io import atomic_torch_save, atomic_write_text, temp_dir_beside
from framework.trainer import Trainer


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(params=[0o022, 0o027, 0o077])
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def test_atomic_writes_honour_the_umask(tmp_path, umask):
    text = atomic_write_text(tmp_path / "a" / "config.yaml", "x: 1\n")
    pt = atomic_torch_save({"w": 1}, tmp_path / "a" / "iter_1.pt")
    plain = tmp_path / "plain.txt"
    plain.write_text("x")  # what a normal write gives
    assert mode(text) == mode(pt) == mode(plain) == 0o666 & ~umask
    folder = temp_dir_beside(tmp_path / "export")
    assert mode(folder) == 0o777 & ~umask
    assert folder.name.startswith(".export.") and folder.parent == tmp_path


def test_rewriting_a_file_keeps_its_mode(tmp_path, umask):
    path = tmp_path / "latest_checkpoint.txt"
    path.write_text("iter_1\n")
    path.chmod(0o640)
    atomic_write_text(path, "iter_2\n")
    assert path.read_text() == "iter_2\n" and mode(path) == 0o640


def test_a_training_run_folder_is_group_readable(tmp_path):
    old = os.umask(0o022)
    try:
        cfg = apply_overrides(
            get("toy_regression"), [f"job.output_root={tmp_path}", "train.max_steps=2"]
        )
        assert Trainer(cfg).fit() is True
    finally:
        os.umask(old)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.suffix == ".pt" for p in files) and any(p.name == "config.yaml" for p in files)
    assert {str(p.relative_to(tmp_path)): oct(mode(p)) for p in files if mode(p) != 0o644} == {}
    dirs = [p for p in tmp_path.rglob("*") if p.is_dir()]
    assert {str(p.relative_to(tmp_path)): oct(mode(p)) for p in dirs if mode(p) != 0o755} == {}
