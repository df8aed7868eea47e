"""GR1-layout video dataset: `videos/*.mp4` + `t5_xxl/<stem>.pickle` -> samples
(upstream/cosmos_predict2.md §6.2).

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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from framework.data.heldout import HeldOutItem, embedding, load_items, read_frames
from framework.data.safe_load import UnsafeFileError, load_t5_pickle
from framework.data.video import RESIZE_MODES, ClipReader, VideoError, probe_video

logger = logging.getLogger(__name__)
CHECKS = ("exists", "header", "decode")


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
            "or raise data.max_bad_fraction"
        )


class VideoDataset(Dataset):
    """One sample per video per epoch: a random window of `num_frames` frames plus its caption.

    Samples hold `video` uint8 [3,T,H,W], `t5_text_embeddings` float32 [512,1024] zero-padded,
    `t5_text_mask` int64 [512], `fps` float (after `frame_stride`), `padding_mask` float32
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
        self._bad: set[int] = set()
        self.keep_in_memory = keep_in_memory
        self._decoded: dict[str, tuple[np.ndarray, float]] = {}  # video -> (frames, fps)
        self.cache = None
        if latent_cache_dir is not None and not Path(latent_cache_dir).exists():
            logger.warning(
                "latent cache %s does not exist; decoding videos instead (build it "
                "with python -m data_prep.latent_cache)",
                latent_cache_dir,
            )
        elif latent_cache_dir is not None:
            from framework.data.latent_cache import LatentCache

            self.cache = LatentCache(latent_cache_dir, expected_identity)
            self.cache.check_matches(self)

    # ---- indexing -------------------------------------------------------------------------
    # Indexed on first use (the trainer asks for len() at start-up, so a bad training folder
    # still fails before step one); held-out items do not need the training index.
    @property
    def samples(self) -> list[dict]:
        if self._indexed is None:
            self._indexed = self._index(self.check)
        return self._indexed[0]

    @property
    def skipped(self) -> list[tuple[str, str]]:
        self.samples  # noqa: B018  (indexes on first use)
        return self._indexed[1]

    def _index(self, check: str) -> tuple[list[dict], list[tuple[str, str]]]:
        video_dir, emb_dir = self.dataset_dir / "videos", self.dataset_dir / "t5_xxl"
        if not video_dir.is_dir():
            raise FileNotFoundError(
                f"{video_dir} does not exist; the dataset needs videos/*.mp4 and t5_xxl/*.pickle "
                "(python -m data_prep.gr1, or data_prep.synthetic for a test set)"
            )
        videos = sorted(video_dir.glob("*.mp4"))
        pairs = [(v, emb_dir / f"{v.stem}.pickle") for v in videos]
        workers = min(8, max(1, len(pairs)))
        with ThreadPoolExecutor(workers) as pool:  # header probes are I/O bound
            reasons = list(pool.map(lambda p: self._problem(*p, check), pairs))
        samples, skipped = [], []
        for (video, emb), (reason, info) in zip(pairs, reasons):
            if reason:
                skipped.append((str(video), reason))
            else:
                samples.append({"video": str(video), "embedding": str(emb), **info})
        self._report(len(videos), skipped)
        if not samples:
            raise BadDataError(f"no usable videos in {self.dataset_dir}: {self.summary}")
        check_bad_fraction(len(skipped), len(videos), self.max_bad_fraction, str(self.dataset_dir))
        return samples, skipped

    def _problem(self, video: Path, emb: Path, check: str) -> tuple[str, dict]:
        if not emb.is_file():
            return "no embedding", {}
        if check == "exists":
            return "", {}
        try:
            load_t5_pickle(emb, self.text_dim)
        except (UnsafeFileError, OSError):
            return "bad embedding", {}
        try:
            info = probe_video(video)
        except VideoError:
            return "unreadable video", {}
        if info.num_frames < self.span:
            return f"too short (<{self.span} frames)", {}
        if check == "decode":
            try:
                with ClipReader(video, size=(16, 16), threads=self.decode_threads) as r:
                    r.read(0, info.num_frames)
            except VideoError:
                return "decode failed", {}
        return "", {"frames": info.num_frames}

    def _report(self, total: int, skipped: list[tuple[str, str]]) -> None:
        why = Counter(reason for _, reason in skipped)
        detail = ", ".join(f"{n} {r}" for r, n in sorted(why.items()))
        self.summary = f"{total} videos, {len(skipped)} skipped" + (f" ({detail})" if why else "")
        logger.log(
            logging.WARNING if skipped else logging.INFO, "%s: %s", self.dataset_dir, self.summary
        )
        for path, reason in skipped[:20]:
            logger.warning("skipped %s: %s", path, reason)

    # ---- loading --------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.samples)

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

    def _mark_bad(self, index: int, err: Exception) -> None:
        self.bad_samples += 1
        self._bad.add(index)
        warnings.warn(f"skipping bad sample {self.samples[index]['video']}: {err}", stacklevel=3)
        total = len(self.samples) + len(self.skipped)
        check_bad_fraction(
            len(self._bad) + len(self.skipped), total, self.max_bad_fraction, str(self.dataset_dir)
        )

    def _replacement(self) -> int:
        good = [i for i in range(len(self.samples)) if i not in self._bad]
        if not good:
            raise BadDataError(f"every sample of {self.dataset_dir} failed to load")
        return good[int(torch.randint(len(good), ()).item())]

    def _load(self, index: int) -> dict[str, Any]:
        entry = self.samples[index]
        emb = load_t5_pickle(entry["embedding"], self.text_dim)
        h, w = self.video_size
        if self.cache is not None:
            sample = self.cache.sample(Path(entry["video"]).stem)
        else:
            sample = self._video_sample(entry)
        return {
            **sample,
            **text_sample(emb, self.max_text_tokens),
            "padding_mask": torch.zeros(1, h, w, dtype=torch.float32),
            "image_size": torch.tensor([h, w, h, w], dtype=torch.int64),
            "num_frames": self.num_frames,
        }

    def _video_sample(self, entry: dict) -> dict[str, Any]:
        if self.keep_in_memory:
            frames, fps = self._decoded_video(entry["video"])
            start = self._start(entry, len(frames))
            frames = frames[start : start + self.span : self.frame_stride]
        else:
            with ClipReader(
                entry["video"], self.video_size, self.resize_mode, self.decode_threads
            ) as reader:
                start = self._start(entry, reader.num_frames)
                frames = reader.read(start, self.num_frames, self.frame_stride)
                fps = reader.fps
        video = torch.from_numpy(frames).permute(3, 0, 1, 2).contiguous()  # [3, T, H, W]
        return {"video": video, "fps": float(fps / self.frame_stride)}

    def _start(self, entry: dict, num_frames: int) -> int:
        last_start = num_frames - self.span
        if last_start < 0:
            raise VideoError(f"{entry['video']} has {num_frames} frames, needs {self.span}")
        # +1: the last valid start is included (upstream excludes it, upstream/cosmos_predict2.md
        # §6.2).
        return int(torch.randint(last_start + 1, ()).item())

    def _decoded_video(self, path: str) -> tuple[np.ndarray, float]:
        if path not in self._decoded:
            with ClipReader(path, self.video_size, self.resize_mode, self.decode_threads) as r:
                self._decoded[path] = (r.read(0, r.num_frames), r.fps)
        return self._decoded[path]

    # ---- held-out items (framework/data/heldout.py) ---------------------------------------
    def heldout_items(self, num_items: int, num_frames: int) -> list[HeldOutItem]:
        """The first clips (sorted) of `val/` when it holds videos, else of the dataset folder,
        resized and strided as in training, with their caption (metas/<stem>.txt)."""
        root = self.dataset_dir
        root = root / "val" if (root / "val" / "videos").is_dir() else root
        videos = [
            v
            for v in sorted((root / "videos").glob("*.mp4"))
            if (root / "t5_xxl" / f"{v.stem}.pickle").is_file()
        ]

        def load(video: Path) -> HeldOutItem:
            frames, fps = read_frames(video, num_frames, self.video_size, self.frame_stride)
            meta = root / "metas" / f"{video.stem}.txt"
            return HeldOutItem(
                name=video.stem,
                video=frames,
                text_emb=embedding(root / "t5_xxl" / f"{video.stem}.pickle"),
                prompt=meta.read_text().strip() if meta.is_file() else "",
                fps=fps,
                source=str(video),
            )

        return load_items(videos, num_items, load, f"{root} (videos/*.mp4 + t5_xxl/*.pickle)")
