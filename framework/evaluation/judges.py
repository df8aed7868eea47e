"""DreamGen-Bench VLM judge scores: instruction following (IF) and physics alignment (PA-I).

As NVIDIA/GR00T-Dreams' `dreamgenbench/` scripts run them (spec robot_eval.md §1.2, §1.4):
judge `Qwen/Qwen2.5-VL-7B-Instruct` (plain transformers, the checkpoint's generation config),
one user turn, `generate(max_new_tokens=4)` after `set_seed(0)`; a reply scores 1 when it starts
with "1" once stripped, else 0; a checkpoint's score is the mean over items (its interval over
items from the runner).

- IF (`eval_sr_qwen_whole.py`, non-zero-shot prompt): 49 frames at `np.linspace(0, n-1, 49,
  dtype=int)` (all frames and then the last repeated when n < 49), each resized bilinearly to
  int(0.3 W) x int(0.3 H), passed as 49 images after the text.
- PA-I (`eval_qwen_pa.py`): the video first, then the text; frames by qwen-vl-utils' defaults
  (2 fps, an even count >= 4, the 128000*28*28*0.9 total pixel budget).

The model, its positions and the frame arithmetic are the critic's (framework/models/qwen_vl.py,
framework/inference/critic_frames.py); the prompts are verbatim. `dreamgen_pa` is PA-I alone;
VideoPhy's PA-II judge and DreamGen's mean of the two are in framework/evaluation/videophy.py
(`dreamgen_pa2`, `dreamgen_pa_mean`).
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from framework.evaluation.metrics import Metric, Videos
from framework.inference import critic_frames as CF
from framework.models import qwen_vl

JUDGE = "Qwen/Qwen2.5-VL-7B-Instruct"
IF_PROMPT = (
    "The video shows a robot arm completing a specific task. Does the video follow the "
    "instruction to finish the task: '{prompt}'? If it fails to follow the instruction (e.g. "
    "miss the object, action or do some other actions), please answer 0. Answer 0 for No or 1 "
    "for Yes. Reply only 0 or 1."
)
PA_PROMPT = (
    "The video shows a robot arm completing a specific task. Does the video show good physics "
    "dynamics and showcase a good alignment with the physical world? Please be a strict judge. "
    "If it breaks the laws of physics, please answer 0. Answer 0 for No or 1 for Yes. Reply "
    "only 0 or 1."
)
IF_FRAMES, IF_SCALE = 49, 0.3
PA_FPS, PA_TOTAL_PIXELS = 2.0, int(128000 * 28 * 28 * 0.9)  # qwen-vl-utils defaults
# Qwen2.5-VL-7B-Instruct's preprocessor_config.json (when the folder has none).
IMAGE_PIXELS = (3136, 12845056)


def parse_reply(reply: str) -> int:
    """GR00T-Dreams' rule: 1 iff the stripped reply starts with "1"."""
    return 1 if reply.strip().startswith("1") else 0


def if_frame_indices(n: int) -> list[int]:
    """49 indices spread over n frames; fewer frames: all of them, then the last repeated."""
    if n >= IF_FRAMES:
        return np.linspace(0, n - 1, IF_FRAMES, dtype=int).tolist()
    return list(range(n)) + [n - 1] * (IF_FRAMES - n)


def if_frames(video: np.ndarray) -> list[np.ndarray]:
    """uint8 [T, H, W, 3] -> the 49 frames the IF judge sees, at 0.3 scale (bilinear, as
    cv2.resize's default, rounded back to uint8)."""
    t, h, w, _ = video.shape
    size = (int(h * IF_SCALE), int(w * IF_SCALE))
    x = torch.from_numpy(video[if_frame_indices(t)]).permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    return list(x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy())


