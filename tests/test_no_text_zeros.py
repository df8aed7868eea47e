"""Prompts that are all empty under `model.empty_prompt="zeros"` are the all-zero "no text"
embedding of a shape the model knows (its net's text width, `model.max_text_tokens`): no text
encoder is built or run for them (framework/models/text/base.py `encode_texts`,
`WorldModel.embed_text`, video2world's `embed_and_build`). Predict2's Bridge action recipe then
generates without T5-11B, and `tiny_lerobot_action_folder`, which has no text encoder, generates
at all. A batch with a non-empty prompt, and "encode" (Predict2.5), still run the encoder."""

from __future__ import annotations

import pytest
import torch

from data_prep.small_t5 import make_small_t5
from data_prep.synthetic_lerobot import ensure_synthetic_lerobot
from experiments.actions import (
    predict2_bridge_action_480x640,
    tiny_lerobot_action,
)
from experiments.tiny import tiny_gr1
from framework.config import L, instantiate
from framework.config.registry import get
from framework.data.video import ClipReader
from framework.inference import video2world as v2w
from framework.models import world_model
from framework.models.text import T5TextEncoder
from framework.models.text import base as text_base
from framework.models.text.base import encode_texts, fit_length
from tests.toy_family import ToyTextEncoder, toy_action_job


class Spy:
    """A text encoder that records what it is asked to encode."""

    def __init__(self, inner):
        self.inner, self.seen = inner, []
        self.dim, self.max_length = inner.dim, inner.max_length

    def encode(self, prompts):
        self.seen.append(list(prompts))
        return self.inner.encode(prompts)


class Refuses:
    """A text encoder that fails when used: the proof that nothing encodes."""

    dim, max_length = 1024, 512

    def encode(self, prompts):
        raise AssertionError(f"the text encoder was run on {list(prompts)}")


@pytest.fixture(scope="module")
def small_t5(tmp_path_factory):
    return make_small_t5(["pick up the cup"], tmp_path_factory.mktemp("t5") / "t5")


def build(job, text_encoder, empty_prompt="zeros"):
    cfg = job()
    cfg.model.text_encoder, cfg.model.empty_prompt = text_encoder, empty_prompt
    torch.manual_seed(0)
    return instantiate(cfg.model)


def old_path(t5_dir, texts, max_text_tokens) -> torch.Tensor:
    """What the encoder route gives (the route `embed_text` took before): the T5 run on "-" for
    each empty text, those rows zeroed, fit to max_text_tokens, float32."""
    emb, lengths = encode_texts(T5TextEncoder(t5_dir, device="cpu"), texts, "zeros")
    assert lengths is not None and not lengths.any()
    return fit_length(emb.float(), max_text_tokens)


# tiny_gr1: a Predict2 net (crossattn_emb_channels); tiny_lerobot_action: a Predict2.5 net
# (crossattn_proj_in_channels).
@pytest.mark.parametrize("job", [tiny_gr1, tiny_lerobot_action])
def test_empty_prompts_build_and_run_no_encoder(job, small_t5, tmp_path):
    # A T5 folder that is not there (T5-11B not downloaded): building it would fail.
    model = build(job, str(tmp_path / "absent_t5"))
    got = model.embed_text(["", ""])
    want = old_path(small_t5, ["", ""], model.max_text_tokens)
    assert got.shape == (2, model.max_text_tokens, 1024) and got.dtype == want.dtype
    assert got.device == want.device and torch.equal(got, want)
    assert isinstance(model.text_encoder, str)  # still the unbuilt spec
    # An encoder object that fails when run is not run either.
    object.__setattr__(model, "text_encoder", Refuses())
    assert torch.equal(model.embed_text([""]), want[:1])


def test_mixed_batch_encodes_its_prompts(small_t5):
    model = build(tiny_gr1, None)
    spy = Spy(T5TextEncoder(small_t5, device="cpu"))
    object.__setattr__(model, "text_encoder", spy)
    got = model.embed_text(["pick up the cup", ""])
    alone = fit_length(T5TextEncoder(small_t5, device="cpu").encode(["pick up the cup"])[0], 32)
    assert spy.seen == [["pick up the cup", "-"]]
    assert got[0].abs().sum() > 0 and torch.allclose(got[0], alone[0], atol=1e-5)
    assert not got[1].any()


