"""Qwen2.5-VL through transformers: loading, and M-RoPE positions by upstream's rule.

Cosmos-Reason1-7B (the best-of-N critic, later Predict2.5's text encoder) and the DreamGen-Bench
judge (Qwen2.5-VL-7B-Instruct) are this model. Their published behaviour is that of the pinned
upstream stack, transformers 4.51.3 (docs/upstream/cosmos_predict2.md "Versions"), and newer
transformers place the tokens differently:

- 5.x computes 3-D (time, height, width) positions only when the inputs carry
  `mm_token_type_ids`; without them every video token gets a plain sequence position, the same
  on all three axes (a 12,558-token GR1 clip then pushes the question ~12.5k positions later);
- 5.x starts the text after a video at `start + max(h, w) / merge` where 4.51 starts it one past
  the largest position of the video, which for a long video (temporal positions beyond the
  frame's width: 178+ frames at 432x768, 16 fps) is its last temporal position;
- 5.17 truncates `second_per_grid_ts` to an int before scaling time, so a 16 fps clip's frames
  all get temporal position 0.

`use_upstream_positions(model)` makes the loaded model compute positions with `rope_positions`,
a re-implementation of 4.51's `get_rope_index`, in forward and generate alike; callers pass
`mm_token_type_ids` (`token_types`) when the installed model's forward takes them, since 5.x
asks for 3-D positions only then. The processor is not loaded: transformers' video processing
needs torchvision, which this project does not install; the frames are prepared by
framework/inference/critic_frames.py with the upstream arithmetic.
"""

from __future__ import annotations

import inspect
import json
import re
from pathlib import Path
from typing import Any

import torch

HUB_ID_RE = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class QwenVLError(ValueError):
    """A Qwen2.5-VL checkpoint cannot be found or loaded; the message names the fix. `cause`
    is the first line of the loader's own error when loading itself failed."""

    def __init__(self, message: str, cause: str | None = None) -> None:
        super().__init__(message)
        self.cause = cause


def is_hub_id(name: str) -> bool:
    """`owner/name` that is not a folder here (`checkpoints/x/y` and `./a/b` are paths)."""
    return bool(HUB_ID_RE.match(name)) and not Path(name).exists()


def resolve(name_or_path: str | Path, hub_id: str | None = None, label: str = "Qwen2.5-VL") -> Path:
    """The folder holding the checkpoint: a local folder with config.json, or a hub id's
    snapshot in the Hugging Face cache (never downloaded here). `hub_id` names the weights a
    missing local folder should be filled with, for the error message."""
    name = str(name_or_path)
    folder = Path(name).expanduser()
    if (folder / "config.json").is_file():
        return folder
    if is_hub_id(name):
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError

        try:
            folder = Path(snapshot_download(name, local_files_only=True))
        except (LocalEntryNotFoundError, OSError, ValueError):
            folder = None
        if folder is not None and (folder / "config.json").is_file():
            return folder
        raise QwenVLError(
            f"{label} weights {name} are not in the Hugging Face cache; download them with "
            f"`hf download {name}` (or pass a local folder)."
        )
    how = (
        f"download them with `hf download {hub_id} --local-dir {folder}`"
        if hub_id
        else "point to a folder that holds the checkpoint's config.json"
    )
    raise QwenVLError(f"{label} weights not found in {folder} (no config.json); {how}.")


def chat_template(folder: Path, tokenizer: Any) -> str:
    """The checkpoint's chat template: chat_template.json / .jinja (the processor's), else the
    tokenizer's own."""
    if (folder / "chat_template.json").is_file():
        return json.loads((folder / "chat_template.json").read_text())["chat_template"]
    if (folder / "chat_template.jinja").is_file():
        return (folder / "chat_template.jinja").read_text()
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.chat_template
    raise QwenVLError(f"{folder} has no chat template (chat_template.json); re-download it.")


def dtype_kwargs(dtype: torch.dtype) -> dict[str, Any]:
    """from_pretrained's dtype keyword (transformers renamed torch_dtype to dtype in 4.56)."""
    import transformers

    major, minor = (int(v) for v in transformers.__version__.split(".")[:2])
    return {"dtype": dtype} if (major, minor) >= (4, 56) else {"torch_dtype": dtype}


