"""Video critics for best-of-N: a critic turns one video into K text answers, and its scoring rule
turns the answers into one number (higher = better).

The built-in critic is Cosmos-Reason1-7B as upstream runs it (docs/upstream/best_of_n.md §4): a
Qwen2.5-VL model loaded with transformers (SDPA attention, no flash-attn build), asked the
upstream question under the upstream system prompt, sampled K times with the upstream settings;
its score is the share of "No" (no anomaly) among the answers that parse, 0 when none does.

The frames the model sees are prepared in critic_frames.py, by upstream's arithmetic
but without torchvision.

Other critics plug in by name (`register_critic`) or by import path (`--critic module:Class`); see
`Critic` for what one implements.
"""

from __future__ import annotations

import importlib
import math
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from framework.inference.critic_frames import patchify, prepare_frames, read_frames, vision_layout
from framework.models import qwen_vl

# ---- the upstream question (docs/upstream/best_of_n.md §4) -------------------------------------

# The system prompt is kept word for word: the critic was used with exactly this text, and its
# answer template is what the parsing below reads. Source: cosmos_predict2/auxiliary/
# cosmos_reason1.py in nvidia-cosmos/cosmos-predict2 (SYSTEM_PROMPT_CRITIC).
SYSTEM_PROMPT = """You are a helpful video analyzer. The goal is to identify artifacts and anomalies in the video.
Analyze the video carefully and answer the question according to the following template:

<think>
<overview>
[Brief description of the video.]
</overview>

<component name="Component 1 Name">
<analysis>
[Analysis or reasoning about this component.]
</analysis>
<anomaly>Yes | No</anomaly>
</component>

<component name="Component 2 Name">
<analysis>
[Analysis or reasoning about this component.]
</analysis>
<anomaly>Yes | No</anomaly>
</component>

<!-- Add more components as needed -->
</think>

<answer>
[Whether the video contains anomalies or artifacts. Answer "Yes" or "No".]
</answer>"""  # noqa: E501  (verbatim upstream text)
USER_PROMPT = "Does the video contain any anomalies or artifacts?"
DEFAULT_TRIALS = 5  # --num_critic_trials


@dataclass(frozen=True)
class Sampling:
    """`generate` settings of the critic (upstream's, docs/upstream/best_of_n.md §4)."""

    temperature: float = 0.6
    top_p: float = 0.95
    top_k: int = 50
    repetition_penalty: float = 1.05
    max_new_tokens: int = 4096


# ---- answers and the scoring rule --------------------------------------------------------------

ANSWER_RE = re.compile(r"<answer>\s*(yes|no)\s*</answer>", re.IGNORECASE)
COMPONENT_RE = re.compile(r"<component\s+name\s*=\s*\"([^\"]*)\"\s*>(.*?)</component>", re.S)


def _tag(text: str, name: str) -> str | None:
    m = re.search(rf"<{name}>(.*?)</{name}>", text, re.S)
    return m.group(1).strip() if m else None


def parse_answer(response: str) -> str | None:
    """ "yes", "no", or None when the response has no `<answer>Yes|No</answer>` (upstream's
    regex: case-insensitive, whitespace allowed inside the tags, the first match counts)."""
    m = ANSWER_RE.search(response)
    return m.group(1).lower() if m else None


def parse_components(response: str) -> list[dict[str, str]]:
    """The `<component name=...>` blocks of one response: name, anomaly (as written), analysis.

    Upstream parses the whole response as XML for its per-video page and shows nothing of a
    response that is not well-formed; this reads each block on its own, so one stray `<` or `&`
    does not hide the components around it. Only the report uses it; the score does not."""
    out = []
    for name, body in COMPONENT_RE.findall(response):
        out.append(
            {
                "name": name.strip(),
                "anomaly": _tag(body, "anomaly") or "",
                "analysis": _tag(body, "analysis") or "",
            }
        )
    return out


@dataclass
class Verdict:
    """One video's judgement: the raw responses, the parsed answer of each, and the score."""

    responses: list[str]
    answers: list[str | None]
    score: float
    no: int
    parsed: int
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def share_of_no(responses: list[str]) -> Verdict:
    """Upstream's rule: #"no" / #parsed answers, 0.0 when no answer parses."""
    answers = [parse_answer(r) for r in responses]
    parsed = sum(a is not None for a in answers)
    no = sum(a == "no" for a in answers)
    return Verdict(list(responses), answers, no / parsed if parsed else 0.0, no, parsed)