def test_encode_mode_still_runs_the_encoder(small_t5):
    """Predict2.5 (`empty_prompt="encode"`): "" is the encoder's embedding of "", as upstream."""
    model = build(tiny_lerobot_action, None, "encode")
    spy = Spy(T5TextEncoder(small_t5, device="cpu"))
    object.__setattr__(model, "text_encoder", spy)
    got = model.embed_text([""])
    assert spy.seen == [[""]] and got.abs().sum() > 0
    assert v2w.prompts.PromptEmbedder(spy, "encode", (1, 1024))("").abs().sum() > 0


def test_predict2_bridge_action_zeros_are_upstreams_t5_slot():
    """The recipe's zeros have upstream's T5 slot shape, [512, 1024] (`_get_data_batch_input`,
    docs/upstream/cosmos_predict2.md §4.3), known from its 2B net without T5-11B."""
    cfg = predict2_bridge_action_480x640()
    cfg.model.tokenizer = tiny_lerobot_action().model.tokenizer  # no Wan VAE file here
    with torch.device("meta"):
        model = instantiate(cfg.model)
    assert model.no_text_shape() == (512, 1024)
    object.__setattr__(model, "text_encoder", Refuses())
    assert model.embed_text([""]).shape == (1, 512, 1024)


@pytest.mark.parametrize("text_encoder", [None, "absent"])
def test_tiny_lerobot_action_folder_generates_without_text_encoder(
    text_encoder, tmp_path, monkeypatch
):
    """`python -m framework.inference.video2world` on the folder experiment: its held-out
    episode, its actions, the empty prompt; no encoder configured (or one that is not there)
    and no precomputed embeddings, and no encoder is ever built."""

    def refuse(*args, **kwargs):
        raise AssertionError("a text encoder was built")

    monkeypatch.setattr(text_base, "build_text_encoder", refuse)
    monkeypatch.setattr(world_model, "build_text_encoder", refuse)
    monkeypatch.setattr("framework.models.text.build_text_encoder", refuse)
    data = ensure_synthetic_lerobot(
        tmp_path / "lerobot", num_episodes=2, num_frames=6, size=24, num_val=1
    )
    cfg = get("tiny_lerobot_action_folder")
    assert cfg.model.text_encoder is None and cfg.data.dataset.text == "none"
    torch.manual_seed(0)
    net = instantiate(cfg.model.net)
    ckpt = tmp_path / "net.pt"
    torch.save({f"net.{k}": v for k, v in net.state_dict().items()}, ckpt)
    out = tmp_path / "out.mp4"
    overrides = [f"data.dataset.dataset_dir={data}", "data.dataset.camera=top"]
    if text_encoder:
        overrides.append(f"model.text_encoder={tmp_path / 'absent_t5'}")
    common = ["--experiment", "tiny_lerobot_action_folder", "--checkpoint", str(ckpt)]
    argv = [*common, "--num_steps", "1", "--save_path", str(out), "--", *overrides]
    assert v2w.main(argv) == 0
    with ClipReader(out) as r:
        assert r.num_frames == 5  # the held-out episode's first frame and its 4 actions
    assert "[Prompt]\n\n" in out.with_suffix(".txt").read_text()
    monkeypatch.undo()
    if text_encoder is None:  # a real prompt needs an encoder: one line says so
        argv = [*common, "--prompt", "pick up", "--save_path", str(tmp_path / "p.mp4")]
        assert v2w.main([*argv, "--", *overrides]) == v2w.USER_ERROR


class RefusingToy(ToyTextEncoder):
    """The toy byte encoder (declares `dim`) that fails when run."""

    def encode(self, prompts):
        raise AssertionError(f"the text encoder was run on {list(prompts)}")


def test_a_net_without_a_declared_width_takes_the_encoders_declared_dim():
    """The toy net declares no text width; its encoder node's `dim` gives the zeros' width,
    equal to what the toy encoder's route gives, without running it."""
    cfg = toy_action_job()
    want = fit_length(encode_texts(instantiate(cfg.model.text_encoder), [""], "zeros")[0], 16)
    cfg.model.text_encoder = L(RefusingToy)(dim=16, max_length=16)
    model = instantiate(cfg.model)
    assert model.no_text_shape() == (16, 16)
    got = model.embed_text([""])
    assert got.shape == (1, 16, 16) and torch.equal(got, want)
