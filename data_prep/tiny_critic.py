"""A tiny random Cosmos-Reason1 stand-in, saved as a checkpoint folder: try best-of-N offline.

    python -m data_prep.tiny_critic checkpoints/tiny-reason1
    python -m framework.inference.best_of_n --num_generations 2 \
        --checkpoint_dir checkpoints/tiny-reason1 --save_path output/best_of_n_tiny

The folder is laid out like nvidia/Cosmos-Reason1-7B's and loads through the same code, so the
whole pipeline (generation, the critic's prompt, frames, answers, scores, summary.json and
report.html) runs without the 7B download; its random weights make the scores meaningless (a
smoke test of the pipeline, not a judge). The tests build their critic with it too.

Sizes from transformers' own Qwen2.5-VL model tests (tests/models/qwen2_5_vl/
test_modeling_qwen2_5_vl.py: text hidden 32, 4 layers, 4 heads, 2 KV heads, intermediate 37,
mrope_section [2, 1, 1]; vision depth 2, hidden 32, 4 heads, patch 14, temporal patch 2), except
spatial_merge_size 2 (theirs is 1) so the 28-pixel factor and the 2x2 token merge of the real
model are exercised. The tokenizer is a byte-level BPE trained here on the critic's prompt, with
the special tokens the chat template and the vision placeholders need; the chat template is a
short Qwen-style one written here. No files come from outside.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from data_prep.common import cli, parser

SPECIAL = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
# Renders the roles and turns a video item into the vision placeholder, as Qwen2.5-VL's does.
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for c in m['content'] %}"
    "{% if c['type'] == 'video' %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def tiny_tokenizer(texts: list[str], vocab_size: int = 300):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=SPECIAL[1:],
    )


def tiny_config(vocab_size: int, ids: dict[str, int], initializer_range: float = 0.02):
    from transformers import Qwen2_5_VLConfig

    text = dict(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        max_window_layers=3,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 1, 1]},
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
        initializer_range=initializer_range,
    )
    vision = dict(
        depth=2,
        hidden_size=32,
        intermediate_size=32,
        num_heads=4,
        out_hidden_size=32,
        patch_size=14,
        spatial_merge_size=2,
        temporal_patch_size=2,
        initializer_range=initializer_range,
    )
    return Qwen2_5_VLConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True,
        initializer_range=initializer_range,
    )


def make_tiny_reason1(folder: str | Path, seed: int = 0, initializer_range: float = 0.02) -> Path:
    """A checkpoint folder laid out like nvidia/Cosmos-Reason1-7B's (config, weights, tokenizer,
    chat_template.json, preprocessor_config.json) holding a tiny random Qwen2.5-VL.
    `initializer_range` above the default 0.02 gives logits that react to positions by more
    than rounding (the position tests use 0.3)."""
    from transformers import Qwen2_5_VLForConditionalGeneration

    from framework.inference.critic import SYSTEM_PROMPT, USER_PROMPT
    from framework.inference.critic_frames import CLIP_MEAN, CLIP_STD

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    words = "<answer>Yes</answer> <answer>No</answer> <anomaly>No</anomaly> <component name="
    tokenizer = tiny_tokenizer([SYSTEM_PROMPT, USER_PROMPT, words])
    ids = {s: tokenizer.convert_tokens_to_ids(s) for s in SPECIAL}
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(
        tiny_config(len(tokenizer), ids, initializer_range)
    ).eval()
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    (folder / "chat_template.json").write_text(json.dumps({"chat_template": CHAT_TEMPLATE}))
    pre = {"image_mean": list(CLIP_MEAN), "image_std": list(CLIP_STD), "patch_size": 14}
    (folder / "preprocessor_config.json").write_text(json.dumps(pre))
    return folder


@cli
def main(argv: list[str] | None = None) -> None:
    p = parser("tiny_critic", __doc__)
    p.add_argument("folder", help="where to write it, e.g. checkpoints/tiny-reason1")
    p.add_argument("--seed", type=int, default=0, help="weight initialisation seed (default 0)")
    a = p.parse_args(argv)
    folder = make_tiny_reason1(a.folder, seed=a.seed)
    print(
        f"wrote a tiny random Reason1 critic to {folder}; use it with "
        f"`python -m framework.inference.best_of_n ... --checkpoint_dir {folder}` "
        "(its scores are random: it tests the pipeline, it does not judge)"
    )


if __name__ == "__main__":
    sys.exit(main())