def load_qwen_vl(
    name_or_path: str | Path,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    *,
    hub_id: str | None = None,
    label: str = "Qwen2.5-VL",
    attn_implementation: str = "sdpa",
) -> tuple[Any, Any]:
    """(model, tokenizer) of a Qwen2.5-VL checkpoint (hub id from the cache, or a folder).

    The model is in eval mode on `device` (default: CUDA when present), in `dtype` (default:
    bf16 on CUDA, float32 on the CPU), SDPA attention (no flash-attn build), and computes M-RoPE
    positions by upstream's rule (`use_upstream_positions`). The tokenizer's `chat_template` is
    the checkpoint's (chat_template.json wins, as the upstream processor reads it)."""
    import transformers

    folder = resolve(name_or_path, hub_id, label)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = dtype or (torch.bfloat16 if device.type == "cuda" else torch.float32)
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder))
        tokenizer.chat_template = chat_template(folder, tokenizer)
        model = transformers.Qwen2_5_VLForConditionalGeneration.from_pretrained(
            str(folder),
            attn_implementation=attn_implementation,
            device_map={"": str(device)} if device.type == "cuda" else None,
            **dtype_kwargs(dtype),
        ).eval()
    except QwenVLError:
        raise
    except Exception as err:  # noqa: BLE001  one line instead of a loader traceback
        first = (str(err).splitlines() or [type(err).__name__])[0]
        raise QwenVLError(
            f"{label} cannot be loaded from {folder} ({first}); check the folder or download "
            "it again.",
            cause=first,
        ) from None
    if device.type != "cuda":
        model.to(device)
    use_upstream_positions(model)
    return model, tokenizer


# ---- M-RoPE positions (transformers 4.51.3's Qwen2_5_VLForConditionalGeneration.get_rope_index)


def _vision_positions(grid: list[int], merge: int, step: Any, start: int) -> torch.Tensor:
    """[3, t*h*w] positions of one image/video: time = floor(i * seconds_per_grid *
    tokens_per_second) (`step` = seconds_per_grid, multiplied in 4.51's order), height and width
    the merged row and column, all offset by `start`."""
    t, h, w = grid[0], grid[1] // merge, grid[2] // merge
    time = torch.arange(t).view(-1, 1).expand(-1, h * w) * step[0] * step[1]
    rows = torch.arange(h).view(1, -1, 1).expand(t, -1, w).flatten()
    cols = torch.arange(w).view(1, 1, -1).expand(t, h, -1).flatten()
    return torch.stack([time.long().flatten(), rows, cols]) + start


