"""DreamGen-Bench physics alignment II (PA-II): VideoPhy's VideoCon-Physics judge, and DreamGen's
physics score, the mean of PA-I and PA-II (spec robot_eval.md §1.5).

As Hritikbansal/videophy (commit 01d366c9) runs it: `utils/prepare_data.py` pairs every video
with the fixed prompt `PROMPT_PHYSICS` (utils/constants.py); `videocon/training/pipeline_video/
entailment_inference.py` loads `videophysics/videocon_physics` (mPLUG-Owl-Video 7B, LoRA merged)
in bf16 and, per video:

- frames: `processing_mplug_owl.py` `load_video(path, 32)`: decord decodes every frame resized to
  224x224 (aspect not kept), then `get_index(n, 32)` picks 32 of them; the checkpoint's
  CLIPImageProcessor (224 shortest edge and 224 centre crop: no-ops on 224x224 frames) rescales
  by 1/255 and normalises with the CLIP mean/std;
- tokens: `data_utils/xgpt3_dataset.py` `_extract_text_token_from_conversation`: BOS, then the
  prompt split on `<|video|>`, "AI: " and "\\nHuman: " with each text chunk tokenised on its own
  (LlamaTokenizer, sentencepiece, no special tokens), `<|video|>` as 65 positions of id -2;
- score: `get_entail`: softmax over the vocabulary at the last prompt token (the position before
  the first pad), P("Yes") / (P("Yes") + P("No")), "Yes"/"No" the first ids of their encodings:
  a continuous score in [0, 1] per video, higher = follows physics.

Here the frames come from the generated tensor (no decord): they are resized to 224x224 by
bilinear interpolation with antialiasing, not FFmpeg's swscale, so pixel values differ from
upstream's by resampling rounding (docs/eval.md). The tokenizer is the checkpoint's
tokenizer.model read with `sentencepiece`, chunk by chunk as transformers 4.28.1's slow
LlamaTokenizer does.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from framework.evaluation import judges
from framework.evaluation.metrics import Metric, Videos
from framework.models import mplug_owl, qwen_vl

JUDGE = "videophysics/videocon_physics"
# utils/constants.py PROMPT_PHYSICS (a triple-quoted string: real newlines, trailing space).
PROMPT_PHYSICS = (
    "The following is a conversation between a curious human and AI assistant. The assistant "
    "gives helpful, detailed, and polite answers to the user's questions.\n"
    "Human: <|video|>\n"
    "Human: Does this video follow the physical laws?\n"
    "AI: "
)
NUM_FRAMES = 32  # xgpt3_dataset.py: processor(videos=[path], num_frames=32)
FRAME_SIZE = 224  # load_video: VideoReader(path, height=224, width=224)
VIDEO_LEN = 65  # xgpt3_dataset.py media_lengths: '<|video|>': 1 + 64
MAX_LENGTH = 256  # entailment_inference.py: MultiModalDataset(..., max_length=256)
MEDIA = {"<image>": -1, "<|video|>": mplug_owl.VIDEO_TOKEN}
# transformers' CLIPImageProcessor defaults (OPENAI_CLIP_MEAN/STD), when the folder has none.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def frame_indices(n: int, num_segments: int = NUM_FRAMES) -> list[int]:
    """`get_index`: the middle of the first of `num_segments` equal segments of [0, n-1], then
    steps of one segment (np.round, halves to even)."""
    seg = float(n - 1) / num_segments
    return (int(seg / 2) + np.round(seg * np.arange(num_segments)).astype(int)).tolist()


def preprocessor(folder: Path) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) of the checkpoint's preprocessor_config.json (CLIP's when absent). A resize or
    crop other than 224 is refused: upstream's frames are already 224x224, so only then are
    the processor's resize and crop no-ops, which is all this port implements."""
    path = folder / "preprocessor_config.json"
    pre = json.loads(path.read_text()) if path.is_file() else {}
    for key in ("size", "crop_size"):
        value = pre.get(key, FRAME_SIZE)
        sides = set(value.values()) if isinstance(value, dict) else {value}
        if sides != {FRAME_SIZE}:
            raise mplug_owl.MplugOwlError(
                f"{path} asks for {key}={value}; only {FRAME_SIZE} (VideoCon-Physics' own) is "
                "implemented; use the checkpoint's preprocessor_config.json."
            )
    if pre.get("do_rescale", True) is False or pre.get("do_normalize", True) is False:
        raise mplug_owl.MplugOwlError(
            f"{path} turns rescaling or normalisation off; not supported."
        )
    return tuple(pre.get("image_mean", CLIP_MEAN)), tuple(pre.get("image_std", CLIP_STD))


