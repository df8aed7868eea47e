"""PyAV clip reader: open once, seek, decode N consecutive frames, resize inside FFmpeg's scaler.

Resizing in swscale while converting YUV to RGB avoids a float round trip per frame: for a
93-frame 432x768 clip from 480p/720p H.264 at camera-like bitrates this reader is 3.5-4.9x faster
than the upstream way (decord decode + per-frame float `interpolate(antialias=True)`) on a 2-core
CPU; at very high bitrates decoding, which both share, dominates and the gain drops to 2-3x
(docs/performance.md, "Data loading"; bench/bench_data.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch
import torch.nn.functional as F
from av.video.reformatter import Interpolation, VideoReformatter

RESIZE_MODES = ("resize", "center_crop")
# swscale widens its filter with the scale factor when downscaling, so its BILINEAR is antialiased
# like torch's antialias=True bilinear; of AREA, BILINEAR and BICUBIC it matched the upstream
# reference best (highest PSNR on every source in bench/bench_data.py) for ~0.5 ms more per frame.
DEFAULT_INTERPOLATION = "BILINEAR"


class VideoError(RuntimeError):
    """A video cannot be opened or does not hold the requested frames."""


@dataclass(frozen=True)
class VideoInfo:
    """What the container header says about the first video stream."""

    path: str
    num_frames: int
    fps: float
    height: int
    width: int


def _open(path: str | Path) -> av.container.InputContainer:
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError) as err:
        raise VideoError(f"cannot open video {path}: {err}; re-encode or remove the file") from err
    if not container.streams.video:
        container.close()
        raise VideoError(f"{path} has no video stream; remove it from videos/")
    return container


def _stream_fps(stream: av.video.stream.VideoStream) -> float:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    # upstream/cosmos_predict2.md §6.2: upstream falls back to 16 fps
    return float(rate) if rate else 16.0


def _count_frames(container: av.container.InputContainer) -> int:
    # Containers without a frame count in the header (some webm/mkv): count packets, no decode.
    stream = container.streams.video[0]
    return sum(1 for p in container.demux(stream) if p.size > 0)


def probe_video(path: str | Path) -> VideoInfo:
    """Read frame count, fps and size from the header (cheap: no decoding for mp4)."""
    with _open(path) as container:
        stream = container.streams.video[0]
        n = stream.frames or _count_frames(container)
        ctx = stream.codec_context
        return VideoInfo(str(path), int(n), _stream_fps(stream), ctx.height, ctx.width)


def folder_fps(dataset_dir: str | Path | None, default: float = 16.0, probe: int = 8) -> float:
    """The frame rate of a GR1-layout folder's clips (`videos/*.mp4`, read from the headers of
    the first `probe`), or `default` when there are none yet (a dataset made on first use).
    Clips at different rates are refused: one model fps cannot describe them all."""
    videos = sorted((Path(dataset_dir) / "videos").glob("*.mp4"))[:probe] if dataset_dir else []
    rates = {}
    for path in videos:
        try:
            rates[path.name] = round(probe_video(path).fps, 3)
        except (VideoError, av.error.FFmpegError, OSError):
            continue  # a damaged file is the dataset's to report, with the others
    if len(set(rates.values())) > 1:
        raise VideoError(
            f"the clips in {Path(dataset_dir) / 'videos'} have different frame rates "
            f"({', '.join(f'{k}: {v:g}' for k, v in rates.items())}); re-encode them to one "
            "rate (ffmpeg -r) or set model.fps by hand."
        )
    return next(iter(rates.values())) if rates else float(default)


def resized_shape(src_hw: tuple[int, int], size: tuple[int, int], mode: str) -> tuple[int, int]:
    """Size to scale to before cropping: `size` for "resize", an aspect-keeping cover for crop."""
    if mode not in RESIZE_MODES:
        raise ValueError(f"resize mode {mode!r} is unknown; use one of {RESIZE_MODES}")
    if mode == "resize":
        return size
    h, w = src_hw
    scale = max(size[0] / h, size[1] / w)
    return max(size[0], round(h * scale)), max(size[1], round(w * scale))


def _center_crop(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    top = (img.shape[0] - size[0]) // 2
    left = (img.shape[1] - size[1]) // 2
    return img[top : top + size[0], left : left + size[1]]


class ClipReader:
    """Reads clips of consecutive frames from one video file.

    `size` is (H, W). mode "resize" scales to exactly `size` (upstream training: aspect not kept);
    "center_crop" scales to cover `size` keeping the aspect, then crops the centre (upstream
    inference). `threads` decode threads (FFmpeg frame+slice threading); 0 lets FFmpeg choose.
    """

    def __init__(
        self,
        path: str | Path,
        size: tuple[int, int] | None = None,
        mode: str = "resize",
        threads: int = 2,
        interpolation: str = DEFAULT_INTERPOLATION,
    ) -> None:
        self.path = str(path)
        self.container = _open(path)
        self.stream = self.container.streams.video[0]
        self.stream.thread_type = "AUTO"
        self.stream.codec_context.thread_count = threads
        ctx = self.stream.codec_context
        self.src_hw = (ctx.height, ctx.width)
        self.size = tuple(size) if size is not None else self.src_hw
        self.mode = mode
        self.scaled_hw = resized_shape(self.src_hw, self.size, mode)
        self.interpolation = Interpolation[interpolation]
        self.fps = _stream_fps(self.stream)
        self.num_frames = int(self.stream.frames) or self._count_and_rewind()
        self._reformatter = VideoReformatter()  # keeps one SwsContext for the whole clip

    def _count_and_rewind(self) -> int:
        n = _count_frames(self.container)
        self.container.seek(0, stream=self.stream)
        return n

    def close(self) -> None:
        self.container.close()

    def __enter__(self) -> ClipReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _frame_index(self, frame: av.VideoFrame) -> int:
        if frame.pts is None or frame.time_base is None:
            return -1
        start = self.stream.start_time or 0
        seconds = (frame.pts - start) * Fraction(frame.time_base)
        return int(math.floor(seconds * self.fps + 0.5))

    def _to_rgb(self, frame: av.VideoFrame) -> np.ndarray:
        h, w = self.scaled_hw
        rgb = self._reformatter.reformat(
            frame, width=w, height=h, format="rgb24", interpolation=self.interpolation
        ).to_ndarray()
        return _center_crop(rgb, self.size) if self.mode == "center_crop" else rgb

    def _frames_from(self, start: int):
        """Yield (index, frame) from `start` on, seeking to the keyframe before it first."""
        tb = self.stream.time_base
        target = int(start / self.fps / tb) + (self.stream.start_time or 0) if start else 0
        self.container.seek(max(target - 1, 0), stream=self.stream, backward=True)
        for i, frame in enumerate(self.container.decode(self.stream)):
            idx = self._frame_index(frame)
            if idx < 0:
                raise VideoError(f"{self.path} has frames without timestamps; re-encode it")
            if i == 0 and idx > start > 0:
                # Seek overshot (no keyframe before start in the index): decode from the top.
                yield from self._frames_from(0)
                return
            yield idx, frame

    def read(self, start: int, num_frames: int, stride: int = 1) -> np.ndarray:
        """Frames start, start+stride, ... (num_frames of them) as uint8 [T, H, W, 3]."""
        last = start + (num_frames - 1) * stride
        if start < 0 or num_frames < 1 or stride < 1:
            raise ValueError(
                f"bad clip request start={start} num_frames={num_frames} stride={stride}"
            )
        if last >= self.num_frames:
            raise VideoError(
                f"{self.path} has {self.num_frames} frames, clip needs frames {start}..{last}"
            )
        out = np.empty((num_frames, *self.size, 3), dtype=np.uint8)
        got = 0
        try:
            for idx, frame in self._frames_from(start):
                if idx < start or (idx - start) % stride:
                    continue
                out[got] = self._to_rgb(frame)
                got += 1
                if got == num_frames:
                    break
        except av.FFmpegError as err:
            raise VideoError(f"decoding {self.path} failed at frame ~{start + got}: {err}") from err
        if got < num_frames:
            raise VideoError(
                f"{self.path} decoded only {got} of {num_frames} frames from {start} "
                "(truncated or corrupt file); re-encode or remove it"
            )
        return out


def read_clip(
    path: str | Path,
    start: int,
    num_frames: int,
    size: tuple[int, int] | None = None,
    stride: int = 1,
    mode: str = "resize",
    threads: int = 2,
) -> np.ndarray:
    """One-shot helper: uint8 [T, H, W, 3] frames of `path` (see ClipReader)."""
    with ClipReader(path, size=size, mode=mode, threads=threads) as reader:
        return reader.read(start, num_frames, stride)


def resize_video(video: torch.Tensor, size: tuple[int, int], mode: str = "resize") -> torch.Tensor:
    """Antialiased bilinear resize of uint8 [T, 3, H, W] in torch (upstream's float path).

    The reference the FFmpeg-scaled reader is checked against, and a fallback for tensors.
    """
    h, w = resized_shape(tuple(video.shape[-2:]), tuple(size), mode)
    x = F.interpolate(video.float() / 255.0, size=(h, w), mode="bilinear", antialias=True)
    x = (x * 255.0).clamp(0, 255).to(torch.uint8)
    if mode == "center_crop":
        top, left = (h - size[0]) // 2, (w - size[1]) // 2
        x = x[..., top : top + size[0], left : left + size[1]]
    return x


def write_video(path: str | Path, frames: np.ndarray, fps: float = 16.0, crf: int = 18) -> None:
    """Write uint8 [T, H, W, 3] frames as H.264 mp4 (even H and W, yuv420p) through PyAV."""
    t, h, w, _ = frames.shape
    if h % 2 or w % 2:
        raise ValueError(f"H.264 yuv420p needs even frame sizes, got {h}x{w}; pad or resize")
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"crf": str(crf), "preset": "veryfast"}
        for img in frames:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
