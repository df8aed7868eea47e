"""An action job's empty prompt is the same text in training and at generation
(`model.empty_prompt`, framework/models/text/base.py): the Predict2.5 action recipe embeds
Bridge's empty caption with its text encoder in training, and generation embeds "" with it too
(upstream's action inference embeds prompt="" online; docs/upstream/cosmos_predict2_5.md §2.4,
§6.5); the tiny action job trains on zero text (`text="none"`, as the Predict2 recipe and
upstream's Predict2 action pipeline) and generates from zeros."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import default_collate

from data_prep.small_t5 import make_small_t5
from data_prep.synthetic_bridge import synthetic_bridge_dataset
from data_prep.synthetic_lerobot import ensure_synthetic_lerobot
from experiments.actions import (
    predict2_5_bridge_action_256x320,
    predict2_bridge_action_480x640,
    tiny_lerobot_action,
)
from framework.config import instantiate
from framework.inference import video2world as v2w
from framework.models.text.base import encode_texts


def bridge_action_job(tmp_path):
    """The Predict2.5 Bridge action recipe with the tiny action net, the pixel tokenizer, a small
    T5 for Reason1 and a synthetic Bridge set with actions; its text settings untouched."""
    cfg = predict2_5_bridge_action_256x320()
    assert cfg.model.empty_prompt == "encode" and cfg.data.dataset.text == "online"
    tiny = tiny_lerobot_action().model
    cfg.model.net, cfg.model.tokenizer = tiny.net, tiny.tokenizer
    cfg.model.net.action_dim = 7  # Bridge's
    cfg.model.state_t, cfg.model.max_text_tokens = 5, 4
    cfg.model.text_encoder = str(make_small_t5(["pick up the cup"], tmp_path / "t5"))
    dataset = synthetic_bridge_dataset(
        tmp_path / "bridge",
        num_videos=2,
        source_frames=7,
        size=(32, 40),
        num_val=1,
        num_frames=5,
        video_size=(24, 24),
        actions=True,
        text=cfg.data.dataset.text,
    )
    return cfg, dataset


def tiny_action_job(tmp_path):
    cfg = tiny_lerobot_action()
    assert cfg.model.empty_prompt == "zeros" and cfg.data.dataset.text == "none"
    root = ensure_synthetic_lerobot(
        tmp_path / "lerobot", num_episodes=2, num_frames=6, size=24, num_val=1
    )
    cfg.model.text_encoder = str(root / "text_encoder")
    cfg.data.dataset.dataset_dir, cfg.data.dataset.num_episodes = str(root), 2
    cfg.data.dataset.source_frames, cfg.data.dataset.size, cfg.data.dataset.num_val = 6, 24, 1
    return cfg, instantiate(cfg.data.dataset)


@pytest.mark.parametrize("job", [bridge_action_job, tiny_action_job])
def test_empty_prompt_is_the_same_text_in_training_and_generation(job, tmp_path):
    cfg, dataset = job(tmp_path)
    cfg.model.objective.text_dropout = 0.0  # the step keeps its text (dropout zeroes it)
    torch.manual_seed(0)
    model = instantiate(cfg.model)
    seen: list[torch.Tensor] = []

    def spy(module, args, kwargs):
        seen.append(kwargs.get("crossattn_emb", args[2] if len(args) > 2 else None).clone())

    model.net.register_forward_pre_hook(spy, with_kwargs=True)
    sample = dataset[0]
    # No instruction: the empty caption embedded online, or zero embeddings from the dataset.
    assert (
        sample["caption"] == ""
        if cfg.data.dataset.text == "online"
        else "t5_text_embeddings" in sample
    )
    model.training_step(default_collate([sample]), 0)
    train_text = seen[-1]

    # Generation as the command does it: settings from the run's config, the prompts embedded
    # first (PromptEmbedder), then the clip from the sample's first frame and its actions.
    args, _ = v2w.parse_args(["--guidance", "0", "--num_steps", "1"])
    v2w.fill_sampler_defaults(args, cfg)
    s = v2w.settings_of(args, cfg)
    item = v2w.Item(
        "sample",
        "",
        str(tmp_path / "out.mp4"),
        frames=sample["video"][None],
        conditions={"actions": sample["actions"][None]},
    )
    embed = v2w.embed_prompts(cfg.model.text_encoder, [item], s, "cpu")
    seen.clear()
    v2w.generate_item(model, embed, item, s, write=False)
    assert seen and all(torch.equal(t, train_text) for t in seen)
    if cfg.model.empty_prompt == "encode":  # the encoder's "" (its EOS token), not zeros
        assert train_text.abs().sum() > 0
    else:
        assert not train_text.any()


def test_predict2_action_recipe_feeds_zeros():
    """Upstream's Predict2 action pipeline puts zeros in the T5 slot in training and inference."""
    cfg = predict2_bridge_action_480x640()
    assert cfg.model.empty_prompt == "zeros" and cfg.data.dataset.text == "none"


def test_encode_texts_zeros_only_the_empty_rows():
    def enc(texts):
        return torch.stack([torch.full((3, 2), float(len(t) + 1)) for t in texts])

    emb, lengths = encode_texts(enc, ["ab", ""], "zeros")
    assert lengths is None and emb[0].eq(3).all() and not emb[1].any()
    emb, _ = encode_texts(enc, ["ab", ""], "encode")
    assert emb[1].eq(1).all()
    with pytest.raises(ValueError, match="model.empty_prompt='none' is unknown"):
        encode_texts(enc, [""], "none")
