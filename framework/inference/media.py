"""Conditioning inputs (image or video files) and outputs (mp4 + prompt sidecar),
upstream/cosmos_predict2.md §7.1.

Images and videos are resized to cover the model's size keeping the aspect, then center-cropped
(upstream inference; training used a plain resize). Tensors are uint8 [1,3,N,H,W].
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from framework.data.video import ClipReader, VideoError, resize_video, write_video

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
# 8K x 8K: far above any conditioning frame, far below what exhausts memory when decoded.
MAX_IMAGE_PIXELS = 8192 * 8192
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".webm")


class InputError(ValueError):
    """A conditioning input cannot be used; the message names the file and the fix."""


def load_image(path: str | Path, size: tuple[int, int]) -> Tensor:
    """uint8 [1,3,1,H,W]: the image resized to cover `size` (H, W) and center-cropped."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            w, h = img.size  # read from the header, before any pixel is decoded
            if w * h > MAX_IMAGE_PIXELS:
                raise InputError(
                    f"image {path} is {w}x{h} pixels, more than the {MAX_IMAGE_PIXELS:,} this "
                    "command opens; downscale it first (it is resized to the model's size anyway)."
                )
            # RGB conversion (upstream does none) so RGBA/greyscale/palette files work too.
            rgb = np.asarray(img.convert("RGB"))
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError) as err:
        raise InputError(f"cannot read image {path}: {err}; pass a valid .png/.jpg/.webp") from None
    frames = torch.from_numpy(rgb.copy()).permute(2, 0, 1)[None]  # [1,3,H,W]
    frames = resize_video(frames, size, mode="center_crop")
    return frames.permute(1, 0, 2, 3)[None].contiguous()


def load_video_frames(
    path: str | Path, size: tuple[int, int], num_frames: int, last: bool = True
) -> Tensor:
    """uint8 [1,3,num_frames,H,W]: the last (or first) frames of a video, covered and cropped."""
    try:
        with ClipReader(path, size=size, mode="center_crop") as reader:
            if reader.num_frames < num_frames:
                raise InputError(
                    f"{path} has {reader.num_frames} frames but "
                    f"{num_frames} are needed; pass a longer video."
                )
            start = reader.num_frames - num_frames if last else 0
            frames = reader.read(start, num_frames)
    except VideoError as err:
        raise InputError(str(err)) from None
    return torch.from_numpy(frames).permute(3, 0, 1, 2)[None].contiguous()


def load_conditioning(
    path: str | Path, size: tuple[int, int], num_conditional_frames: int, first: bool = False
) -> Tensor:
    """What `WorldModel.generate` conditions on: one frame for an image, the last
    `num_conditional_frames` frames for a video (the model pads to full length,
    upstream/cosmos_predict2.md §7.1), or its first ones with `first` (an action rollout starts
    where its actions start, frame 0, as upstream's action inference).

    A video with one conditional frame gives one frame, which the model pads with black instead
    of copies of it; only the first latent frame is conditioned and the tokenizer is causal, so
    the result is the same as upstream's padding.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(
            f"input {path} does not exist; pass an existing image or video with --input_path."
        )
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        if num_conditional_frames != 1:
            raise InputError(
                f"{path} is an image, which conditions exactly one frame; use "
                "--num_conditional_frames 1 or pass a video."
            )
        return load_image(path, size)
    if suffix in VIDEO_SUFFIXES:
        return load_video_frames(path, size, num_conditional_frames, last=not first)
    raise InputError(
        f"input {path} has an unknown type {suffix!r}; pass an image "
        f"({', '.join(IMAGE_SUFFIXES)}) or a video ({', '.join(VIDEO_SUFFIXES)})."
    )


def save_video(path: str | Path, video: Tensor, fps: float) -> Path:
    """Write uint8 [3,T,H,W] (or [1,3,T,H,W]) as H.264 mp4 with PyAV; returns the path."""
    if video.ndim == 5:
        video = video[0]
    if video.dtype != torch.uint8 or video.ndim != 4 or video.shape[0] != 3:
        raise ValueError(
            f"save_video wants uint8 [3,T,H,W]; got {video.dtype} {tuple(video.shape)}."
        )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = video.permute(1, 2, 3, 0).contiguous().cpu().numpy()
    write_video(path, frames, fps=fps)
    return path


def sidecar_path(video_path: str | Path) -> Path:
    return Path(video_path).with_suffix(".txt")


def write_sidecar(video_path: str | Path, prompt: str, negative_prompt: str) -> Path:
    """The upstream prompt record `<stem>.txt` beside the video."""
    path = sidecar_path(video_path)
    path.write_text(f"[Prompt]\n{prompt}\n\n[Negative Prompt]\n{negative_prompt}\n")
    return path