def _one_sequence(
    ids: list[int],
    config: Any,
    images: list[list[int]],
    videos: list[tuple[list[int], Any]],
) -> torch.Tensor:
    """Positions [3, len(ids)] of one unpadded sequence; consumes `images`/`videos` in order."""
    merge = config.vision_config.spatial_merge_size
    tps = config.vision_config.tokens_per_second
    image_id, video_id = config.image_token_id, config.video_token_id
    starts = [i + 1 for i, tok in enumerate(ids[:-1]) if tok == config.vision_start_token_id]
    n_image = sum(ids[i] == image_id for i in starts)
    n_video = sum(ids[i] == video_id for i in starts)
    parts: list[torch.Tensor] = []
    pos = 0  # first token not yet placed

    def next_start() -> int:
        return int(parts[-1].max()) + 1 if parts else 0

    for _ in range(n_image + n_video):
        at_image = ids.index(image_id, pos) if n_image and image_id in ids[pos:] else len(ids) + 1
        at_video = ids.index(video_id, pos) if n_video and video_id in ids[pos:] else len(ids) + 1
        if at_image < at_video:
            grid, step, at = images.pop(0), (0, tps), at_image
            n_image -= 1
        else:
            grid, seconds = videos.pop(0)
            step, at = (seconds, tps), at_video
            n_video -= 1
        start = next_start()
        parts.append(torch.arange(at - pos).view(1, -1).expand(3, -1) + start)
        parts.append(_vision_positions(grid, merge, step, start + at - pos))
        pos = at + grid[0] * (grid[1] // merge) * (grid[2] // merge)
    if pos < len(ids):
        start = next_start()
        parts.append(torch.arange(len(ids) - pos).view(1, -1).expand(3, -1) + start)
    return torch.cat(parts, dim=1)


def rope_positions(
    config: Any,
    input_ids: torch.Tensor,
    image_grid_thw: torch.Tensor | None = None,
    video_grid_thw: torch.Tensor | None = None,
    second_per_grid_ts: torch.Tensor | None = None,
    attention_mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(positions [3, B, L], deltas [B, 1]) of Qwen2.5-VL inputs by transformers 4.51.3's rule.

    Text advances one position per token on all three axes, starting one past the largest
    position so far; a vision block's tokens get (time, row, column) positions offset by where it
    starts, time = floor(grid index * seconds per grid * tokens_per_second) for videos and 0 for
    images. Padding (attention_mask 0) gets position 1. `deltas` = largest position + 1 -
    sequence length: generation places new tokens at cache position + delta."""
    if image_grid_thw is None and video_grid_thw is None:
        return _text_positions(input_ids, attention_mask)
    mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
    mask = mask.to(input_ids.device) == 1
    images = [g.tolist() for g in image_grid_thw] if image_grid_thw is not None else []
    seconds = (
        second_per_grid_ts
        if second_per_grid_ts is not None
        else [1.0] * len(video_grid_thw if video_grid_thw is not None else [])
    )
    videos = list(
        zip([g.tolist() for g in video_grid_thw], seconds, strict=False)
        if video_grid_thw is not None
        else []
    )
    videos = [(g, s.cpu() if torch.is_tensor(s) else s) for g, s in videos]
    positions = torch.ones(3, *input_ids.shape, dtype=input_ids.dtype, device=input_ids.device)
    deltas = []
    for b in range(input_ids.shape[0]):
        ids = input_ids[b][mask[b]].tolist()
        pos = _one_sequence(ids, config, images, videos)
        positions[:, b, mask[b]] = pos.to(positions)
        deltas.append(int(pos.max()) + 1 - input_ids.shape[1])
    return positions, torch.tensor(deltas, device=input_ids.device).unsqueeze(1)


def _text_positions(
    input_ids: torch.Tensor, attention_mask: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """4.51's rule without vision inputs: 0, 1, 2, ... over unpadded tokens (padding 1)."""
    b, n = input_ids.shape
    if attention_mask is None:
        positions = torch.arange(n, device=input_ids.device).view(1, 1, -1).expand(3, b, -1)
        return positions, torch.zeros(b, 1, dtype=input_ids.dtype, device=input_ids.device)
    positions = attention_mask.long().cumsum(-1) - 1
    positions = positions.masked_fill(attention_mask == 0, 1)
    positions = positions.unsqueeze(0).expand(3, -1, -1).to(attention_mask.device)
    deltas = positions.max(0)[0].max(-1, keepdim=True)[0] + 1 - n
    return positions, deltas


def token_types(input_ids: torch.Tensor, config: Any) -> torch.Tensor:
    """`mm_token_type_ids` as transformers 5.x's processor writes them: 0 text, 1 image, 2 video
    (the placeholder tokens; vision start/end markers are text)."""
    types = torch.zeros_like(input_ids, dtype=torch.int32)
    types[input_ids == config.image_token_id] = 1
    types[input_ids == config.video_token_id] = 2
    return types


def takes_token_types(model: Any) -> bool:
    """Whether the installed model's forward reads `mm_token_type_ids` (transformers 5.x)."""
    return "mm_token_type_ids" in inspect.signature(model.forward).parameters


def use_upstream_positions(model: Any) -> Any:
    """Make `model` (a Qwen2_5_VLForConditionalGeneration) compute M-RoPE positions with
    `rope_positions` wherever transformers asks for them (forward without position_ids, and
    generate). The owner of `get_rope_index` is the inner Qwen2_5_VLModel since 4.52 and the
    outer model in 4.51; both call it with input ids first and the grids by position (4.51) or
    by keyword (5.x, along with keywords it does not need)."""
    owner = model.model if hasattr(model.model, "get_rope_index") else model
    config = model.config

    def get_rope_index(
        input_ids: torch.Tensor | None = None,
        image_grid_thw: torch.Tensor | None = None,
        video_grid_thw: torch.Tensor | None = None,
        second_per_grid_ts: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        **_: Any,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return rope_positions(
            config, input_ids, image_grid_thw, video_grid_thw, second_per_grid_ts, attention_mask
        )

    owner.get_rope_index = get_rope_index
    return model
