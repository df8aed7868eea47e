"""Text encoders as components (framework/models/text): Reason1's features follow the documented
rule (docs/upstream/cosmos_predict2_5.md §2), computed here straight from transformers' model
outputs; T5 builds its weights on first use."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.critic_fixtures import make_tiny_reason1

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def reason1_dir(tmp_path_factory) -> Path:
    return make_tiny_reason1(tmp_path_factory.mktemp("reason1") / "Cosmos-Reason1-tiny")


def reference_features(folder: Path, prompt: str, length: int) -> torch.Tensor:
    """§2.2-2.3 written out: system + user chat, right-pad with the pad id to `length`, no
    attention mask, hidden states after the embeddings, each (h - mean) / (std + 1e-8)."""
    from transformers import AutoTokenizer, Qwen2_5_VLForConditionalGeneration

    from tests.critic_fixtures import CHAT_TEMPLATE

    tok = AutoTokenizer.from_pretrained(str(folder))
    text = CHAT_TEMPLATE  # the fixture's template (Qwen-style)
    tok.chat_template = text
    system = "You are a helpful assistant who will provide prompts to an image generator."
    chat = [{"role": "system", "content": system}, {"role": "user", "content": prompt}]
    rendered = tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=False)
    ids = tok(rendered, add_special_tokens=False)["input_ids"][:length]
    ids = ids + [tok.pad_token_id] * (length - len(ids))
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(str(folder)).eval()
    with torch.no_grad():
        states = model(input_ids=torch.tensor([ids]), output_hidden_states=True).hidden_states
    feats = []
    for h in states[1:]:
        h = h.float()
        feats.append((h - h.mean(-1, keepdim=True)) / (h.std(-1, keepdim=True) + 1e-8))
    return torch.cat(feats, dim=-1)


def test_reason1_features_follow_the_documented_rule(reason1_dir):
    from framework.models.text.reason1 import Reason1TextEncoder

    enc = Reason1TextEncoder(reason1_dir, max_length=160, device="cpu", dtype="float32")
    assert enc._model is None  # nothing loaded until the first encode
    cfg = enc.num_layers, enc.dim
    assert cfg == (4, 4 * 32)  # layers x hidden of the tiny config: FULL_CONCAT
    emb, lengths = enc.encode(["pick up the red cup", "wave"])
    assert emb.shape == (2, 160, 128)
    for i, prompt in enumerate(["pick up the red cup", "wave"]):
        want = reference_features(reason1_dir, prompt, 160)[0]
        torch.testing.assert_close(emb[i], want, rtol=1e-4, atol=1e-4)
    # No attention mask: the pad positions carry states too (upstream's behaviour, §2.2).
    assert lengths[1] < 160 and emb[1, lengths[1] :].abs().sum() > 0
    # A long caption is cut to max_length tokens, not refused.
    long_emb, long_len = enc.encode(["grasp " * 200])
    assert long_emb.shape == (1, 160, 128) and int(long_len[0]) == 160


def test_reason1_missing_weights_name_the_download(tmp_path):
    from framework.models.qwen_vl import QwenVLError
    from framework.models.text.reason1 import Reason1TextEncoder

    enc = Reason1TextEncoder(tmp_path / "nothing")  # a config builds it without reading files
    with pytest.raises(QwenVLError, match="hf download nvidia/Cosmos-Reason1-7B"):
        enc.encode(["pick the cup"])


def test_t5_encoder_checks_the_folder_at_once_and_loads_on_first_use(tmp_path):
    from data_prep.small_t5 import make_small_t5
    from framework.models.text import T5TextEncoder, build_text_encoder

    with pytest.raises(FileNotFoundError, match="download it with"):
        T5TextEncoder(tmp_path / "missing")
    folder = make_small_t5(["a robot arm", "pick the cup"], tmp_path / "t5", seed=0)
    enc = build_text_encoder(str(folder), device="cpu")
    assert isinstance(enc, T5TextEncoder) and enc._model is None and enc.dim == 1024
    emb, lengths = enc.encode(["a robot arm"])
    assert emb.shape == (1, 512, 1024) and enc._model is not None
    assert emb[0, int(lengths[0]) :].abs().sum() == 0  # zeroed past the length (§6.3)
