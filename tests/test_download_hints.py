"""The download commands our errors print run with the pinned huggingface_hub (issue 30 item 2):
the `hf` executable is installed beside this Python and its `download` accepts every option."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

from framework.models.hub import download_hint


def test_printed_download_commands_parse_with_the_installed_cli():
    hints = [
        download_hint("checkpoints/nvidia/Cosmos-Predict2-2B-Video2World/model-720p-16fps.pt"),
        download_hint("google-t5/t5-11b"),
    ]
    commands = [shlex.split(re.search(r"`([^`]+)`", h).group(1)) for h in hints]
    assert {c[0] for c in commands} == {"hf"}
    exe = Path(sys.executable).parent / "hf"
    assert exe.is_file(), f"{exe} is missing: huggingface_hub>=0.34 installs it"
    usage = subprocess.run(
        [str(exe), "download", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for argv in commands:
        assert argv[1] == "download"
        for option in (a for a in argv[2:] if a.startswith("--")):
            assert option in usage, (option, usage[:500])
