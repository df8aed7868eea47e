"""Bridge-layout dataset (Cosmos-Predict1 instruction post-training,
docs/upstream/cosmos_predict1.md §2):

    annotation/{train,val,test}/<id>.json    one episode each (§2.2: `videos`, `state`, `texts`)
    annotation/{train,val,test}/<id>.pickle  the T5 embedding of texts[0], beside its json (§2.1:
                                             where upstream's script writes it, §2.8)
    videos/{split}/<id>/rgb.mp4              the path the json's videos[0]["video_path"] names

Samples are every window of `num_frames` frames (`frame_stride` apart) at every start of every
episode, in (json path, start) order: one sample per (episode, start), `max(0, N - span + 1)` per
episode of N frames, as upstream indexes them (§2.3). We keep upstream's index rather than one
random window per episode per epoch (the GR1 dataset's way) because (1) the training distribution
is then upstream's: uniform over windows, so a long episode weighs more; (2) a sample is a pure
function of its index, so the resumable sampler's position alone restores the exact data order
after a restart, with no RNG state in the dataset.

Deliberate differences from upstream: the T5 embedding is zero-padded to `max_text_tokens` with
its mask (§9 item 4: trimmed [L,1024] embeddings cannot be batched, and the net would see another
length than in pre-training and inference); `fps` is a parameter (upstream hard-codes 4, §9 item
5); bad files are skipped at indexing or replaced at load time as in the GR1 dataset (upstream
retries a random index without limit, §2.3); the resize runs in FFmpeg's scaler
(framework/data/video.py); an annotation whose video path leaves the dataset folder is refused.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch

from framework.data.dataset import ClipDataset
from framework.data.heldout import HeldOutItem, embedding, load_items, read_frames
from framework.data.safe_load import load_t5_pickle
from framework.data.video import VideoError, probe_video

logger = logging.getLogger(__name__)
SPLITS = ("train", "val", "test")
CAMERA = 0  # upstream draws cam_id from cam_ids=[0] (§2.2)


@dataclass(frozen=True)
class Annotation:
    """What training, held-out items and data prep read from one episode json (§2.2)."""

    path: Path  # the json
    video: Path  # <dataset>/<videos[0]["video_path"]>
    num_frames: int | None  # len(state): the episode length upstream indexes by; None if absent
    text: str | None  # texts[0], the instruction; None if absent

    @property
    def embedding(self) -> Path:
        """The T5 pickle beside the json, named as upstream's script writes it (§2.8)."""
        return self.path.with_suffix(".pickle")


def read_annotation(path: str | Path, dataset_dir: str | Path) -> Annotation:
    """Parse one episode json; ValueError (one line naming the file) when it is unusable."""
    path = Path(path)
    try:
        ann = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as err:  # JSONDecodeError and UnicodeDecodeError
        raise ValueError(f"{path} is not valid JSON ({err}); re-extract the archive") from None
    videos = ann.get("videos") if isinstance(ann, dict) else None
    entry = videos[CAMERA] if isinstance(videos, list) and len(videos) > CAMERA else None
    rel = entry.get("video_path") if isinstance(entry, dict) else None
    if not isinstance(rel, str) or not rel:
        raise ValueError(f'{path} has no videos[{CAMERA}]["video_path"] string; fix or remove it')
    if PurePosixPath(rel).is_absolute() or ".." in PurePosixPath(rel).parts:
        raise ValueError(
            f"{path} names video {rel!r} outside the dataset folder; use a path relative to it"
        )
    state, texts = ann.get("state"), ann.get("texts")
    if state is not None and not isinstance(state, list):
        raise ValueError(f"{path}: 'state' is not a list of per-frame states; fix or remove it")
    text = texts[0] if isinstance(texts, list) and texts and isinstance(texts[0], str) else None
    return Annotation(path, Path(dataset_dir) / rel, None if state is None else len(state), text)


