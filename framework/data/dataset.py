"""GR1-layout video dataset: `videos/*.mp4` + `t5_xxl/<stem>.pickle` -> samples
(upstream/cosmos_predict2.md §6.2), and `ClipDataset`, the part the Bridge-layout dataset
(framework/data/bridge.py) shares with it.

Differences from upstream, each deliberate: the clip start is uniform over every valid start
including the last (upstream's randint excludes it and crashes on exact-length videos); bad files
are skipped at indexing or replaced at load time with a warning instead of killing the run; the
resize runs inside FFmpeg's scaler (3.5-4.9x faster per clip on camera-like sources,
docs/performance.md).
"""

from __future__ import annotations

import logging
import warnings
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from framework.data.heldout import HeldOutItem, embedding, load_items, read_frames
from framework.data.safe_load import UnsafeFileError, load_t5_pickle
from framework.data.text_length import warn_cut
from framework.data.video import RESIZE_MODES, ClipReader, VideoError, probe_video

logger = logging.getLogger(__name__)
_WARNED_NO_VAL: set[str] = set()  # folders already warned about, once per process
CHECKS = ("exists", "header", "decode")


def read_caption(path: str | Path) -> str:
    """A caption file's text (GR1 layout: metas/<stem>.txt), "" when there is none."""
    path = Path(path)
    return path.read_text().strip() if path.is_file() else ""


class BadDataError(RuntimeError):
    """More of the dataset is unreadable than `max_bad_fraction` allows."""


def text_sample(emb: np.ndarray, max_tokens: int = 512) -> dict[str, torch.Tensor]:
    """Zero-pad/trim a [n, D] embedding to [max_tokens, D] float32 plus its int64 mask."""
    n = min(emb.shape[0], max_tokens)
    out = torch.zeros(max_tokens, emb.shape[1], dtype=torch.float32)
    out[:n] = torch.from_numpy(np.asarray(emb[:n], dtype=np.float32))
    mask = torch.zeros(max_tokens, dtype=torch.int64)
    mask[:n] = 1
    return {"t5_text_embeddings": out, "t5_text_mask": mask}


def check_bad_fraction(bad: int, total: int, max_bad_fraction: float, where: str = "") -> None:
    """Raise BadDataError when bad/total exceeds max_bad_fraction (the trainer may call this)."""
    if total > 0 and bad / total > max_bad_fraction:
        raise BadDataError(
            f"{bad} of {total} samples{' in ' + where if where else ''} are bad "
            f"({bad / total:.0%} > max_bad_fraction {max_bad_fraction:.0%}); run "
            "python -m data_prep.validate on the dataset, fix or remove the files listed, "
            "or raise data.dataset.max_bad_fraction"
        )


