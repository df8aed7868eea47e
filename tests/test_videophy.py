"""VideoCon-Physics (DreamGen PA-II): the port's keys and loading, forward shapes, the processor,
prompt and score rule against upstream's rules (Hritikbansal/videophy 01d366c9, transcribed here
from its files, not from our code), and the metrics through `framework.eval.evaluate`."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch

from framework import eval as ev
from framework.data.heldout import HeldOutItem
from framework.evaluation import judges as J
from framework.evaluation import videophy as V
from framework.evaluation.metrics import build_metrics
from framework.models import mplug_owl as M

VISION = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
          "num_attention_heads": 4, "image_size": 224, "patch_size": 32}  # fmt: skip
ABSTRACTOR = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
              "intermediate_size": 96, "encoder_hidden_size": 32}  # fmt: skip
CORPUS = [
    "The following is a conversation between a curious human and AI assistant.",
    "The assistant gives helpful, detailed, and polite answers to the user's questions.",
    "Human: Does this video follow the physical laws?",
    "AI: Yes",
    "AI: No",
    "Yes No Yes No",
]


def tiny_tokenizer() -> bytes:
    """A LLaMA-style sentencepiece BPE model (byte fallback, identity normaliser, dummy prefix,
    <unk> 0, <s> 1, </s> 2) trained on the prompt's words."""
    import sentencepiece as spm

    out = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS * 20), model_writer=out, vocab_size=340, model_type="bpe",
        byte_fallback=True, normalization_rule_name="identity", remove_extra_whitespaces=False,
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1, hard_vocab_limit=False, minloglevel=2,
    )  # fmt: skip
    return out.getvalue()


# Fields transformers 4.28.1's to_dict writes into every sub-config (generation ones included);
# the real config.json (9.16 kB) carries them.
OLD_FIELDS = {"architectures": ["LLaMAForCausalLM"], "torch_dtype": "bfloat16", "do_sample": False,
              "transformers_version": "4.28.1", "num_beams": 1, "max_length": 20, "top_k": 50,
              "id2label": {"0": "LABEL_0", "1": "LABEL_1"}, "pad_token_id": 0, "use_cache": True,
              "tie_word_embeddings": False, "return_dict": True, "prefix": None}  # fmt: skip


def tiny_config(vocab: int) -> dict:
    """config.json in the checkpoint's layout (model_type mplug-owl, three sub-configs)."""
    text = {"model_type": "llama", "vocab_size": vocab, "hidden_size": 48,
            "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
            "rms_norm_eps": 1e-6, "max_position_embeddings": 512, **OLD_FIELDS}  # fmt: skip
    vision = {**VISION, "model_type": "mplug_owl_vision_model", "use_flash_attn": False,
              "hidden_act": "quick_gelu", "projection_dim": 768, **OLD_FIELDS}  # fmt: skip
    abstractor = {**ABSTRACTOR, **OLD_FIELDS}
    return {"model_type": "mplug-owl", "vision_config": vision, "num_query_tokens": 64,
            "visual_abstractor_config": abstractor, "text_config": text}  # fmt: skip