# ---- the interface -----------------------------------------------------------------------------


class CriticError(ValueError):
    """A critic cannot be set up (missing weights, unknown name); the message names the fix."""


class Critic:
    """What best_of_n needs from a critic.

    `responses(video, num_trials, seed)` returns `num_trials` answers (any text) for one mp4;
    `score(responses)` turns them into a `Verdict` (default: upstream's share of "No"). `check()`
    runs before any video is generated, so a missing weights folder fails in seconds, not after
    hours of generation; `close()` frees what the critic holds. A subclass sets `name`, which is
    stored with every score so a later run reuses only scores of the same critic. Constructors
    take keyword arguments `checkpoint_dir`, `device`, `sampling` (and may ignore them).
    """

    name = "critic"

    @classmethod
    def check(cls, checkpoint_dir: str | None) -> None:
        """Raise CriticError when the critic cannot run (e.g. its weights are missing)."""

    def responses(self, video: Path, num_trials: int, seed: int) -> list[str]:
        raise NotImplementedError

    def score(self, responses: list[str]) -> Verdict:
        return share_of_no(responses)

    def settings(self) -> dict[str, Any]:
        """What, besides `name`, makes two runs' scores comparable (stored in score files)."""
        return {}

    def close(self) -> None:
        pass


CRITICS: dict[str, type[Critic]] = {}


def register_critic(name: str) -> Callable[[type[Critic]], type[Critic]]:
    """Class decorator: make a critic available as `--critic NAME`."""

    def add(cls: type[Critic]) -> type[Critic]:
        CRITICS[name] = cls
        return cls

    return add


def critic_class(spec: str) -> type[Critic]:
    """A registered name, or an import path `package.module:Class` (or `package.module.Class`)."""
    if spec in CRITICS:
        return CRITICS[spec]
    module, sep, attr = spec.partition(":") if ":" in spec else spec.rpartition(".")
    if not (module and sep and attr):
        raise CriticError(
            f"critic {spec!r} is not registered ({', '.join(sorted(CRITICS))}) and is not an "
            "import path; pass a registered name or package.module:Class."
        )
    try:
        obj = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as err:
        raise CriticError(
            f"critic {spec!r} cannot be imported ({err}); check the module and class name."
        ) from None
    if not (isinstance(obj, type) and issubclass(obj, Critic)):
        raise CriticError(
            f"critic {spec!r} is not a subclass of framework.inference.critic.Critic."
        )
    return obj


# ---- Cosmos-Reason1 (Qwen2.5-VL through transformers) ------------------------------------------


def default_device() -> torch.device:
    if torch.cuda.is_available():
        from framework.trainer.dist import local_rank

        return torch.device("cuda", local_rank())
    return torch.device("cpu")


