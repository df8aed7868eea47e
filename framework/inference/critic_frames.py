"""Video frames as the Cosmos-Reason1 critic (Qwen2.5-VL) receives them.

Upstream feeds the video through `qwen_vl_utils.process_vision_info` and transformers'
`AutoProcessor`; both need torchvision (which this project does not install) and the processor's
resizing changed between transformers releases. So the frames are prepared here, by the same
arithmetic as the pinned upstream stack (qwen-vl-utils 0.0.11, transformers 4.51.3,
docs/upstream/cosmos_predict2.md "Versions"): frames sampled at 16 fps (an even count, at most the
video's own), resized under the total-pixel budget with qwen-vl-utils' rule, resized again by the
image processor's rule (min 256*28*28, max 1280*28*28 pixels), then normalized and cut into the
model's patches. A 93-frame 432x768 clip at 16 fps becomes 92 frames of 364x588: 46x26x42
patches, 12,558 video tokens.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

# qwen-vl-utils 0.0.11 constants, and what upstream passes (fps 16, total_pixels 8192*28*28).
QWEN_FACTOR = 28
FRAME_FACTOR = 2
MIN_FRAMES = 4
MAX_FRAMES = 768
VIDEO_MIN_PIXELS = 128 * 28 * 28
VIDEO_MAX_PIXELS = 768 * 28 * 28
SAMPLE_FPS = 16.0
TOTAL_PIXELS = 8192 * 28 * 28
# AutoProcessor.from_pretrained(min_pixels=..., max_pixels=...) in upstream's CosmosReason1; with
# transformers 4.51.3 the video frames pass through the image processor's resize with these.
PROCESSOR_MIN_PIXELS = 256 * 28 * 28
PROCESSOR_MAX_PIXELS = 1280 * 28 * 28
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def smart_resize(
    height: int, width: int, factor: int, min_pixels: float, max_pixels: float
) -> tuple[int, int]:
    """Height and width that are multiples of `factor`, near the aspect ratio, with the pixel
    count inside [min_pixels, max_pixels] (qwen-vl-utils' rule, also the image processor's)."""
    if max(height, width) / min(height, width) > 200:
        raise ValueError(f"a {height}x{width} video is too elongated for the critic (ratio > 200)")
    h = max(factor, round(height / factor) * factor)
    w = max(factor, round(width / factor) * factor)
    if h * w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h = max(factor, math.floor(height / beta / factor) * factor)
        w = max(factor, math.floor(width / beta / factor) * factor)
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h = math.ceil(height * beta / factor) * factor
        w = math.ceil(width * beta / factor) * factor
    return h, w


def num_sampled_frames(total: int, video_fps: float, fps: float = SAMPLE_FPS) -> int:
    """How many frames qwen-vl-utils takes: `fps` per second of video, clamped to
    [4, min(768, total)] and to the video's own count, rounded down to an even number."""
    max_frames = math.floor(min(MAX_FRAMES, total) / FRAME_FACTOR) * FRAME_FACTOR
    n = total / video_fps * fps
    n = min(max(n, MIN_FRAMES), max_frames, total)
    n = math.floor(n / FRAME_FACTOR) * FRAME_FACTOR
    if not FRAME_FACTOR <= n <= total:
        raise ValueError(f"a video of {total} frames is too short for the critic (needs >= 2)")
    return n


def frame_pixel_cap(n: int, total_pixels: float = TOTAL_PIXELS) -> float:
    """qwen-vl-utils 0.0.11's per-frame pixel cap for `n` sampled frames: the total budget
    shared by frame pairs, at most VIDEO_MAX_PIXELS and at least int(VIDEO_MIN_PIXELS * 1.05)
    (upstream rounds this floor down to an int; it binds from ~122 frames on)."""
    cap = min(VIDEO_MAX_PIXELS, total_pixels / n * FRAME_FACTOR)
    return max(cap, int(VIDEO_MIN_PIXELS * 1.05))


