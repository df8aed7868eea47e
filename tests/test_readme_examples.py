"""What the README shows works as shown (issue 30 item 8): every override of its table, `make
list`'s whole descriptions, and `make generate`'s default guidance."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from framework.config import apply_overrides, get, load_all
from framework.config.registry import entries
from framework.inference.settings import guidance_for
from framework.trainer.validate import validate
from launch import train

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def readme_overrides() -> list[str]:
    section = README.split("## Overrides", 1)[1].split("\n## ", 1)[0]
    cells = re.findall(r"^\| `(.+?)` \|", section, flags=re.M)
    return [shlex.split(cell)[0] for cell in cells]  # as the shell hands them over


def test_the_table_is_found():
    assert len(readme_overrides()) >= 9


@pytest.mark.parametrize("override", readme_overrides())
def test_every_readme_override_applies_to_the_default_job(override):
    load_all()
    cfg = apply_overrides(get("tiny_gr1"), [override])
    validate(cfg)


def test_list_prints_whole_descriptions(capsys):
    load_all()
    train.print_list()
    flat = " ".join(capsys.readouterr().out.split())
    for entry in entries():
        assert entry.description in flat, entry.name
    # A docstring whose first paragraph wraps: all of it, not its first line.
    one_gpu = next(e for e in entries() if e.name == "bridge_57frames_1gpu")
    assert one_gpu.description.endswith("(docs/performance.md).")


def test_generation_defaults_to_the_guidance_the_model_was_trained_for():
    load_all()
    tiny, groot = get("tiny_gr1"), get("groot_gr1_480")
    assert tiny.model.objective.text_dropout == 0 and guidance_for(tiny, None) == 0
    assert guidance_for(groot, None) == 7
    assert guidance_for(tiny, 3.0) == 3.0  # what is asked wins