class BridgeDataset(ClipDataset):
    """Every `num_frames`-frame window of every episode of `annotation/<split>/`, with its
    instruction's T5 embedding.

    Sample keys as VideoDataset's: `video` uint8 [3,T,H,W] resized to `video_size` (exactly,
    aspect not kept, as upstream §2.4), `t5_text_embeddings` float32 [max_text_tokens, text_dim]
    zero-padded, `t5_text_mask` int64, `fps` (= `fps` / `frame_stride`; `fps` is the rate the
    model is told the episode was recorded at, 4 upstream, whatever the mp4 header says),
    `padding_mask` float32 [1,H,W] zeros, `image_size` int64 [H,W,H,W], `num_frames`,
    `bad_replaced`.

    An episode lasts len(state) frames (upstream), capped by the video's header frame count when
    `check` reads it, or the video's count when the json has no `state`. Episodes shorter than a
    window give no samples and are listed in `summary` as "too short" without counting against
    `max_bad_fraction` (short episodes are normal in Bridge, §9 item 9). Bad JSON, a
    missing video, a missing or refused pickle and an unreadable video do count, and are handled
    as in VideoDataset: skipped at indexing, replaced at load time.
    """

    unit = "episodes"
    uses_pickles = True  # False: no T5 pickle needed (BridgeActionDataset with text="none")

    def __init__(
        self,
        dataset_dir: str | Path,
        split: str = "train",
        num_frames: int = 57,
        video_size: tuple[int, int] = (256, 320),
        frame_stride: int = 1,
        fps: float = 4.0,
        max_text_tokens: int = 512,
        text_dim: int = 1024,
        check: str = "header",
        max_bad_fraction: float = 0.1,
        max_retries: int = 10,
        keep_in_memory: bool = False,
        decode_threads: int = 2,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"split {split!r} unknown; use one of {SPLITS}")
        super().__init__(
            dataset_dir,
            num_frames,
            video_size,
            "resize",
            frame_stride,
            max_text_tokens,
            text_dim,
            decode_threads,
            check,
            max_bad_fraction,
            max_retries,
            keep_in_memory,
        )
        self.split, self.fps = split, float(fps)
        self._offsets = np.zeros(1, dtype=np.int64)  # first sample of each episode, then the total

    # ---- indexing -------------------------------------------------------------------------
    def _index(self, check: str) -> tuple[list[dict], list[tuple[str, str]]]:
        ann_dir = self.dataset_dir / "annotation" / self.split
        jsons = sorted(ann_dir.glob("*.json"))
        if not jsons:
            raise FileNotFoundError(
                f"{ann_dir} holds no .json annotations; a Bridge-layout dataset needs "
                f"annotation/{self.split}/*.json and the videos they name (docs/data.md, "
                '"Bridge layout"; check it with python -m data_prep.bridge)'
            )
        candidates = [{"annotation": str(j)} for j in jsons]
        samples, skipped = self._sift(
            candidates, lambda c: self._problem(c, check), key="annotation"
        )
        windows = np.array([s["windows"] for s in samples], dtype=np.int64)
        self._offsets = np.concatenate([[0], np.cumsum(windows)])
        self.summary += f"; {int(self._offsets[-1])} windows of {self.span} frames"
        logger.info("%s: %s", self.dataset_dir, self.summary)
        return samples, skipped

    def _problem(self, candidate: dict, check: str) -> tuple[str, dict]:
        try:
            ann = read_annotation(candidate["annotation"], self.dataset_dir)
        except (ValueError, OSError):
            return "bad annotation", {}
        short = f"too short (<{self.span} frames)"
        if ann.num_frames is not None and ann.num_frames < self.span:
            return short, {}  # decided by the json alone, as upstream (§2.3)
        if not ann.video.is_file():
            return "missing video", {}
        emb = ann.embedding if self.uses_pickles else None
        reason, frames = self._pair_problem(ann.video, emb, check)
        if reason:
            return reason, {}
        if not frames and ann.num_frames is None:
            try:
                frames = probe_video(ann.video).num_frames
            except VideoError:
                return "unreadable video", {}
        length = min(n for n in (ann.num_frames, frames) if n)
        if length < self.span:
            return short, {}
        return "", {
            "video": str(ann.video),
            "embedding": str(ann.embedding),
            "caption": ann.text or "",
            "frames": length,
            "windows": length - self.span + 1,
        }

    def _counts_as_bad(self, reason: str) -> bool:
        return not reason.startswith("too short")

    # ---- loading --------------------------------------------------------------------------
    def __len__(self) -> int:
        self.samples  # noqa: B018  (indexes on first use)
        return int(self._offsets[-1])

    def _unit(self, index: int) -> int:
        return int(np.searchsorted(self._offsets, index, side="right")) - 1

    def _random_index(self, unit: int) -> int:
        return int(self._offsets[unit]) + int(
            torch.randint(self.samples[unit]["windows"], ()).item()
        )

    def window(self, index: int) -> tuple[str, int]:
        """(annotation json, first frame) of sample `index`."""
        if not 0 <= index < len(self):
            raise IndexError(f"sample {index} out of range for {len(self)} windows")
        unit = self._unit(index)
        return self.samples[unit]["annotation"], index - int(self._offsets[unit])

    def _load(self, index: int) -> dict[str, Any]:
        _, start = self.window(index)
        entry = self.samples[self._unit(index)]
        emb = self._text_embedding(entry["embedding"])

        def checked(have: int) -> int:
            if start + self.span > have:
                raise VideoError(
                    f"{entry['video']} has {have} frames, the window from {start} needs "
                    f"{self.span} (its annotation says {entry['frames']})"
                )
            return start

        video, _ = self._clip(entry["video"], checked)
        return {
            "video": video,
            "fps": self.fps / self.frame_stride,
            **self._conditioning(emb, entry["caption"]),
        }

    def _text_embedding(self, pickle: str | Path) -> np.ndarray:
        """[n, text_dim] embedding of a sample's instruction; none (zeros) without pickles."""
        if not self.uses_pickles:
            return np.zeros((0, self.text_dim), dtype=np.float32)
        return load_t5_pickle(pickle, self.text_dim)

    # ---- held-out items (framework/data/heldout.py) ---------------------------------------
    def heldout_items(self, num_items: int, num_frames: int) -> list[HeldOutItem]:
        """The first episodes (sorted) of annotation/val, else of the dataset's own split, that
        have a pickle and enough frames: their first frames at `video_size` and `frame_stride`,
        the instruction (texts[0]) and its embedding. A val split without any pickle (upstream's
        script embeds only train, §9 item 12) counts as absent."""
        ann_dir = self.dataset_dir / "annotation" / "val"

        def has_text(path: Path) -> bool:
            return not self.uses_pickles or path.with_suffix(".pickle").is_file()

        if not any(has_text(p) for p in ann_dir.glob("*.json")):
            ann_dir = ann_dir.with_name(self.split)
        need = (num_frames - 1) * self.frame_stride + 1

        def candidates() -> Iterator[Annotation]:
            for path in sorted(ann_dir.glob("*.json")):
                if not has_text(path):
                    continue
                try:
                    ann = read_annotation(path, self.dataset_dir)
                except (ValueError, OSError) as err:
                    logger.warning("held-out item skipped: %s", err)
                    continue
                if ann.num_frames is None or ann.num_frames >= need:
                    yield ann

        def load(ann: Annotation) -> HeldOutItem:
            frames, _ = read_frames(ann.video, num_frames, self.video_size, self.frame_stride)
            return HeldOutItem(
                name=f"{ann_dir.name}_{ann.path.stem}",
                video=frames,
                text_emb=(
                    embedding(ann.embedding)
                    if self.uses_pickles
                    else torch.zeros(1, 1, self.text_dim)
                ),
                prompt=(ann.text or "") if self.uses_pickles else "",
                fps=self.fps / self.frame_stride,
                source=str(ann.video),
            )

        return load_items(candidates(), num_items, load, f"{ann_dir} (*.json + *.pickle)")