@register_critic("cosmos_reason1")
class CosmosReason1(Critic):
    """Cosmos-Reason1-7B (a Qwen2.5-VL-7B fine-tune) asked upstream's anomaly question."""

    name = "cosmos_reason1"
    hub_id = "nvidia/Cosmos-Reason1-7B"
    default_checkpoint = "checkpoints/nvidia/Cosmos-Reason1-7B"

    def __init__(
        self,
        checkpoint_dir: str | None = None,
        device: torch.device | str | None = None,
        sampling: Sampling | None = None,
    ) -> None:
        folder = self.resolve(checkpoint_dir)
        self.folder = folder
        self.device = torch.device(device) if device is not None else default_device()
        self.sampling = sampling or Sampling()
        try:
            self.model, self.tokenizer = qwen_vl.load_qwen_vl(
                folder, device=self.device, hub_id=self.hub_id, label=self.name
            )
        except qwen_vl.QwenVLError as err:
            if err.cause is None:
                raise CriticError(str(err)) from None
            raise CriticError(
                f"critic {self.name} cannot be loaded from {folder} ({err.cause}); check the "
                "folder or pass --checkpoint_dir."
            ) from None
        self.template = self.tokenizer.chat_template
        self.layout = vision_layout(folder, self.model.config.vision_config)
        self.video_token_id = int(self.model.config.video_token_id)
        self.video_token = self.tokenizer.convert_ids_to_tokens(self.video_token_id)
        # transformers 5.x computes 3-D positions only for inputs that carry token types.
        self.token_types = qwen_vl.takes_token_types(self.model)

    @classmethod
    def resolve(cls, checkpoint_dir: str | None) -> Path:
        """The weights folder: `checkpoint_dir` (default checkpoints/nvidia/Cosmos-Reason1-7B,
        upstream's place), or a hub id's snapshot in the Hugging Face cache."""
        name = checkpoint_dir or cls.default_checkpoint
        if qwen_vl.is_hub_id(name):
            try:
                return qwen_vl.resolve(name, label=cls.name)
            except qwen_vl.QwenVLError as err:
                raise CriticError(str(err)) from None
        folder = Path(name)
        if not (folder / "config.json").is_file():
            raise CriticError(
                f"{cls.name} weights not found in {folder} (no config.json); download them with "
                f"`hf download {cls.hub_id} --local-dir {folder}` or pass --checkpoint_dir."
            )
        return folder

    @classmethod
    def check(cls, checkpoint_dir: str | None) -> None:
        cls.resolve(checkpoint_dir)

    def settings(self) -> dict[str, Any]:
        return {"checkpoint_dir": str(self.folder), **asdict(self.sampling)}

    def inputs(self, video: Path) -> dict[str, torch.Tensor]:
        """Token ids, patches and grid of one video under the upstream question."""
        frames, video_fps = read_frames(video)
        frames, sample_fps = prepare_frames(frames, video_fps, self.layout)
        return self.inputs_from_frames(frames, sample_fps)

    def inputs_from_frames(self, frames: torch.Tensor, sample_fps: float) -> dict[str, Any]:
        pixels, grid = patchify(frames, self.layout)
        dialog = [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": [{"type": "video"}, {"type": "text", "text": USER_PROMPT}]},
        ]
        text = self.tokenizer.apply_chat_template(
            dialog, chat_template=self.template, tokenize=False, add_generation_prompt=True
        )
        before, found, after = text.partition(self.video_token)
        if not found:
            raise CriticError(f"the chat template of {self.folder} has no video placeholder.")
        n = math.prod(grid) // self.layout.merge_size**2

        def ids(s: str) -> list[int]:
            return self.tokenizer(s, add_special_tokens=False)["input_ids"]

        input_ids = torch.tensor([ids(before) + [self.video_token_id] * n + ids(after)])
        dev = self.device
        extra = {}
        if self.token_types:
            extra["mm_token_type_ids"] = qwen_vl.token_types(input_ids, self.model.config).to(dev)
        return {
            **extra,
            "input_ids": input_ids.to(dev),
            "attention_mask": torch.ones_like(input_ids).to(dev),
            "pixel_values_videos": pixels.to(dev, self.model.dtype),
            "video_grid_thw": torch.tensor([grid]).to(dev),
            # The temporal position step: one grid step spans temporal_patch_size frames.
            "second_per_grid_ts": torch.tensor([self.layout.temporal_patch_size / sample_fps]).to(
                dev
            ),
        }

    @torch.inference_mode()
    def generate(self, inputs: dict[str, Any], num_trials: int, seed: int) -> list[str]:
        from transformers import set_seed

        set_seed(seed)  # upstream seeds once per video with the run's --seed
        s = self.sampling
        out = self.model.generate(
            **inputs,
            do_sample=True,
            temperature=s.temperature,
            top_p=s.top_p,
            top_k=s.top_k,
            repetition_penalty=s.repetition_penalty,
            num_return_sequences=num_trials,
            max_new_tokens=s.max_new_tokens,
        )
        new = out[:, inputs["input_ids"].shape[1] :]
        return self.tokenizer.batch_decode(new, skip_special_tokens=True)

    def responses(self, video: Path, num_trials: int, seed: int) -> list[str]:
        return self.generate(self.inputs(video), num_trials, seed)

    def close(self) -> None:
        del self.model
        import gc

        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
