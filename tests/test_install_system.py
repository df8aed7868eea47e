"""The system packages only tests need are a named, announced step (issue 30 item 4): `make install`
never runs apt; launch/install_system.sh asks for sudo only when something is missing, and says
what and why first. The script runs with a PATH of stub programs (sudo records its arguments)."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "launch" / "install_system.sh"
PROGRAMS = ("ffmpeg", "slurmctld", "slurmd", "sbatch", "munged", "chromium")


def run_script(tmp_path: Path, present: tuple[str, ...], *args: str) -> tuple[int, str, str]:
    """(exit code, stderr, what sudo was asked) as a non-root user with a sudo that records."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "sudo.log"
    stubs = {name: "exit 0" for name in present}
    stubs["id"] = "echo 1000"
    stubs["sudo"] = f'echo "$*" >> {log}'
    for name, body in stubs.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    out = subprocess.run(
        ["/bin/bash", str(SCRIPT), *args],
        env={"PATH": str(bin_dir)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    return out.returncode, out.stderr, log.read_text() if log.is_file() else ""


def test_nothing_missing_asks_for_nothing(tmp_path):
    assert run_script(tmp_path, PROGRAMS) == (0, "", "")


def test_missing_package_is_announced_then_installed(tmp_path):
    code, err, sudo = run_script(tmp_path, tuple(p for p in PROGRAMS if p != "chromium"))
    assert code == 0
    assert "the test suite needs chromium" in err and "installing them with sudo apt-get" in err
    assert "make test-fast" in err  # says which command needs none of it
    calls = sudo.splitlines()
    assert calls[0].endswith("apt-get update -qq")
    assert calls[1].endswith("apt-get install -y -qq --no-install-recommends chromium")
    assert len(calls) == 2  # nothing else: ffmpeg and SLURM are there


def test_check_only_reports(tmp_path):
    code, err, sudo = run_script(tmp_path, ("chromium",), "--check")
    assert code == 1 and sudo == ""
    assert "ffmpeg" in err and "slurm-client" in err and "munge" in err


def test_make_install_runs_no_apt_and_test_runs_the_announced_step():
    def dry(target: str) -> str:
        # -n: print the recipe only; -W: as if the venv were missing, so the install runs too
        cmd = ["make", "-n", "-W", "setup.cfg", target, "VENV=/nonexistent-venv"]
        return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True).stdout

    assert "install_system.sh" not in dry("install")
    assert "install_system.sh" not in dry("train")
    assert "install_system.sh" not in dry("test-fast") and "-m 'not slow'" in dry("test-fast")
    assert "install_system.sh" in dry("test")
    assert "make install-test-system" in (ROOT / ".ci" / "run").read_text()
