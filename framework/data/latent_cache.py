"""Latent cache: encode each clip once with a frozen tokenizer, train from the stored latents.

Layout of a cache folder (format 2):
  cache.json                       format, tokenizer identity, the clip settings of the latents,
                                   which windows were encoded, and the command that built it
  latents-00000.safetensors ...    shards; tensor "<source>@<start>" = latent [C, T', H', W'],
                                   where <source> is the xxh3_64 of the video file's bytes.
                                   Header metadata: "clips" = JSON list of {source, stem, start,
                                   fps}; "sources" = JSON {source: {"starts": every window start
                                   of that video, "files": {stem: [bytes, mtime_ns]}, "error":
                                   why it has no windows (unreadable, too short), if so}}
safetensors (not pickle) so reading is safe and one clip is read without loading its whole shard.
A shard is written atomically when full and never rewritten; a new shard takes the number after
the highest one present, so a build never overwrites one.

Keyed by content: a clip belongs to the bytes of its video, not to its name. A video replaced in
place has another hash, so its old windows match nothing; a deleted shard leaves its videos'
windows missing. Re-running the builder encodes exactly the windows the current videos lack;
training (`check_matches`) refuses, in one line with the command that fills the gaps, a cache
that lacks a window of any of its dataset's videos. Hashing every video at each training start
would cost a read of the dataset, so each source records the size and mtime of the files it was
read from: a file with the same name, size and mtime is taken as the same bytes (as make and
rsync do), and only a file that differs is hashed again. The builder hashes each video once per
build, and not at all when its size and mtime are already recorded.

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
from framework.manifest import HASH, record_file


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
FORMAT = 2  # 2: shards keyed by source content (1: by file name, no source records)
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
    """Read side: `sample(stem)` gives {"latent", "fps"} for a random cached window of a video.

    `clips` maps a stem to its windows [(shard, key, fps)]: after `check_matches(dataset)` those
    of the dataset's current video bytes, before it those of every source with that name."""

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
        self.by_source: dict[str, list[tuple[str, str, float, int]]] = {}
        self.sources: dict[str, dict] = {}
        for shard in sorted(self.dir.glob("latents-*.safetensors")):
            clips, sources = self._read_header(shard)
            for clip in clips:
                key = f"{clip['source']}@{clip['start']}"
                entry = (shard.name, key, clip["fps"], clip["start"])
                self.by_source.setdefault(clip["source"], []).append(entry)
            for h, rec in sources.items():
                have = self.sources.setdefault(h, {"starts": rec["starts"], "files": {}})
                have["files"].update(rec["files"])
                if "error" in rec:
                    have["error"] = rec["error"]
        self.clips: dict[str, list[tuple[str, str, float]]] = {}
        for h, entries in self.by_source.items():
            for stem in self.sources.get(h, {}).get("files", {}):
                self.clips.setdefault(stem, []).extend(e[:3] for e in entries)
        self.errors: dict[str, str] = {}

    def _rebuild(self) -> str:
        cmd = self.meta.get("command") or (
            f"python -m data_prep.latent_cache EXPERIMENT [KEY=VALUE ...] --output {self.dir}"
        )
        return f"re-run the command that built it, which encodes only what is missing: {cmd}"

    def _read_header(self, shard: Path) -> tuple[list[dict], dict[str, dict]]:
        try:
            with safe_open(str(shard), "pt") as f:
                meta = f.metadata() or {}
            clips = json.loads(meta["clips"])
            if "sources" not in meta:
                raise ConfigError(
                    f"latent cache {self.dir} was made by an older version (its shards are keyed "
                    f"by file name, not content): {REBUILD}{self._built_by()}."
                )
            return clips, json.loads(meta["sources"])
        except ConfigError:
            raise
        except Exception as err:  # noqa: BLE001  (safetensors' errors name no file)
            raise ConfigError(
                f"latent cache shard {shard} is damaged ({str(err).splitlines()[0]}); delete it "
                f"and {self._rebuild()}."
            ) from None

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
        """Refuse a cache made with other clip settings than the dataset's, or one that lacks a
        window of any of the dataset's videos as they are now; then serve those windows."""
        want, have = _settings(dataset), self.meta["settings"]
        if want != have:
            raise ConfigError(
                f"latent cache {self.dir} was made with {have}, the dataset asks "
                f"for {want}: {REBUILD}{self._built_by()}."
            )
        problems, clips = [], {}
        for entry in dataset.samples:
            video = Path(entry["video"])
            h = self.source_of(video)
            if h is None:
                known = video.stem in self.clips or any(
                    video.stem in r["files"] for r in self.sources.values()
                )
                problems.append(f"{video} {'changed since' if known else 'is not in'} the cache")
                continue
            missing = self.missing_starts(h)
            if missing:
                n = len(self.sources[h]["starts"])
                problems.append(f"{video} lacks {len(missing)} of its {n} windows")
                continue
            clips[video.stem] = [e[:3] for e in self.by_source.get(h, [])]
            if "error" in self.sources[h]:
                self.errors[video.stem] = self.sources[h]["error"]
        if problems:
            more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
            raise ConfigError(
                f"latent cache {self.dir} does not cover the dataset: "
                f"{'; '.join(problems[:3])}{more}; {self._rebuild()}."
            )
        self.clips = clips

    def source_of(self, video: Path, digest: str | None = None) -> str | None:
        """The recorded source that holds `video`'s bytes: by name, size and mtime, else (or
        given `digest`) by the hash of its bytes; None when none does."""
        st = video.stat()
        stamp = [st.st_size, st.st_mtime_ns]
        for h, rec in self.sources.items():
            if rec["files"].get(video.stem) == stamp:
                return h
        digest = digest or record_file(video)[HASH]
        return digest if digest in self.sources else None

    def missing_starts(self, source: str) -> list[int]:
        have = {e[3] for e in self.by_source.get(source, [])}
        return [s for s in self.sources[source]["starts"] if s not in have]

    def sample(self, stem: str) -> dict[str, Any]:
        choices = self.clips.get(stem)
        if not choices:
            reason = self.errors.get(stem, "it is not in the latent cache")
            raise VideoError(
                f"{stem}: {reason} ({self.dir}); re-run python -m data_prep.latent_cache to add it"
            )
        shard, key, fps = choices[int(torch.randint(len(choices), ()).item())]
        try:
            with safe_open(str(self.dir / shard), "pt") as f:
                # The identity travels with the latent: the model checks it against its tokenizer.
                latent = f.get_tensor(key)
        except Exception as err:  # noqa: BLE001  (skipped as a bad sample, the file named)
            raise VideoError(
                f"latent cache shard {self.dir / shard} is damaged ({err}); delete it and "
                f"{self._rebuild()}"
            ) from None
        return {"latent": latent, "fps": float(fps), "latent_identity": self.meta["identity"]}


