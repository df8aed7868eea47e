"""Latent cache: encode each clip once with a frozen tokenizer, train from the stored latents.

Layout of a cache folder:
  cache.json                       tokenizer identity, the clip settings of the latents, which
                                   windows were encoded, and the command that built it
  latents-00000.safetensors ...    shards; tensor "<stem>@<start>" = latent [C, T', H', W'];
                                   header metadata "clips" = JSON list of {stem, start, fps}
safetensors (not pickle) so reading is safe and one clip is read without loading its whole shard.
A shard is written atomically when full, so an interrupted build resumes from the last shard.

Which windows: upstream draws each sample's 93-frame window uniformly from every start of the
video (docs/upstream/cosmos_predict2.md §6.2). The cache stores whole windows, every
`window_stride` frames from the first start to the last, and training draws one of them at
random: stride 1 is upstream's distribution, the default 4 (one latent frame of the Wan VAE)
stores a quarter of it. Slicing one encoding of the whole video instead would be cheaper but
wrong: the VAE is causal, so a window's first latent (the frame generation conditions on) encodes
that frame alone, and a slice of the whole video's latents differs from the window's own encoding
(bench/bench_latent_windows.py measures it; docs/data.md has the numbers).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save

from framework.config import ConfigError
from framework.data.pixels import to_unit_range
from framework.data.video import ClipReader, VideoError
from framework.io import atomic_write, atomic_write_text


class VideoDataset(Protocol):
    """What the cache reads of a clip dataset (framework/data/dataset.py's VideoDataset); a
    protocol, so this module does not import the dataset that imports it."""

    samples: list[dict]
    num_frames: int
    video_size: tuple[int, int]
    frame_stride: int
    resize_mode: str
    decode_threads: int
    span: int


SETTINGS = ("num_frames", "video_size", "frame_stride", "resize_mode")
REBUILD = (
    "rebuild the latent cache with the experiment and overrides you train with: "
    "python -m data_prep.latent_cache "
    "EXPERIMENT [KEY=VALUE ...] --output NEW_FOLDER, then data.dataset.latent_cache_dir=NEW_FOLDER"
)


def clip_to_unit_range(video: torch.Tensor) -> torch.Tensor:
    """uint8 [3,T,H,W] -> float [1,3,T,H,W] in [-1, 1], as the model's tokenizer input."""
    return to_unit_range(video).unsqueeze(0)


def identity_text(identity: Any) -> str:
    """How cache.json records a tokenizer's `identity` (and how a model compares its own)."""
    return json.dumps(identity, sort_keys=True, default=str)


_identity_text = identity_text


def _settings(dataset: VideoDataset) -> dict[str, Any]:
    return {
        k: list(v) if isinstance(v, tuple) else v for k in SETTINGS for v in [getattr(dataset, k)]
    }


def window_starts(
    num_source_frames: int, span: int, windows: int = 1, stride: int | None = None
) -> list[int]:
    """Clip starts: every `stride` frames from 0, plus the last valid start; or (no stride)
    `windows` evenly spaced from 0 to the last valid start. No repeats."""
    last = num_source_frames - span
    if last < 0:
        return []
    if stride:
        return sorted({*range(0, last + 1, int(stride)), last})
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
        if expected_identity is not None:
            self.check_identity(identity_text(expected_identity))
        self.clips: dict[str, list[tuple[str, str, float]]] = {}
        for shard in sorted(self.dir.glob("latents-*.safetensors")):
            with safe_open(str(shard), "pt") as f:
                for clip in json.loads(f.metadata()["clips"]):
                    key = f"{clip['stem']}@{clip['start']}"
                    self.clips.setdefault(clip["stem"], []).append((shard.name, key, clip["fps"]))

    def _built_by(self) -> str:
        cmd = self.meta.get("command")
        return f" (it was built by: {cmd})" if cmd else ""

    def check_identity(self, want: str) -> None:
        """Refuse a cache made by another tokenizer (another VAE file, config or scaling)."""
        if want != self.meta["identity"]:
            raise ConfigError(
                f"latent cache {self.dir} was made by tokenizer {self.meta['identity']}, not "
                f"this model's {want}: {REBUILD}{self._built_by()}."
            )

    def check_matches(self, dataset: VideoDataset) -> None:
        """Refuse a cache made with other clip settings than the dataset's."""
        want, have = _settings(dataset), self.meta["settings"]
        if want != have:
            raise ConfigError(
                f"latent cache {self.dir} was made with {have}, the dataset asks "
                f"for {want}: {REBUILD}{self._built_by()}."
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
            # The identity travels with the latent: the model checks it against its tokenizer.
            latent = f.get_tensor(key)
        return {"latent": latent, "fps": float(fps), "latent_identity": self.meta["identity"]}


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
    window_stride: int | None = None,
    command: str | None = None,
) -> Path:
    """Encode clips of every video with `tokenizer.encode`: one every `window_stride` frames
    (plus the last start), or `windows_per_video` evenly spaced ones when no stride is given.

    `tokenizer` needs `.encode(video [1,3,T,H,W] in [-1,1]) -> [1,C,T',H',W']` and
    `.identity` (JSON-able, recorded and checked on read). Re-running with the same settings
    skips clips already stored (a killed build resumes); other settings are refused. `command`
    is recorded so a refusal can say how the cache was built.
    """
    from tqdm import tqdm

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    meta: dict[str, Any] = {
        "identity": identity_text(tokenizer.identity),
        "settings": _settings(dataset),
    }
    if window_stride:
        meta["window_stride"] = int(window_stride)
    else:
        meta["windows_per_video"] = windows_per_video
    meta_path = out / "cache.json"
    if meta_path.is_file():
        old = json.loads(meta_path.read_text())
        if {k: v for k, v in old.items() if k != "command"} != meta:
            raise ConfigError(
                f"{out} holds a cache made with {old}, not {meta}; "
                "choose another output folder or delete it"
            )
    else:
        atomic_write_text(meta_path, json.dumps({**meta, "command": command}, indent=2))
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

    bar = tqdm(dataset.samples, desc="latent cache", unit="video", disable=not progress)
    encoded = 0
    for entry in bar:
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
            starts = window_starts(
                reader.num_frames, dataset.span, windows_per_video, window_stride
            )
            for start in starts:
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
                encoded += 1
                bar.set_postfix(windows=encoded, refresh=False)
                if len(tensors) >= shard_size:
                    flush()
    flush()
    return out
