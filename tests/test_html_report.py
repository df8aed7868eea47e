"""report.html as a person sees it: opened from disk in real headless Chromium (Debian's
package; `make install-test-system` installs it), its DOM after the page's script ran, and a
screenshot."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

from framework.inference import html_report, media

# Headless Chromium per test: the slow tier (make test-fast leaves it out).
pytestmark = pytest.mark.slow

# The flags that work as root on a machine without network or GPU (a fresh profile each time).
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]


def chromium(url: str, *args: str, timeout: int = 60) -> str:
    """Run headless Chromium on `url`; returns stdout. Fails (never skips) without Chromium."""
    exe = shutil.which("chromium")
    if exe is None:
        pytest.fail(
            "chromium is not installed; run `make install-test-system` (launch/install_system.sh "
            "installs Debian's chromium) or `apt-get install --no-install-recommends chromium`."
        )
    with tempfile.TemporaryDirectory() as profile:
        # Virtual time lets the videos load and the page's script run before the dump.
        cmd = [exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=4000"]
        out = subprocess.run(
            [*cmd, *args, url], capture_output=True, text=True, timeout=timeout, check=False
        )
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def dump_dom(page: Path, fragment: str = "") -> str:
    # A tall window: every video is on screen, so the page plays them all.
    return chromium(page.resolve().as_uri() + fragment, "--dump-dom", "--window-size=1280,4000")


def screenshot(page: Path, png: Path) -> np.ndarray:
    from PIL import Image

    chromium(page.resolve().as_uri(), f"--screenshot={png}", "--window-size=1280,1000")
    return np.asarray(Image.open(png).convert("RGB"))


def sections(dom: str) -> list[str]:
    return re.findall(r"<section [^>]*>", dom)


def video(path: Path, colour: tuple[int, int, int]) -> Path:
    frames = torch.zeros(3, 4, 32, 48, dtype=torch.uint8)
    frames[:, :, 8:24, 12:36] = torch.tensor(colour, dtype=torch.uint8).view(3, 1, 1, 1)
    return media.save_video(path, frames, 8.0)


def cand(path: Path, seed: int, score: float, answers: list[str | None]) -> dict:
    comps = [
        [{"name": "Gripper", "anomaly": "No" if a == "no" else "Yes", "analysis": "ok"}]
        for a in answers
    ]
    return {
        "seed": seed,
        "video": str(path),
        "score": score,
        "no": answers.count("no"),
        "parsed": sum(a is not None for a in answers),
        "answers": answers,
        "components": comps,
        "score_file": str(path.with_name(f"{path.stem}_score{int(score * 100):03d}.json")),
    }


@pytest.fixture
def report(tmp_path) -> Path:
    """Two items of two videos each (best 0.80 and 0.40) and a failed item, in a run folder."""
    run = tmp_path / "run"
    a0, a1 = video(run / "a_seed0.mp4", (200, 30, 30)), video(run / "a_seed1.mp4", (30, 200, 30))
    b0, b1 = video(run / "b_seed0.mp4", (30, 30, 200)), video(run / "b_seed1.mp4", (200, 200, 30))
    summary = {
        "created": "2026-11-30T12:00:00+00:00",
        "settings": {"critic": "cosmos_reason1", "num_generations": 2, "num_critic_trials": 5},
        "counts": {"ok": 2, "failed": 1},
        "items": [
            {
                "name": "a",
                "input": "a.png",
                "prompt": "pick up the <red> cube & go",
                "output": str(tmp_path / "out" / "a.mp4"),
                "status": "ok",
                "winner_seed": 1,
                "candidates": [
                    cand(a0, 0, 0.2, ["yes", "yes", "no", "yes", "yes"]),
                    cand(a1, 1, 0.8, ["no", "no", "no", "no", "yes"]),
                ],
            },
            {
                "name": "b",
                "input": "b.png",
                "prompt": "push the plate",
                "output": str(tmp_path / "out" / "b.mp4"),
                "status": "ok",
                "winner_seed": 0,
                "candidates": [
                    cand(b0, 0, 0.4, ["no", "yes", "no", "yes", "yes"]),
                    cand(b1, 1, 0.0, [None] * 5),
                ],
            },
            {"name": "c", "input": "c.png", "status": "failed", "reason": "c.png does not exist"},
        ],
    }
    return html_report.write_report(summary, run / "report.html")


def test_report_renders_videos_scores_and_winners_in_chromium(report, tmp_path):
    dom = dump_dom(report)
    figures = re.findall(r"<figure [^>]*>", dom)
    assert len(re.findall(r"<video ", dom)) == 4 and len(figures) == 4
    # Every video decoded from its relative path and plays (the page's script marks both).
    assert sum('data-loaded="1"' in f and 'data-playing="1"' in f for f in figures) == 4, figures
    assert re.findall(r'data-score="([0-9.]+)"', dom) == ["0.20", "0.80", "0.40", "0.00"]
    assert dom.count('class="badge">winner<') == 2
    assert re.search(r'<figure class="cand winner" data-seed="1" data-score="0.80"', dom)
    assert "best 0.80" in dom and "best 0.40" in dom and "FAILED: c.png does not exist" in dom
    assert "4 No / 5 parsed of 5" in dom and "no answer parsed" in dom
    assert "pick up the &lt;red&gt; cube &amp; go" in dom  # prompts are escaped
    assert 'src="a_seed0.mp4"' in dom  # relative: the folder can be moved or copied
    assert "3 of 3 items shown" in dom

    pixels = screenshot(report, tmp_path / "shot.png")
    assert pixels.shape[0] > 500 and pixels.shape[1] > 500
    assert pixels.std() > 10 and len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50
    green = np.all(pixels == [46, 125, 50], axis=-1).sum()  # the winner border and badge
    assert green > 100


def test_report_filters_low_scoring_and_failed_items(report):
    # Below 0.5: item b (best 0.40) and the failed item c stay; a (0.80) is hidden.
    shown = sections(dump_dom(report, "#below=0.5"))
    assert ["hidden" in s for s in shown] == [True, False, False]
    shown = sections(dump_dom(report, "#failed"))
    assert ["hidden" in s for s in shown] == [True, True, False]


def test_missing_video_is_reported_on_the_page(report):
    (report.parent / "b_seed1.mp4").unlink()
    dom = dump_dom(report)
    assert dom.count('data-loaded="error"') == 1
    assert re.search(r'<p class="playerror">cannot play b_seed1.mp4', dom)


def test_only_videos_on_screen_play(report):
    """A short window shows the first item only: its videos play, the second item's do not
    (a DreamGen page has hundreds of videos, more than a browser decodes at once)."""
    dom = chromium(report.resolve().as_uri(), "--dump-dom", "--window-size=1280,500")
    playing = ['data-playing="1"' in f for f in re.findall(r"<figure [^>]*>", dom)]
    assert playing == [True, True, False, False]