def pixels(video: np.ndarray, mean=CLIP_MEAN, std=CLIP_STD) -> torch.Tensor:
    """uint8 [T, H, W, 3] -> float32 [1, 3, 32, 224, 224], as the judge sees the video."""
    x = torch.from_numpy(np.ascontiguousarray(video[frame_indices(len(video))]))
    x = x.permute(0, 3, 1, 2).float()
    if tuple(x.shape[-2:]) != (FRAME_SIZE, FRAME_SIZE):
        x = F.interpolate(x, (FRAME_SIZE, FRAME_SIZE), mode="bilinear", antialias=True)
        x = x.round().clamp(0, 255)  # decord hands out uint8 frames
    x = (x / 255.0 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    return x.permute(1, 0, 2, 3)[None]


def prompt_ids(text: str, encode: Callable[[str], list[int]], bos_id: int) -> list[int]:
    """Input ids of a judge prompt (no answer, no padding): upstream's chunking, `<|video|>` as
    65 ids of -2. Text after "AI: " (a training answer) and images are refused."""
    pattern = "|".join(map(re.escape, [*MEDIA, "AI: ", "\nHuman: "]))
    chunks = [c for c in re.split(f"({pattern})", text) if c]
    ids = [bos_id] if bos_id > 0 else []
    for i, chunk in enumerate(chunks):
        if i > 0 and chunk == "<|video|>":
            ids += [MEDIA[chunk]] * VIDEO_LEN
        elif i > 0 and (chunk == "<image>" or chunks[i - 1] == "AI: "):
            raise ValueError(f"judge prompts hold one video and end with 'AI: ' (got {chunk!r}).")
        else:
            ids += encode(chunk)
    if len(ids) > MAX_LENGTH + 1:
        raise ValueError(f"judge prompt is {len(ids)} tokens, over upstream's {MAX_LENGTH + 1}.")
    return ids


def answer_index(ids: list[int], pad_id: int | None) -> int:
    """`get_entail`'s position: the token before the first pad, else the last token."""
    for i, tok in enumerate(ids):
        if tok == pad_id:
            return i - 1
    return len(ids) - 1


def entailment(logits: torch.Tensor, yes_id: int, no_id: int) -> float:
    """P(yes) / (P(yes) + P(no)) of the softmax over the vocabulary of one position's logits."""
    p = logits.float().softmax(-1)
    return float(p[yes_id] / (p[yes_id] + p[no_id]))


def sentencepiece_encoder(folder: Path) -> Any:
    """The checkpoint's tokenizer.model, read with sentencepiece (one line when missing)."""
    path = folder / "tokenizer.model"
    if not path.is_file():
        raise mplug_owl.MplugOwlError(
            f"{path} is missing; download it with `hf download {JUDGE} tokenizer.model`."
        )
    try:
        import sentencepiece
    except ImportError:
        raise mplug_owl.MplugOwlError(
            "the VideoCon-Physics judge reads its tokenizer with sentencepiece; install it with "
            "`pip install sentencepiece`."
        ) from None
    return sentencepiece.SentencePieceProcessor(model_file=str(path))


class VideoConPhysics:
    """The VideoCon-Physics judge: `score(video)` -> P(Yes)/(P(Yes)+P(No)) for PROMPT_PHYSICS."""

    def __init__(self, name_or_path: str = JUDGE, device: Any = None) -> None:
        self.folder = qwen_vl.resolve(name_or_path, hub_id=JUDGE, label="VideoCon-Physics judge")
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        # upstream: bf16 on the GPU; float32 on the CPU, where bf16 matmuls are slow
        self.dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
        sp = sentencepiece_encoder(self.folder)
        self.mean, self.std = preprocessor(self.folder)
        self.model = mplug_owl.load_mplug_owl(self.folder, self.dtype, self.device)
        if self.model.video_tokens != VIDEO_LEN:
            raise mplug_owl.MplugOwlError(
                f"{self.folder}: {self.model.video_tokens} video tokens, upstream's prompt holds "
                f"{VIDEO_LEN}; the config.json is not VideoCon-Physics'."
            )
        self.ids = prompt_ids(PROMPT_PHYSICS, sp.encode, sp.bos_id())
        self.yes, self.no = sp.encode("Yes")[0], sp.encode("No")[0]

    @torch.inference_mode()
    def score(self, video: np.ndarray) -> float:
        """uint8 [T, H, W, 3] -> the physics score in [0, 1]."""
        px = pixels(video, self.mean, self.std).to(self.device, self.dtype)
        ids = torch.tensor([self.ids], device=self.device)
        logits = self.model(px, ids)[0]
        return entailment(logits[answer_index(self.ids, None)], self.yes, self.no)


_JUDGES: dict[tuple[str, str], VideoConPhysics] = {}


def shared_judge(name: str, device: Any) -> VideoConPhysics:
    key = (str(name), str(device))
    if key not in _JUDGES:
        _JUDGES[key] = VideoConPhysics(name, device)
    return _JUDGES[key]


class PhysicsAlignmentII(Metric):
    """`dreamgen_pa2`: VideoCon-Physics' probability that the video follows physics."""

    name = key = "dreamgen_pa2"
    better = {"dreamgen_pa2": "higher"}

    def __init__(self, judge: str | None = None) -> None:
        self.judge_name = judge or JUDGE
        self.judge: VideoConPhysics | None = None

    def setup(self, device: Any) -> None:
        try:
            self.judge = shared_judge(self.judge_name, device)
        except (qwen_vl.QwenVLError, mplug_owl.MplugOwlError) as err:
            raise FileNotFoundError(str(err)) from None

    def settings(self) -> dict[str, Any]:
        return {"judge": self.judge_name, "frames": NUM_FRAMES, "size": FRAME_SIZE,
                "score": "P(Yes)/(P(Yes)+P(No))"}  # fmt: skip

    def item(self, v: Videos) -> dict[str, float]:
        if self.key not in v.cache:  # shared with dreamgen_pa_mean on the same video
            v.cache[self.key] = self.judge.score(judges._JudgeMetric.frames(v))
        return {self.key: v.cache[self.key]}


class DreamGenPhysics(Metric):
    """`dreamgen_pa_mean`: DreamGen's physics score, mean(PA-I, PA-II) per video, PA-II as the
    judge's probability. GR00T-Dreams' README only says "average the score of PA score I & II";
    whether PA-II is first thresholded (VideoPhy reports rates of PC=1) is not stated, so
    `dreamgen_pa_mean_thr` gives the other reading: PA-II >= `pa2_threshold` counts 1."""

    name = key = "dreamgen_pa_mean"
    better = {"dreamgen_pa_mean": "higher"}
    pa2_threshold: float | None = None

    def __init__(self, judge: str | None = None, pa2_judge: str | None = None) -> None:
        self.pa1 = judges.PhysicsAlignment(judge)
        self.pa2 = PhysicsAlignmentII(pa2_judge)

    def setup(self, device: Any) -> None:
        self.pa1.setup(device)
        self.pa2.setup(device)

    def settings(self) -> dict[str, Any]:
        return {"pa1": self.pa1.settings(), "pa2": self.pa2.settings(),
                "pa2_threshold": self.pa2_threshold}  # fmt: skip

    def item(self, v: Videos) -> dict[str, float]:
        pa1 = self.pa1.item(v)[self.pa1.key]
        pa2 = self.pa2.item(v)[self.pa2.key]
        if self.pa2_threshold is not None:
            pa2 = float(pa2 >= self.pa2_threshold)
        return {self.key: (pa1 + pa2) / 2}


class DreamGenPhysicsThresholded(DreamGenPhysics):
    name = key = "dreamgen_pa_mean_thr"
    better = {"dreamgen_pa_mean_thr": "higher"}
    pa2_threshold = 0.5
