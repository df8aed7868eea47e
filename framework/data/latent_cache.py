"""Latent cache: encode each clip once with a frozen tokenizer, train from the stored latents.

Layout of a cache folder:
  cache.json                       tokenizer identity and the clip settings of the latents
  latents-00000.safetensors ...    shards; tensor "<stem>@<start>" = latent [C, T', H', W'];
                                   header metadata "clips" = JSON list of {stem, start, fps}
safetensors (not pickle) so reading is safe and one clip is read without loading its whole shard.
A shard is written atomically when full, so an interrupted build resumes from the last shard.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save

from framework.data.video import ClipReader, VideoError
from framework.io import atomic_write, atomic_write_text
from framework.models.tokenizers import to_unit_range

if TYPE_CHECKING:
    from framework.data.dataset import VideoDataset

SETTINGS = ("num_frames", "video_size", "frame_stride", "resize_mode")


def clip_to_unit_range(video: torch.Tensor) -> torch.Tensor:
    """uint8 [3,T,H,W] -> float [1,3,T,H,W] in [-1, 1], as the model's tokenizer input."""
    return to_unit_range(video).unsqueeze(0)


def _identity_text(identity: Any) -> str:
    return json.dumps(identity, sort_keys=True, default=str)


def _settings(dataset: VideoDataset) -> dict[str, Any]:
    return {
        k: list(v) if isinstance(v, tuple) else v for k in SETTINGS for v in [getattr(dataset, k)]
    }


def window_starts(num_source_frames: int, span: int, windows: int) -> list[int]:
    """`windows` evenly spaced clip starts from 0 to the last valid start, without repeats."""
    last = num_source_frames - span
    if last < 0:
        return []
    return sorted({int(round(s)) for s in np.linspace(0, last, max(1, windows))})


class LatentCache:
    """Read side: `sample(stem)` gives {"latent", "fps"} for a random cached window of a video."""

    def __init__(self, cache_dir: str | Path, expected_identity: Any = None) -> None:
        self.dir = Path(cache_dir)
        meta_path = self.dir / "cache.json"
        if not meta_path.is_file():
            raise FileNotFoundError(
                f"{meta_path} is missing; build the cache with python -m data_prep.latent_cache"
            )
        self.meta = json.loads(meta_path.read_text())
        if expected_identity is not None and (
            _identity_text(expected_identity) != self.meta["identity"]
        ):
            raise ValueError(
                f"latent cache {self.dir} was made by tokenizer {self.meta['identity']}, not "
                f"{_identity_text(expected_identity)}; rebuild it or point to another cache"
            )
        self.clips: dict[str, list[tuple[str, str, float]]] = {}
        for shard in sorted(self.dir.glob("latents-*.safetensors")):
            with safe_open(str(shard), "pt") as f:
                for clip in json.loads(f.metadata()["clips"]):
                    key = f"{clip['stem']}@{clip['start']}"
                    self.clips.setdefault(clip["stem"], []).append((shard.name, key, clip["fps"]))

    def check_matches(self, dataset: VideoDataset) -> None:
        """Refuse a cache made with other clip settings than the dataset's."""
        want, have = _settings(dataset), self.meta["settings"]
        if want != have:
            raise ValueError(
                f"latent cache {self.dir} was made with {have}, the dataset asks "
                f"for {want}; rebuild the cache with the dataset's settings"
            )

    def sample(self, stem: str) -> dict[str, Any]:
        choices = self.clips.get(stem)
        if not choices:
            raise VideoError(
                f"{stem} is not in the latent cache {self.dir}; "
                "re-run python -m data_prep.latent_cache to add it"
            )
        shard, key, fps = choices[int(torch.randint(len(choices), ()).item())]
        with safe_open(str(self.dir / shard), "pt") as f:
            return {"latent": f.get_tensor(key), "fps": float(fps)}


@torch.no_grad()
def build_latent_cache(
    dataset: VideoDataset,
    tokenizer: Any,
    out_dir: str | Path,
    windows_per_video: int = 1,
    shard_size: int = 32,
    device: str | torch.device = "cpu",
    store_dtype: torch.dtype | None = None,
    preprocess: Callable[[torch.Tensor], torch.Tensor] = clip_to_unit_range,
    progress: bool = True,
) -> Path:
    """Encode `windows_per_video` evenly spaced clips of every video with `tokenizer.encode`.

    `tokenizer` needs `.encode(video [1,3,T,H,W] in [-1,1]) -> [1,C,T',H',W']` and
    `.identity` (JSON-able, recorded and checked on read). Re-running skips clips already stored.
    """
    from tqdm import tqdm

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    meta = {
        "identity": _identity_text(tokenizer.identity),
        "settings": _settings(dataset),
        "windows_per_video": windows_per_video,
    }
    meta_path = out / "cache.json"
    if meta_path.is_file():
        old = json.loads(meta_path.read_text())
        if old != meta:
            raise ValueError(
                f"{out} holds a cache made with {old}, not {meta}; "
                "choose another output folder or delete it"
            )
    else:
        atomic_write_text(meta_path, json.dumps(meta, indent=2))
    done = LatentCache(out).clips
    shard_id = len(list(out.glob("latents-*.safetensors")))
    tensors: dict[str, torch.Tensor] = {}
    clips: list[dict] = []

    def flush() -> None:
        nonlocal shard_id
        if not tensors:
            return
        path = out / f"latents-{shard_id:05d}.safetensors"
        meta = {"clips": json.dumps(clips)}
        atomic_write(path, lambda f: f.write(save(tensors, metadata=meta)))
        shard_id += 1
        tensors.clear()
        clips.clear()

    for entry in tqdm(dataset.samples, desc="latent cache", disable=not progress):
        stem = Path(entry["video"]).stem
        have = {key for _, key, _ in done.get(stem, [])}
        try:
            reader = ClipReader(
                entry["video"], dataset.video_size, dataset.resize_mode, dataset.decode_threads
            )
        except VideoError as err:
            print(f"skipping {entry['video']}: {err}")
            continue
        with reader:
            for start in window_starts(reader.num_frames, dataset.span, windows_per_video):
                key = f"{stem}@{start}"
                if key in have:
                    continue
                frames = reader.read(start, dataset.num_frames, dataset.frame_stride)
                video = torch.from_numpy(frames).permute(3, 0, 1, 2)
                latent = tokenizer.encode(preprocess(video).to(device))[0]
                latent = latent.to(store_dtype) if store_dtype is not None else latent
                tensors[key] = latent.detach().cpu().contiguous()
                clips.append(
                    {"stem": stem, "start": start, "fps": reader.fps / dataset.frame_stride}
                )
                if len(tensors) >= shard_size:
                    flush()
    flush()
    return out