class ClipDataset(Dataset):
    """What the GR1-layout and Bridge-layout datasets share (docs/data.md, "Bad samples").

    Indexing on first use, each file checked by `check`; bad files skipped with a summary and
    BadDataError past `max_bad_fraction`; at load time a failing sample is replaced by a random
    good one (`bad_replaced`), its file is not drawn again, `max_retries + 1` failures in a row
    raise; clips decoded and resized by ClipReader, optionally kept in memory; the sample keys
    besides the clip. A subclass gives `_index(check) -> (samples, skipped)`, `__len__` and
    `_load(index)`; when one file gives several samples also `_unit` (sample -> position in
    `samples`) and `_random_index` (a sample of that file), and `_counts_as_bad` for skip
    reasons that are not damage. Each `samples` entry has "video".
    """

    unit = "videos"  # what `summary` counts: one entry of `samples` / `skipped`

    def __init__(
        self,
        dataset_dir: str | Path,
        num_frames: int,
        video_size: tuple[int, int],
        resize_mode: str,
        frame_stride: int,
        max_text_tokens: int,
        text_dim: int,
        decode_threads: int,
        check: str,
        max_bad_fraction: float,
        max_retries: int,
        keep_in_memory: bool,
    ) -> None:
        if resize_mode not in RESIZE_MODES or check not in CHECKS:
            raise ValueError(
                f"resize_mode {resize_mode!r} / check {check!r} unknown; "
                f"use one of {RESIZE_MODES} / {CHECKS}"
            )
        self.dataset_dir = Path(dataset_dir)
        self.num_frames, self.frame_stride = int(num_frames), int(frame_stride)
        self.video_size = (int(video_size[0]), int(video_size[1]))
        self.resize_mode, self.decode_threads = resize_mode, decode_threads
        self.max_text_tokens, self.text_dim = max_text_tokens, text_dim
        self.max_bad_fraction, self.max_retries = max_bad_fraction, max_retries
        self.span = (self.num_frames - 1) * self.frame_stride + 1  # source frames one clip covers
        self.check = check
        self._indexed: tuple[list[dict], list[tuple[str, str]]] | None = None
        self.bad_samples = 0  # load-time replacements in this process (each worker has its own)
        self.loads = 0
        self._bad: set[int] = set()  # positions in `samples` whose file failed to load
        self.keep_in_memory = keep_in_memory
        self._decoded: dict[str, tuple[np.ndarray, float]] = {}  # video -> (frames, fps)
        self._text_tokens: list[int] = []  # caption lengths seen while indexing

    # ---- indexing -------------------------------------------------------------------------
    # Indexed on first use (the trainer asks for len() at start-up, so a bad training folder
    # still fails before step one); held-out items do not need the training index.
    @property
    def samples(self) -> list[dict]:
        if self._indexed is None:
            self._indexed = self._index(self.check)
            warn_cut(self._text_tokens, self.max_text_tokens, str(self.dataset_dir))
        return self._indexed[0]

    @property
    def skipped(self) -> list[tuple[str, str]]:
        self.samples  # noqa: B018  (indexes on first use)
        return self._indexed[1]

    def _index(self, check: str) -> tuple[list[dict], list[tuple[str, str]]]:
        raise NotImplementedError

    def _sift(
        self, candidates: list[dict], problem: Callable[[dict], tuple[str, dict]], key: str
    ) -> tuple[list[dict], list[tuple[str, str]]]:
        """Run `problem` on every candidate: ({**candidate, **info} of the good ones, [(its
        `key`, reason)] of the others); report, and raise when too many are bad."""
        workers = min(8, max(1, len(candidates)))
        with ThreadPoolExecutor(workers) as pool:  # header probes are I/O bound
            reasons = list(pool.map(problem, candidates))
        samples, skipped = [], []
        for candidate, (reason, info) in zip(candidates, reasons):
            if reason:
                skipped.append((candidate[key], reason))
            else:
                samples.append({**candidate, **info})
        self._report(len(candidates), skipped)
        if not samples:
            raise BadDataError(f"no usable {self.unit} in {self.dataset_dir}: {self.summary}")
        bad = self._bad_skipped(skipped)
        check_bad_fraction(bad, len(samples) + bad, self.max_bad_fraction, str(self.dataset_dir))
        return samples, skipped

    def _counts_as_bad(self, reason: str) -> bool:
        """Whether a file skipped for `reason` counts against `max_bad_fraction`."""
        return True

    def _bad_skipped(self, skipped: list[tuple[str, str]]) -> int:
        return sum(self._counts_as_bad(reason) for _, reason in skipped)

    def _pair_problem(self, video: Path, emb: Path | None, check: str) -> tuple[str, int]:
        """(why the video/embedding pair is unusable or "", the video's frame count; 0 when
        `check` is "exists", which opens neither file). `emb` None: a dataset without text
        embeddings (the action recipes), only the video is checked."""
        if emb is not None and not emb.is_file():
            return "no embedding", 0
        if check == "exists":
            return "", 0
        try:
            if emb is not None:  # its token count: captions past max_text_tokens are reported
                self._text_tokens.append(len(load_t5_pickle(emb, self.text_dim)))
        except (UnsafeFileError, OSError):
            return "bad embedding", 0
        try:
            info = probe_video(video)
        except VideoError:
            return "unreadable video", 0
        if info.num_frames < self.span:
            return f"too short (<{self.span} frames)", 0
        if check == "decode":
            try:
                with ClipReader(video, size=(16, 16), threads=self.decode_threads) as r:
                    r.read(0, info.num_frames)
            except VideoError:
                return "decode failed", 0
        return "", info.num_frames

    def _report(self, total: int, skipped: list[tuple[str, str]]) -> None:
        why = Counter(reason for _, reason in skipped)
        detail = ", ".join(f"{n} {r}" for r, n in sorted(why.items()))
        self.summary = f"{total} {self.unit}, {len(skipped)} skipped" + (
            f" ({detail})" if why else ""
        )
        level = logging.WARNING if self._bad_skipped(skipped) else logging.INFO
        logger.log(level, "%s: %s", self.dataset_dir, self.summary)
        for path, reason in skipped[:20]:
            level = logging.WARNING if self._counts_as_bad(reason) else logging.INFO
            logger.log(level, "skipped %s: %s", path, reason)

    # ---- loading --------------------------------------------------------------------------
    def __getitem__(self, index: int) -> dict[str, Any]:
        replaced = 0
        for _ in range(self.max_retries + 1):
            self.loads += 1
            try:
                sample = self._load(index)
                sample["bad_replaced"] = replaced
                return sample
            except (VideoError, UnsafeFileError, OSError) as err:
                replaced += 1
                self._mark_bad(index, err)
                index = self._replacement()
        raise BadDataError(
            f"{self.max_retries + 1} samples in a row failed to load from {self.dataset_dir}; "
            "run python -m data_prep.validate on it"
        )

    def _load(self, index: int) -> dict[str, Any]:
        raise NotImplementedError

    def _unit(self, index: int) -> int:
        """The position in `samples` of the file sample `index` comes from."""
        return index

    def _random_index(self, unit: int) -> int:
        """A sample drawn from the file at position `unit` of `samples`."""
        return unit

    def _mark_bad(self, index: int, err: Exception) -> None:
        unit = self._unit(index)
        self.bad_samples += 1
        self._bad.add(unit)
        warnings.warn(f"skipping bad sample {self.samples[unit]['video']}: {err}", stacklevel=3)
        skipped = self._bad_skipped(self.skipped)
        check_bad_fraction(
            len(self._bad) + skipped,
            len(self.samples) + skipped,
            self.max_bad_fraction,
            str(self.dataset_dir),
        )

    def _replacement(self) -> int:
        good = [i for i in range(len(self.samples)) if i not in self._bad]
        if not good:
            raise BadDataError(f"every sample of {self.dataset_dir} failed to load")
        return self._random_index(good[int(torch.randint(len(good), ()).item())])

    def _clip(self, video: str, pick_start: Callable[[int], int]) -> tuple[torch.Tensor, float]:
        """uint8 [3,T,H,W] frames of `video` from `pick_start(its frame count)`, and its fps."""
        if self.keep_in_memory:
            frames, fps = self._decoded_video(video)
            start = pick_start(len(frames))
            frames = frames[start : start + self.span : self.frame_stride]
        else:
            with ClipReader(video, self.video_size, self.resize_mode, self.decode_threads) as r:
                start = pick_start(r.num_frames)
                frames = r.read(start, self.num_frames, self.frame_stride)
                fps = r.fps
        return torch.from_numpy(frames).permute(3, 0, 1, 2).contiguous(), fps

    def _decoded_video(self, path: str) -> tuple[np.ndarray, float]:
        if path not in self._decoded:
            with ClipReader(path, self.video_size, self.resize_mode, self.decode_threads) as r:
                self._decoded[path] = (r.read(0, r.num_frames), r.fps)
        return self._decoded[path]

    def _conditioning(self, emb: np.ndarray | None, caption: str) -> dict[str, Any]:
        """The sample keys besides the clip and its fps: the caption always, its precomputed
        embedding when the dataset has one."""
        h, w = self.video_size
        return {
            "caption": caption,
            **(text_sample(emb, self.max_text_tokens) if emb is not None else {}),
            "padding_mask": torch.zeros(1, h, w, dtype=torch.float32),
            "image_size": torch.tensor([h, w, h, w], dtype=torch.int64),
            "num_frames": self.num_frames,
        }