class _ShardWriter:
    """Collects clips and source records; writes a shard when `shard_size` clips are in, under
    the number after the highest one present (never over an existing shard)."""

    def __init__(self, out: Path, shard_size: int) -> None:
        numbers = [int(p.stem.rpartition("-")[2]) for p in out.glob("latents-*.safetensors")]
        self.out, self.shard_size, self.next_id = out, shard_size, max(numbers, default=-1) + 1
        self.tensors: dict[str, torch.Tensor] = {}
        self.clips: list[dict] = []
        self.records: dict[str, dict] = {}  # every source touched in this build
        self.pending: set[str] = set()  # sources whose record must go into the next shard

    def add(self, source: str, start: int, stem: str, fps: float, latent: torch.Tensor) -> None:
        self.tensors[f"{source}@{start}"] = latent
        self.clips.append({"source": source, "stem": stem, "start": start, "fps": fps})
        self.pending.add(source)
        if len(self.tensors) >= self.shard_size:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        path = self.out / f"latents-{self.next_id:05d}.safetensors"
        sources = {h: self.records[h] for h in sorted(self.pending)}
        meta = {"clips": json.dumps(self.clips), "sources": json.dumps(sources)}
        tensors = dict(self.tensors)
        atomic_write(path, lambda f: f.write(save(tensors, metadata=meta)))
        self.next_id += 1
        self.tensors.clear()
        self.clips.clear()
        self.pending.clear()


def _open_cache(out: Path, meta: dict[str, Any], command: str | None) -> LatentCache:
    """The cache in `out` (made now if absent); refuses one of other settings."""
    out.mkdir(parents=True, exist_ok=True)
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
    return LatentCache(out)


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
    encodes exactly the windows the current videos lack (a killed build resumes, a deleted
    shard or a replaced video is filled in); other settings are refused. `command` is recorded
    so a refusal can say how the cache was built.
    """
    from tqdm import tqdm

    out = Path(out_dir)
    meta: dict[str, Any] = {
        "format": FORMAT,
        "identity": identity_text(tokenizer.identity),
        "settings": _settings(dataset),
    }
    if window_stride:
        meta["window_stride"] = int(window_stride)
    else:
        meta["windows_per_video"] = windows_per_video
    cache = _open_cache(out, meta, command)
    writer = _ShardWriter(out, shard_size)
    bar = tqdm(dataset.samples, desc="latent cache", unit="video", disable=not progress)
    encoded = 0

    def encode(video: torch.Tensor) -> torch.Tensor:
        latent = tokenizer.encode(preprocess(video).to(device))[0]
        latent = latent.to(store_dtype) if store_dtype is not None else latent
        return latent.detach().cpu().contiguous()

    for entry in bar:
        path = Path(entry["video"])
        st = path.stat()
        source = cache.source_of(path) or record_file(path)[HASH]  # hashed once per build
        stamp = {path.stem: [st.st_size, st.st_mtime_ns]}
        record = writer.records.setdefault(
            source, cache.sources.get(source, {"starts": None, "files": {}})
        )
        if record["files"].get(path.stem) != stamp[path.stem]:
            record["files"] = {**record["files"], **stamp}
            writer.pending.add(source)  # a new name or time for known bytes: record it
        if record["starts"] is not None and not cache.missing_starts(source):
            continue  # every window of these bytes is stored: no decode
        try:
            reader = ClipReader(
                str(path), dataset.video_size, dataset.resize_mode, dataset.decode_threads
            )
        except VideoError as err:
            print(f"skipping {path}: {err}")
            record.update(starts=[], error=str(err))
            writer.pending.add(source)
            continue
        with reader:
            starts = window_starts(
                reader.num_frames, dataset.span, windows_per_video, window_stride
            )
            record["starts"] = starts
            if not starts:
                record["error"] = (
                    f"{reader.num_frames} frames, fewer than a window's {dataset.span}"
                )
                writer.pending.add(source)
            have = {e[3] for e in cache.by_source.get(source, [])}
            for start in starts:
                if start in have:
                    continue
                frames = reader.read(start, dataset.num_frames, dataset.frame_stride)
                latent = encode(torch.from_numpy(frames).permute(3, 0, 1, 2))
                writer.add(source, start, path.stem, reader.fps / dataset.frame_stride, latent)
                encoded += 1
                bar.set_postfix(windows=encoded, refresh=False)
    writer.flush()
    return out