def randomize(model: torch.nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            is_norm = p.ndim == 1 and name.rsplit(".", 2)[-2].endswith(
                ("norm", "ln", "norm1", "norm2", "normk")
            )
            p.copy_(1 + 0.1 * noise if is_norm and name.endswith("weight") else 0.2 * noise)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A checkpoint folder as videophysics/videocon_physics ships it: config.json,
    pytorch_model.bin (with 4.28.1's rotary inv_freq buffers), tokenizer.model,
    preprocessor_config.json."""
    d = tmp_path_factory.mktemp("videocon_physics")
    sp_model = tiny_tokenizer()
    (d / "tokenizer.model").write_bytes(sp_model)
    import sentencepiece

    vocab = sentencepiece.SentencePieceProcessor(model_proto=sp_model).vocab_size()
    cfg = tiny_config(vocab)
    (d / "config.json").write_text(json.dumps(cfg))
    (d / "preprocessor_config.json").write_text(json.dumps({
        "crop_size": 224, "do_center_crop": True, "do_normalize": True, "do_resize": True,
        "image_mean": list(V.CLIP_MEAN), "image_std": list(V.CLIP_STD), "resample": 3,
        "size": 224}))  # fmt: skip
    model = M.build(M.MplugOwlConfig.from_dict(cfg))
    randomize(model)
    # bf16, as upstream's model_unload_merge.py saves it (pickled torch.BFloat16Storage)
    state = {k: v.to(torch.bfloat16) for k, v in model.state_dict().items()}
    for i in range(2):
        state[f"language_model.model.layers.{i}.self_attn.rotary_emb.inv_freq"] = torch.ones(6)
    torch.save(state, d / "pytorch_model.bin")
    return d


@pytest.fixture(scope="module")
def judge(folder):
    return V.VideoConPhysics(str(folder), device="cpu")


def upstream_keys(vision_layers: int, abstractor_layers: int, text_layers: int) -> set[str]:
    """modeling_mplug_owl.py's parameter names (module attributes), LLaMA's from transformers."""
    wb = (".weight", ".bias")
    keys = {
        "vision_model.embeddings.cls_token", "vision_model.embeddings.patch_embed.weight",
        "vision_model.embeddings.position_embedding", "query_tokens", "temporal_query_tokens",
        "abstractor.vit_eos", "language_model.lm_head.weight",
        "language_model.model.embed_tokens.weight", "language_model.model.norm.weight",
    }  # fmt: skip
    keys |= {f"vision_model.embeddings.pre_layernorm{s}" for s in wb}
    keys |= {f"vision_model.post_layernorm{s}" for s in wb}
    keys |= {f"abstractor.{m}{s}" for m in ("visual_fc", "temporal_visual_fc") for s in wb}
    vis = ["temporal.ln", "temporal.down_proj", "temporal.conv", "temporal.up_proj",
           "self_attn.query_key_value", "self_attn.dense", "input_layernorm", "mlp.fc1",
           "mlp.fc2", "post_attention_layernorm"]  # fmt: skip
    keys |= {f"vision_model.encoder.layers.{i}.{m}{s}"
             for i in range(vision_layers) for m in vis for s in wb}  # fmt: skip
    abs_ = ["attention.query", "attention.key", "attention.value", "output.out_proj",
            "output.norm2", "output.mlp.w1", "output.mlp.w2", "output.mlp.w3",
            "output.mlp.ffn_ln", "norm1", "normk"]  # fmt: skip
    keys |= {f"abstractor.encoder.layers.{i}.crossattention.{m}{s}"
             for i in range(abstractor_layers) for m in abs_ for s in wb}  # fmt: skip
    llm = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
           "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj", "input_layernorm",
           "post_attention_layernorm"]  # fmt: skip
    keys |= {f"language_model.model.layers.{i}.{m}.weight"
             for i in range(text_layers) for m in llm}  # fmt: skip
    return keys


def test_keys_and_shapes_are_upstreams(folder):
    model = M.build(M.MplugOwlConfig.from_dict(json.loads((folder / "config.json").read_text())))
    sd = model.state_dict()
    assert set(sd) == upstream_keys(2, 2, 2)
    d, da, dt = 32, 32, 48
    assert sd["vision_model.embeddings.patch_embed.weight"].shape == (d, 3, 32, 32)
    assert sd["vision_model.embeddings.position_embedding"].shape == (1, 7 * 7 + 1, d)
    assert sd["vision_model.encoder.layers.0.temporal.down_proj.weight"].shape == (16, d, 1, 1, 1)
    assert sd["vision_model.encoder.layers.0.temporal.conv.weight"].shape == (16, 1, 3, 1, 1)
    assert sd["vision_model.encoder.layers.0.self_attn.query_key_value.weight"].shape == (3 * d, d)
    # abstractor MLP width: intermediate 96 != 2816 -> int(2 * 96 / 3) = 64 -> multiple of 256
    assert sd["abstractor.encoder.layers.0.crossattention.output.mlp.w1.weight"].shape == (256, da)
    assert sd["abstractor.encoder.layers.0.crossattention.attention.key.weight"].shape == (da, d)
    assert sd["query_tokens"].shape == sd["temporal_query_tokens"].shape == (1, 64, da)
    assert sd["abstractor.visual_fc.weight"].shape == (dt, da)
    assert sd["abstractor.vit_eos"].shape == (1, 1, dt)
    # eps: torch's default where upstream builds LayerNormFp32(dim) without one
    layer = model.vision_model.encoder.layers[0]
    assert layer.temporal.ln.eps == 1e-5 and layer.input_layernorm.eps == 1e-6
    cross = model.abstractor.encoder.layers[0].crossattention
    assert cross.norm1.eps == cross.normk.eps == cross.output.norm2.eps == 1e-5


def test_loads_its_checkpoint_strictly_and_names_a_wrong_key(folder, judge):
    saved = torch.load(folder / "pytorch_model.bin", weights_only=True)
    own = judge.model.state_dict()
    assert all(own[k].dtype == torch.float32 and torch.equal(own[k], saved[k].float()) for k in own)
    assert not any(t.is_meta for t in [*judge.model.parameters(), *judge.model.buffers()])
    renamed = dict(saved)
    renamed["abstractor.vit_eos_token"] = renamed.pop("abstractor.vit_eos")
    fresh = M.build(judge.model.config)
    with pytest.raises(M.MplugOwlError) as err:
        M.load_state_dict(fresh, renamed)
    msg = str(err.value)
    assert "abstractor.vit_eos" in msg and "abstractor.vit_eos_token" in msg and "\n" not in msg
    shaped = dict(saved)
    shaped["query_tokens"] = torch.zeros(1, 32, 32)
    with pytest.raises(M.MplugOwlError, match="query_tokens has shape"):
        M.load_state_dict(fresh, shaped)


def test_forward_shapes_and_the_temporal_cls_passthrough(judge):
    model = judge.model
    px = torch.randn(2, 3, 5, 224, 224)
    feats = model.video_features(px)
    assert feats.shape == (2, 65, 48)
    ids = torch.tensor([[1, 5, *[-2] * 65, 7, 9]] * 2)
    logits = model(px, ids)
    assert logits.shape == (2, 69, model.config.text.vocab_size) and logits.isfinite().all()
    with pytest.raises(ValueError, match=r"65 <\|video\|> positions"):
        model(px, ids[:, :-3].clone().fill_(3))
    # modeling_mplug_owl.py MplugOwlVisionLocalTemporal returns cat([cls_token, x]): CLS as is
    x = torch.randn(1, 4, 50, 32)
    out = model.vision_model.encoder.layers[0].temporal(x)
    assert torch.equal(out[:, :, 0], x[:, :, 0]) and out.shape == x.shape
    # text tokens before the video do not see it (causal): same logits for another video
    other = model(torch.randn(2, 3, 5, 224, 224), ids)
    assert torch.allclose(other[:, :2], logits[:, :2], atol=1e-5)
    assert not torch.allclose(other[:, -1], logits[:, -1], atol=1e-5)


def upstream_get_index(num_frames: int, num_segments: int) -> list[int]:
    """processing_mplug_owl.py get_index, as written there."""
    seg_size = float(num_frames - 1) / num_segments
    start = int(seg_size / 2)
    return [start + int(np.round(seg_size * idx)) for idx in range(num_segments)]


def test_frame_indices_and_normalisation_follow_upstream():
    for n in (5, 9, 32, 57, 93, 121, 200):
        assert V.frame_indices(n) == upstream_get_index(n, 32)
    # GR1 93 frames: segment 92/32 = 2.875, start int(1.4375) = 1
    assert V.frame_indices(93)[:4] == [1, 4, 7, 10] and V.frame_indices(93)[-1] == 90
    rgb = (200, 100, 30)
    video = np.broadcast_to(np.array(rgb, np.uint8), (40, 48, 80, 3)).copy()
    px = V.pixels(video)
    assert px.shape == (1, 3, 32, 224, 224) and px.dtype == torch.float32
    mean, std = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
    for c in range(3):  # CLIPImageProcessor: x / 255, then (x - mean) / std
        assert torch.allclose(px[0, c], torch.tensor((rgb[c] / 255 - mean[c]) / std[c]), atol=1e-6)
    # frames are picked, not blended: frame k of the clip is picture k of the judge
    ramp = (
        np.zeros((93, 224, 224, 3), np.uint8) + np.arange(93, dtype=np.uint8)[:, None, None, None]
    )
    got = V.pixels(ramp)[0, 0, :, 0, 0] * std[0] + mean[0]
    want = torch.tensor(upstream_get_index(93, 32), dtype=torch.float32) / 255
    assert torch.allclose(got, want, atol=1e-6)


def test_prompt_is_verbatim_and_tokenised_chunk_by_chunk(judge):
    import sentencepiece

    # utils/constants.py PROMPT_PHYSICS (triple-quoted: the newlines and the final space)
    assert V.PROMPT_PHYSICS == (
        "The following is a conversation between a curious human and AI assistant. The "
        "assistant gives helpful, detailed, and polite answers to the user's questions.\nHuman: "
        "<|video|>\nHuman: Does this video follow the physical laws?\nAI: "
    )
    sp = sentencepiece.SentencePieceProcessor(model_file=str(judge.folder / "tokenizer.model"))
    # xgpt3_dataset.py: BOS, then each piece of re.split on media/'AI: '/'\nHuman: ' on its own
    chunks = [
        "The following is a conversation between a curious human and AI assistant. The "
        "assistant gives helpful, detailed, and polite answers to the user's questions.",
        "\nHuman: ", None, "\nHuman: ", "Does this video follow the physical laws?\n", "AI: ",
    ]  # fmt: skip
    want = [1]
    for c in chunks:
        want += [-2] * 65 if c is None else sp.encode(c)
    assert judge.ids == want
    assert judge.yes == sp.encode("Yes")[0] and judge.no == sp.encode("No")[0]
    # LLaMA's tokenizer has single pieces "▁Yes" and "▁No"; so has this one
    assert sp.id_to_piece(judge.yes) == "▁Yes" and sp.id_to_piece(judge.no) == "▁No"


def test_score_rule_on_canned_logits():
    logits = torch.zeros(10)
    logits[3], logits[7], logits[0] = 2.0, 0.0, 5.0  # yes=3, no=7; other tokens do not count
    want = np.exp(2.0) / (np.exp(2.0) + np.exp(0.0))
    assert V.entailment(logits, 3, 7) == pytest.approx(want, rel=1e-6)
    assert V.entailment(logits, 7, 3) == pytest.approx(1 - want, rel=1e-6)
    # get_entail: the position before the first pad token, else the last
    assert V.answer_index([1, 5, 6, 0, 0], pad_id=0) == 2
    assert V.answer_index([1, 5, 6], pad_id=0) == 2


def test_judge_scores_a_video_in_zero_one(judge):
    rng = np.random.default_rng(0)
    video = rng.integers(0, 256, (9, 48, 80, 3), dtype=np.uint8)
    s = judge.score(video)
    assert 0.0 < s < 1.0 and judge.score(video) == s
    assert judge.score(video[::-1].copy()) != s


def items(n: int = 2) -> list[HeldOutItem]:
    g = torch.Generator().manual_seed(1)
    return [HeldOutItem(f"clip_{i}", torch.randint(0, 256, (1, 3, 5, 32, 32), generator=g,
                        dtype=torch.uint8), None, "push the plate", 16.0)
            for i in range(n)]  # fmt: skip


class Still:
    """A model that holds the conditioning frame (evaluate()'s model surface)."""

    expected_pixel_frames = 5

    def __init__(self) -> None:
        from framework.models.tokenizers import PixelTokenizer

        self.tokenizer = PixelTokenizer(spatial=4)

    def _device(self):
        return torch.device("cpu")

    def generate(self, cond, emb, neg, num_conditional_frames, **kw):
        return cond[:, :, :1].expand(-1, -1, 5, -1, -1).clone()


def test_metrics_through_evaluate(folder, judge, monkeypatch):
    monkeypatch.setattr(V, "JUDGE", str(folder))
    monkeypatch.setitem(V._JUDGES, (str(folder), "cpu"), judge)
    # PA-I is the Qwen judge (tests/test_judges.py); a canned reply here
    monkeypatch.setattr(J.PhysicsAlignment, "setup", lambda self, device: None)
    asked = []

    def pa1(self, v):
        asked.append(v.name)
        v.cache.setdefault("dreamgen_pa", 1.0)
        return {"dreamgen_pa": v.cache["dreamgen_pa"]}

    monkeypatch.setattr(J.PhysicsAlignment, "item", pa1)
    names = ["dreamgen_pa2", "dreamgen_pa_mean", "dreamgen_pa_mean_thr"]
    res = ev.evaluate(Still(), items(), num_steps=1, metrics=names)
    for row, item in zip(res["items"], items(), strict=True):
        still = item.video[0, :, :1].expand(-1, 5, -1, -1).permute(1, 2, 3, 0).numpy()
        p = judge.score(still)
        assert row["dreamgen_pa2"] == pytest.approx(p, abs=1e-6)
        assert row["dreamgen_pa_mean"] == pytest.approx((1.0 + p) / 2, abs=1e-6)
        assert row["dreamgen_pa_mean_thr"] == pytest.approx((1.0 + float(p >= 0.5)) / 2)
    assert res["better"]["dreamgen_pa2"] == "higher"
    assert set(res["intervals"]) >= set(names)
    assert len(asked) == 4  # both means ask PA-I; the second finds it in the video's cache
    (metric,) = build_metrics(["dreamgen_pa_mean_thr"])
    assert metric.settings()["pa2_threshold"] == 0.5


def test_missing_weights_name_the_download(tmp_path, monkeypatch, folder):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (metric,) = build_metrics(["dreamgen_pa2"])
    with pytest.raises(FileNotFoundError) as err:
        metric.setup("cpu")
    assert "`hf download videophysics/videocon_physics`" in str(err.value)
    assert "\n" not in str(err.value)
    empty = tmp_path / "local"
    empty.mkdir()
    (empty / "config.json").write_text((folder / "config.json").read_text())
    with pytest.raises(M.MplugOwlError, match="hf download videophysics/videocon_physics"):
        M.read_weights(empty)