def resize_bicubic(frames: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Antialiased bicubic resize of float [T, 3, H, W] (what torchvision's resize runs)."""
    if tuple(frames.shape[-2:]) == tuple(size):
        return frames
    return F.interpolate(frames, size=size, mode="bicubic", antialias=True, align_corners=False)


@dataclass(frozen=True)
class VisionLayout:
    """The model's patching, from its preprocessor_config.json / config.json."""

    patch_size: int = 14
    merge_size: int = 2
    temporal_patch_size: int = 2
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD

    @property
    def factor(self) -> int:
        return self.patch_size * self.merge_size


def read_frames(path: str | Path) -> tuple[np.ndarray, float]:
    """All frames of a video at its own size, uint8 [T, H, W, 3], and its frame rate."""
    from framework.data.video import ClipReader, VideoError

    try:
        with ClipReader(path) as reader:
            return reader.read(0, reader.num_frames), float(reader.fps)
    except VideoError as err:
        raise ValueError(f"the critic cannot read {path}: {err}") from None


def prepare_frames(
    frames: np.ndarray,
    video_fps: float,
    layout: VisionLayout,
    fps: float = SAMPLE_FPS,
    total_pixels: float = TOTAL_PIXELS,
    processor_pixels: tuple[int, int] = (PROCESSOR_MIN_PIXELS, PROCESSOR_MAX_PIXELS),
) -> tuple[torch.Tensor, float]:
    """Float [T, 3, H, W] frames (0..255) as the Qwen2.5-VL model receives them, and the
    sampled frame rate (which sets the temporal position step of the tokens). Defaults: the
    critic's settings; the DreamGen judge passes qwen-vl-utils' defaults (2 fps, its total
    pixel budget) and its processor's pixel range."""
    total = len(frames)
    n = num_sampled_frames(total, video_fps, fps)
    idx = torch.linspace(0, total - 1, n).round().long()
    video = torch.from_numpy(frames).permute(0, 3, 1, 2)[idx].float()
    sample_fps = n / max(total, 1e-6) * video_fps
    # Stage 1, qwen-vl-utils: per-frame budget from the total; torchvision resizes the uint8
    # frames, so the result is rounded back to uint8 values.
    h, w = video.shape[-2:]
    size = smart_resize(h, w, QWEN_FACTOR, VIDEO_MIN_PIXELS, frame_pixel_cap(n, total_pixels))
    video = resize_bicubic(video, size).round().clamp(0, 255)
    # Stage 2, the image processor (transformers 4.51.3) on the float frames, not rounded.
    size = smart_resize(*size, layout.factor, *processor_pixels)
    return resize_bicubic(video, size), sample_fps


def patchify(frames: torch.Tensor, layout: VisionLayout) -> tuple[torch.Tensor, list[int]]:
    """Normalized patches [t*h*w, 3*tp*p*p] and the grid [t, h, w] of float 0..255 frames
    [T, 3, H, W], in the order the Qwen2-VL processors produce (2x2 merge groups adjacent)."""
    p, m, tp = layout.patch_size, layout.merge_size, layout.temporal_patch_size
    mean = torch.tensor(layout.mean).view(1, 3, 1, 1)
    std = torch.tensor(layout.std).view(1, 3, 1, 1)
    x = (frames / 255.0 - mean) / std
    if pad := -len(x) % tp:
        x = torch.cat([x, x[-1:].expand(pad, -1, -1, -1)])
    t, c, h, w = x.shape
    gt, gh, gw = t // tp, h // p, w // p
    x = x.reshape(gt, tp, c, gh // m, m, p, gw // m, m, p)
    x = x.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)
    return x.reshape(gt * gh * gw, c * tp * p * p).contiguous(), [gt, gh, gw]


def vision_layout(folder: Path, vision_config: Any) -> VisionLayout:
    """Patch sizes from the model config; mean/std from preprocessor_config.json when present."""
    pre = {}
    if (folder / "preprocessor_config.json").is_file():
        pre = json.loads((folder / "preprocessor_config.json").read_text())
    return VisionLayout(
        patch_size=int(vision_config.patch_size),
        merge_size=int(vision_config.spatial_merge_size),
        temporal_patch_size=int(vision_config.temporal_patch_size),
        mean=tuple(pre.get("image_mean", CLIP_MEAN)),
        std=tuple(pre.get("image_std", CLIP_STD)),
    )
