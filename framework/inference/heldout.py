"""Held-out clips for sampling during training, evaluation and `make generate`.

A dataset in the GR1 layout may hold a `val/` split (same layout: videos/, metas/, t5_xxl/);
when it does, held-out items come from there, else from the folder itself. Items are taken in
sorted order, so every run sees the same ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from framework.data.dataset import text_sample
from framework.data.safe_load import load_t5_pickle
from framework.data.video import ClipReader, VideoError


@dataclass
class HeldOutItem:
    name: str
    video_path: Path
    video: Tensor  # uint8 [1,3,T,H,W]: the first T frames of the clip
    text_emb: Tensor  # float32 [1,512,D]: the stored T5 embedding, zero-padded
    prompt: str  # metas/<stem>.txt, "" when absent
    fps: float


def val_dir(dataset_dir: str | Path) -> Path:
    """`dataset_dir/val` when it holds videos, else `dataset_dir`."""
    root = Path(dataset_dir)
    return root / "val" if (root / "val" / "videos").is_dir() else root


def heldout_paths(dataset_dir: str | Path, num_items: int) -> list[Path]:
    """The first `num_items` videos (sorted) of the held-out split that have an embedding."""
    root = val_dir(dataset_dir)
    videos = [
        v
        for v in sorted((root / "videos").glob("*.mp4"))
        if (root / "t5_xxl" / f"{v.stem}.pickle").is_file()
    ]
    if not videos:
        raise FileNotFoundError(
            f"{root} has no videos/*.mp4 with t5_xxl/*.pickle; point "
            "dataset_dir at a GR1-layout dataset (python -m data_prep.synthetic"
            " DIR makes one with a val/ split)."
        )
    return videos[:num_items]


def load_item(
    video_path: str | Path, num_frames: int, size: tuple[int, int] | None = None, stride: int = 1
) -> HeldOutItem:
    """Frames 0, stride, ... (`num_frames` of them, resized as in training), the caption and its
    embedding. `stride` is the dataset's frame_stride, so the clip moves as training clips do."""
    video_path = Path(video_path)
    root = video_path.parent.parent
    try:
        with ClipReader(video_path, size=size, mode="resize") as reader:
            fps = reader.fps / stride
            have = 1 + (reader.num_frames - 1) // stride
            frames = reader.read(0, min(num_frames, have), stride)
    except VideoError as err:
        raise FileNotFoundError(str(err)) from None
    if frames.shape[0] < num_frames:
        raise ValueError(
            f"{video_path} gives {frames.shape[0]} frames at stride {stride} but "
            f"{num_frames} are needed; use longer held-out clips or a smaller "
            "state_t."
        )
    emb = load_t5_pickle(root / "t5_xxl" / f"{video_path.stem}.pickle", dim=None)
    meta = root / "metas" / f"{video_path.stem}.txt"
    return HeldOutItem(
        name=video_path.stem,
        video_path=video_path,
        video=torch.from_numpy(frames).permute(3, 0, 1, 2)[None].contiguous(),
        text_emb=text_sample(emb)["t5_text_embeddings"][None],
        prompt=meta.read_text().strip() if meta.is_file() else "",
        fps=fps,
    )


def heldout_items(
    dataset_dir: str | Path,
    num_items: int,
    num_frames: int,
    size: tuple[int, int] | None = None,
    stride: int = 1,
) -> list[HeldOutItem]:
    return [load_item(p, num_frames, size, stride) for p in heldout_paths(dataset_dir, num_items)]


def data_settings(cfg) -> dict:
    """dataset_dir, size and stride of an experiment's (or trainer's) data block, so held-out
    clips look like training clips."""
    ds = cfg.data.dataset
    size = ds.get("video_size")
    return {
        "dataset_dir": str(ds.dataset_dir),
        "size": tuple(int(v) for v in size) if size is not None else None,
        "stride": int(ds.get("frame_stride", 1) or 1),
    }
