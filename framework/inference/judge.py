"""The critic's scores of best-of-N candidates, kept beside the videos so a second run reuses them.

A score file `<stem>_score<NNN>.json` (upstream's name, NNN = int(100 * score)) holds the raw
answers and the key that makes it reusable: critic, weights folder, K, seed, answer length and the
video's sha256, so a regenerated video or another critic is scored again.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path
from typing import Any

from framework.inference import critic as critics
from framework.io import atomic_write_text


def score_files(video: Path) -> list[Path]:
    return sorted(video.parent.glob(f"{video.stem}_score[0-9][0-9][0-9].json"))


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def reusable_score(video: Path, key: dict[str, Any]) -> dict[str, Any] | None:
    """A score file of this video (same bytes) by the same critic, settings, K and seed."""
    for path in score_files(video):
        try:
            record = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError, UnicodeDecodeError):
            continue
        if isinstance(record, dict) and all(record.get(k) == v for k, v in key.items()):
            return {**record, "score_file": str(path)}
    return None


def write_score(video: Path, record: dict[str, Any]) -> Path:
    """<stem>_score<NNN>.json beside the video (NNN = int(100 * score), upstream's name); any
    older score file of the video is removed."""
    path = video.parent / f"{video.stem}_score{int(record['score'] * 100):03d}.json"
    atomic_write_text(path, json.dumps(record, indent=1) + "\n")
    for old in score_files(video):
        if old != path:
            old.unlink(missing_ok=True)
    return path


class Judge:
    """Scores videos, reusing score files; the critic is built on first need and kept."""

    def __init__(self, args: argparse.Namespace, critic_cls: type[critics.Critic]) -> None:
        self.args, self.cls, self.critic = args, critic_cls, None
        self.scored = self.reused = 0

    def key(self, video: Path) -> dict[str, Any]:
        folder = self.args.checkpoint_dir or getattr(self.cls, "default_checkpoint", None)
        return {
            "critic": self.cls.name,
            "checkpoint_dir": str(folder),
            "num_trials": self.args.num_critic_trials,
            "seed": self.args.seed,
            "max_new_tokens": self.args.critic_max_new_tokens,
            "video_sha256": sha256(video),
        }

    def __call__(self, video: Path) -> tuple[dict[str, Any], bool]:
        """(the score record, whether it was reused from an earlier run)."""
        key = self.key(video)
        record = reusable_score(video, key)
        if record is not None:
            self.reused += 1
            return record, True
        if self.critic is None:
            self.critic = self.load()
        t0 = time.perf_counter()
        responses = self.critic.responses(video, self.args.num_critic_trials, self.args.seed)
        verdict = self.critic.score(responses)
        record = {
            "video": video.name,
            **key,
            "settings": self.critic.settings(),
            "score": verdict.score,
            "no": verdict.no,
            "parsed": verdict.parsed,
            "answers": verdict.answers,
            "responses": verdict.responses,
            "extra": verdict.extra,
            "seconds": round(time.perf_counter() - t0, 2),
        }
        record["score_file"] = str(write_score(video, record))
        self.scored += 1
        return record, False

    def load(self) -> critics.Critic:
        """The critic; a critic that cannot be built stops the run (exit 2), since every
        remaining video would fail the same way."""
        t0 = time.perf_counter()
        try:
            critic = self.cls(
                checkpoint_dir=self.args.checkpoint_dir,
                sampling=critics.Sampling(max_new_tokens=self.args.critic_max_new_tokens),
            )
        except critics.CriticError:
            raise
        except Exception as err:  # noqa: BLE001  one line instead of a loader traceback
            first = (str(err).splitlines() or [type(err).__name__])[0]
            folder = self.args.checkpoint_dir or getattr(self.cls, "default_checkpoint", "")
            raise critics.CriticError(
                f"critic {self.cls.name} cannot be loaded from {folder} ({first}); check the "
                "folder or pass --checkpoint_dir."
            ) from None
        print(f"critic {self.cls.name} loaded ({time.perf_counter() - t0:.1f} s)")
        return critic

    def close(self) -> None:
        if self.critic is not None:
            self.critic.close()
            self.critic = None