class VideoDataset(ClipDataset):
    """One sample per video per epoch: a random window of `num_frames` frames plus its caption.

    Samples hold `video` uint8 [3,T,H,W], `caption` str (metas/<stem>.txt, "" when missing),
    `t5_text_embeddings` float32 [512,1024] zero-padded and `t5_text_mask` int64 [512] (not with
    `text_embeddings=False`: a model that encodes captions online needs no t5_xxl/; another
    folder of the same format with `embedding_dir`, e.g. "reason1" from data_prep.text_embed,
    `text_dim` 100352), `fps` float
    (after `frame_stride`), `padding_mask` float32
    [1,H,W] zeros, `image_size` int64 [H,W,H,W], `num_frames` int, and `bad_replaced` int (how
    many bad files were skipped to produce this sample; the trainer sums it as a metric). With a
    latent cache (see framework.data.latent_cache) `latent` replaces `video`.

    `keep_in_memory` decodes each video once and keeps all its frames (at `video_size`) for the
    rest of the run: for small datasets only (every DataLoader worker keeps its own copy).

    `check` at indexing: "exists" (pair files only), "header" (also frame count from the
    container header and the embedding structure; milliseconds per file), "decode" (also decode
    every frame: slow, for small sets). `video_size` is (H, W); `resize_mode` "resize" (exact,
    aspect not kept, upstream training) or "center_crop" (upstream inference).
    """

    def __init__(
        self,
        dataset_dir: str | Path,
        num_frames: int = 93,
        video_size: tuple[int, int] = (432, 768),
        resize_mode: str = "resize",
        frame_stride: int = 1,
        max_text_tokens: int = 512,
        text_dim: int = 1024,
        decode_threads: int = 2,
        check: str = "header",
        max_bad_fraction: float = 0.1,
        max_retries: int = 10,
        latent_cache_dir: str | Path | None = None,
        expected_identity: Any = None,
        keep_in_memory: bool = False,
        text_embeddings: bool = True,
        embedding_dir: str = "t5_xxl",
    ) -> None:
        self.text_embeddings = bool(text_embeddings)
        self.embedding_dir = embedding_dir
        super().__init__(
            dataset_dir,
            num_frames,
            video_size,
            resize_mode,
            frame_stride,
            max_text_tokens,
            text_dim,
            decode_threads,
            check,
            max_bad_fraction,
            max_retries,
            keep_in_memory,
        )
        self.cache = None
        if latent_cache_dir is not None and not Path(latent_cache_dir).exists():
            # Asked for, not there: decoding instead would silently cost the step a VAE encode.
            raise FileNotFoundError(
                f"latent cache {latent_cache_dir} does not exist; build it with python -m "
                f"data_prep.latent_cache EXPERIMENT [KEY=VALUE ...] --output {latent_cache_dir} "
                "(or drop data.dataset.latent_cache_dir to encode every clip in the step)."
            )
        if latent_cache_dir is not None:
            from framework.data.latent_cache import LatentCache

            self.cache = LatentCache(latent_cache_dir, expected_identity)
            self.cache.check_matches(self)

    # ---- indexing -------------------------------------------------------------------------
    def _index(self, check: str) -> tuple[list[dict], list[tuple[str, str]]]:
        video_dir, emb_dir = self.dataset_dir / "videos", self.dataset_dir / self.embedding_dir
        if not video_dir.is_dir():
            raise FileNotFoundError(
                f"{video_dir} does not exist; the dataset needs videos/*.mp4 and t5_xxl/*.pickle "
                "(python -m data_prep.gr1, or data_prep.synthetic for a test set)"
            )
        candidates = [
            {
                "video": str(v),
                "embedding": str(emb_dir / f"{v.stem}.pickle") if self.text_embeddings else None,
                "meta": str(self.dataset_dir / "metas" / f"{v.stem}.txt"),
            }
            for v in sorted(video_dir.glob("*.mp4"))
        ]
        return self._sift(candidates, lambda c: self._problem(c, check), key="video")

    def _problem(self, candidate: dict, check: str) -> tuple[str, dict]:
        emb = candidate["embedding"]
        reason, frames = self._pair_problem(
            Path(candidate["video"]), Path(emb) if emb else None, check
        )
        return reason, ({"frames": frames} if frames else {})

    # ---- loading --------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.samples)

    def _load(self, index: int) -> dict[str, Any]:
        entry = self.samples[index]
        emb = load_t5_pickle(entry["embedding"], self.text_dim) if entry["embedding"] else None
        if self.cache is not None:
            sample = self.cache.sample(Path(entry["video"]).stem)
        else:
            sample = self._video_sample(entry)
        return {**sample, **self._conditioning(emb, read_caption(entry["meta"]))}

    def _video_sample(self, entry: dict) -> dict[str, Any]:
        video, fps = self._clip(entry["video"], lambda n: self._start(entry, n))
        return {"video": video, "fps": float(fps / self.frame_stride)}

    def _start(self, entry: dict, num_frames: int) -> int:
        last_start = num_frames - self.span
        if last_start < 0:
            raise VideoError(f"{entry['video']} has {num_frames} frames, needs {self.span}")
        # +1: the last valid start is included (upstream excludes it, upstream/cosmos_predict2.md
        # §6.2).
        return int(torch.randint(last_start + 1, ()).item())

    # ---- held-out items (framework/data/heldout.py) ---------------------------------------
    def heldout_items(self, num_items: int, num_frames: int) -> list[HeldOutItem]:
        """The first clips (sorted) of `val/` when it holds videos, else of the dataset folder,
        resized and strided as in training, with their caption (metas/<stem>.txt)."""
        root = self.dataset_dir
        if (root / "val" / "videos").is_dir():
            root = root / "val"
        elif str(root) not in _WARNED_NO_VAL:
            _WARNED_NO_VAL.add(str(root))
            logger.warning(
                "%s has no val/videos: evaluation and sample videos use training clips, which "
                "shows memorisation, not generalisation; put held-out clips in val/ "
                "(docs/data.md, GR1 layout).",
                root,
            )
        videos = [
            v
            for v in sorted((root / "videos").glob("*.mp4"))
            if not self.text_embeddings
            or (root / self.embedding_dir / f"{v.stem}.pickle").is_file()
        ]

        def load(video: Path) -> HeldOutItem:
            frames, fps = read_frames(video, num_frames, self.video_size, self.frame_stride)
            pickle = root / self.embedding_dir / f"{video.stem}.pickle"
            return HeldOutItem(
                name=video.stem,
                video=frames,
                text_emb=embedding(pickle) if self.text_embeddings else None,
                prompt=read_caption(root / "metas" / f"{video.stem}.txt"),
                fps=fps,
                source=str(video),
            )

        return load_items(videos, num_items, load, f"{root} (videos/*.mp4 + t5_xxl/*.pickle)")
