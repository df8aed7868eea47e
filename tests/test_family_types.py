"""The family protocol is typed: a family whose declared callables do not fit how the core calls
them fails the type check `make lint` runs (mypy, setup.cfg [mypy])."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

BAD_FAMILY = """
from torch import nn
from framework.models.family import ModelFamily

class Net(nn.Module):
    pass

def flops(net: Net, t: int, h: int) -> float:  # the core passes (net, t, h, w, text_len)
    return 0.0

BAD = ModelFamily(name="bad", net_classes=(Net,), flops_per_sample=flops, lora_targets=3)
"""


def run_mypy(path: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "mypy", "--follow-imports=silent", "--ignore-missing-imports"]
    cmd += ["--no-incremental", str(path)]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_a_mismatched_family_fails_the_type_check(tmp_path):
    bad = tmp_path / "bad_family.py"
    bad.write_text(BAD_FAMILY)
    done = run_mypy(bad)
    assert done.returncode == 1, done.stdout
    assert 'Argument "flops_per_sample"' in done.stdout
    assert 'Argument "lora_targets"' in done.stdout
    good = tmp_path / "good_family.py"
    good.write_text(BAD_FAMILY.replace("h: int)", "h: int, w: int, n: int)").replace("=3", '="x"'))
    assert run_mypy(good).returncode == 0