class QwenJudge:
    """Qwen2.5-VL asked one question about images or a video; replies decoded as text."""

    def __init__(self, name_or_path: str = JUDGE, device: Any = None) -> None:
        self.folder = qwen_vl.resolve(name_or_path, label="DreamGen judge")
        self.model, self.tokenizer = qwen_vl.load_qwen_vl(
            self.folder, device=device, label="DreamGen judge"
        )
        self.device = next(self.model.parameters()).device
        cfg = self.model.config
        self.layout = CF.vision_layout(self.folder, cfg.vision_config)
        pre = self.folder / "preprocessor_config.json"
        pre = json.loads(pre.read_text()) if pre.is_file() else {}
        self.pixels = (
            pre.get("min_pixels", IMAGE_PIXELS[0]),
            pre.get("max_pixels", IMAGE_PIXELS[1]),
        )
        self.ids = {"image": int(cfg.image_token_id), "video": int(cfg.video_token_id)}

    def _image(self, frame: np.ndarray) -> tuple[torch.Tensor, list[int]]:
        x = torch.from_numpy(frame).permute(2, 0, 1)[None].float()
        size = CF.smart_resize(*x.shape[-2:], self.layout.factor, *self.pixels)
        x = CF.resize_bicubic(x, size)
        return CF.patchify(x.expand(self.layout.temporal_patch_size, -1, -1, -1), self.layout)

    def inputs(self, text: str, images=(), video: tuple[np.ndarray, float] | None = None):
        """Model inputs of one user turn: [text, images...] (IF) or [video, text] (PA)."""
        content: list[dict[str, Any]] = [{"type": "text", "text": text}]
        content += [{"type": "image"} for _ in images]
        if video is not None:
            content.insert(0, {"type": "video"})
        chat = self.tokenizer.apply_chat_template(
            [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True
        )
        out: dict[str, Any] = {}
        parts = [self._image(f) for f in images]
        if parts:
            out["pixel_values"] = torch.cat([p for p, _ in parts])
            out["image_grid_thw"] = torch.tensor([g for _, g in parts])
        if video is not None:
            frames, fps = CF.prepare_frames(
                video[0], video[1], self.layout, PA_FPS, PA_TOTAL_PIXELS, self.pixels
            )
            pix, grid = CF.patchify(frames, self.layout)
            parts.append((pix, grid))
            out["pixel_values_videos"] = pix
            out["video_grid_thw"] = torch.tensor([grid])
            out["second_per_grid_ts"] = torch.tensor([self.layout.temporal_patch_size / fps])
        ids = self._expand(chat, [g for _, g in parts])
        out["input_ids"] = torch.tensor([ids])
        out["attention_mask"] = torch.ones_like(out["input_ids"])
        if qwen_vl.takes_token_types(self.model):
            out["mm_token_type_ids"] = qwen_vl.token_types(out["input_ids"], self.model.config)
        dtype = self.model.dtype
        return {k: v.to(self.device, dtype) if v.is_floating_point() and "pixel" in k
                else v.to(self.device) for k, v in out.items()}  # fmt: skip

    def _expand(self, chat: str, grids: list[list[int]]) -> list[int]:
        """Token ids with each image/video placeholder repeated for its merged patches."""
        ids = self.tokenizer(chat, add_special_tokens=False)["input_ids"]
        out, grids = [], list(grids)
        for tok in ids:
            if tok in self.ids.values():
                out += [tok] * (math.prod(grids.pop(0)) // self.layout.merge_size**2)
            else:
                out.append(tok)
        return out

    @torch.inference_mode()
    def ask(self, inputs: dict[str, Any]) -> str:
        from transformers import set_seed

        set_seed(0)
        out = self.model.generate(**inputs, max_new_tokens=4)
        return self.tokenizer.decode(
            out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True
        )


_JUDGES: dict[tuple[str, str], QwenJudge] = {}


def shared_judge(name: str, device: Any) -> QwenJudge:
    """One judge model per process for both scores."""
    key = (str(name), str(device))
    if key not in _JUDGES:
        _JUDGES[key] = QwenJudge(name, device)
    return _JUDGES[key]


class _JudgeMetric(Metric):
    key = ""

    def __init__(self, judge: str | None = None) -> None:
        self.judge_name = judge or JUDGE
        self.judge: QwenJudge | None = None

    def setup(self, device: Any) -> None:
        try:
            self.judge = shared_judge(self.judge_name, device)
        except qwen_vl.QwenVLError as err:
            raise FileNotFoundError(str(err)) from None

    def settings(self) -> dict[str, Any]:
        return {"judge": self.judge_name, "max_new_tokens": 4, "seed": 0}

    @staticmethod
    def frames(v: Videos) -> np.ndarray:
        return v.full_pred[0].permute(1, 2, 3, 0).numpy()


class InstructionFollowing(_JudgeMetric):
    name, key = "dreamgen_if", "dreamgen_if"
    better = {"dreamgen_if": "higher"}

    def item(self, v: Videos) -> dict[str, float]:
        text = IF_PROMPT.format(prompt=v.prompt)
        reply = self.judge.ask(self.judge.inputs(text, images=if_frames(self.frames(v))))
        return {self.key: float(parse_reply(reply))}


class PhysicsAlignment(_JudgeMetric):
    name, key = "dreamgen_pa", "dreamgen_pa"
    better = {"dreamgen_pa": "higher"}

    def item(self, v: Videos) -> dict[str, float]:
        if self.key not in v.cache:  # shared with dreamgen_pa_mean on the same video
            reply = self.judge.ask(self.judge.inputs(PA_PROMPT, video=(self.frames(v), v.fps)))
            v.cache[self.key] = float(parse_reply(reply))
        return {self.key: v.cache[self.key]}
