"""The Predict2.5 experiments: names (the bare upstream name stays Predict2's), recipe values of
docs/upstream/cosmos_predict2_5.md §5-§6, the released parameter count on the meta device, and one
training step plus a generation of the tiny member."""

from __future__ import annotations

import pytest
import torch

from framework.config import ConfigError, get, instantiate, load_all
from framework.config.registry import resolve_name

load_all()


def test_names():
    assert resolve_name("predict2p5_video2world_training_2b_groot_gr1_480") == (
        "predict2_5_groot_gr1_480"
    )
    # Upstream uses this name for both generations; here it keeps meaning Predict2's recipe.
    assert resolve_name("predict2_video2world_training_2b_groot_gr1_480") == "groot_gr1_480"
    assert get("groot_gr1_480").model.net._target_.endswith("cosmos2.net.MiniTrainDiT")


def test_bare_upstream_name_says_which_experiment_it_runs(capsys):
    """The name upstream gives both GR00T recipes prints which one it picks, at launch and in
    generation; the unambiguous names print nothing."""
    from framework.config.registry import alias_note
    from framework.inference import loading
    from launch import train

    bare = "predict2_video2world_training_2b_groot_gr1_480"
    note = alias_note(bare)
    assert "runs experiment groot_gr1_480" in note and "predict2_5_groot_gr1_480" in note
    assert alias_note("predict2p5_video2world_training_2b_groot_gr1_480") == ""
    assert alias_note("groot_gr1_480") == ""
    # A bad override stops the launch right after resolving the name: the note comes first.
    assert train.main([bare, "train.no_such_key=1"]) == train.USER_ERROR
    err = capsys.readouterr().err
    assert err.index(note) < err.index("error:")
    assert train.main(["--", f"experiment={bare}", "train.no_such_key=1"]) == train.USER_ERROR
    assert note in capsys.readouterr().err  # the seeds' spelling too
    with pytest.raises(ConfigError):
        loading.resolve(bare, ["train.no_such_key=1"], None)
    assert note in capsys.readouterr().err


def test_groot_recipe_values():
    cfg = get("predict2_5_groot_gr1_480")
    assert cfg.job.project == "cosmos_predict_v2p5" and cfg.job.name == "2b_groot_gr1_480"
    assert cfg.model.net._target_.endswith("cosmos2_5.net.Predict25DiT")
    assert cfg.model.objective._target_.endswith("FlowMatchingObjective")
    assert list(cfg.model.objective.conditional_frames_probs) == [0.5, 0.25, 0.25]
    assert cfg.model.objective.shift == 5.0 and cfg.model.objective.text_dropout == 0.2
    assert cfg.model.sampler._target_.endswith("UniPCSampler") and cfg.model.sampler.num_steps == 35
    assert cfg.optim.lr == pytest.approx(2**-14.5) and cfg.optim.weight_decay == 0.001
    assert list(cfg.optim.betas) == [0.9, 0.999]
    assert cfg.sched.warm_up_steps == [1000] and cfg.sched.f_max == [0.5]
    assert cfg.sched.f_min == [0.2] and cfg.sched.cycle_lengths == [100_000]
    assert cfg.train.max_steps == 1000 and cfg.train.grad_clip == 0.1 and cfg.train.ema.enabled
    assert cfg.checkpoint.load_path.endswith(
        "Cosmos-Predict2.5-2B/base/pre-trained/d20b7120-df3e-4911-919d-db6e08bad31c_ema_bf16.pt"
    )
    lora = get("predict2_5_groot_gr1_480_lora")
    assert lora.model.lora.rank == 32 and lora.model.lora.alpha == 32
    assert lora.sched.warm_up_steps == [2000]


def test_groot_recipes_encode_the_empty_caption():
    """Upstream 2.5 embeds "" with Reason1 like any caption, in training and generation
    (docs/training.md, "Empty captions"); the tiny member trains on the synthetic captions."""
    for name in (
        "predict2_5_groot_gr1_480",
        "predict2_5_groot_gr1_480_precomputed",
        "predict2_5_groot_gr1_480_lora",
        "predict2_5_groot_gr1_480_distill",
    ):
        assert get(name).model.empty_prompt == "encode", name
    assert get("tiny_predict2_5_gr1").model.empty_prompt == "zeros"


def test_check_needs_reason1_for_training_only_with_online_captions(tmp_path, monkeypatch, capsys):
    """--check: the online GR1 recipe runs Reason1 every step; the precomputed one reads its
    features from disk and needs Reason1 only to generate (encode or not)."""
    from launch import train

    monkeypatch.setenv("CHECKPOINTS", str(tmp_path / "ckpts"))
    monkeypatch.setenv("DATASETS", str(tmp_path / "data"))
    for name, online in (
        ("predict2_5_groot_gr1_480", True),
        ("predict2_5_groot_gr1_480_precomputed", False),
    ):
        assert train.main([name, "--check"]) == train.USER_ERROR
        err = capsys.readouterr().err.splitlines()
        text = next(x for x in err if x.strip().startswith("model.text_encoder"))
        assert ("only generation needs it" in text) != online, (name, text)


def test_released_parameter_count_on_meta():
    cfg = get("predict2_5_groot_gr1_480")
    with torch.device("meta"):
        net = instantiate(cfg.model.net)
    assert sum(p.numel() for p in net.parameters()) == 2_059_174_912


def test_tiny_member_trains_and_generates():
    """One flow-matching step moves the weights; generation runs UniPC over the whole batch."""
    torch.manual_seed(0)
    cfg = get("tiny_predict2_5_gr1")
    cfg.model.text_encoder = None
    model = instantiate(cfg.model)
    b, t, size = 2, 5, 24
    video = torch.randint(0, 255, (b, 3, t, size, size), dtype=torch.uint8)
    batch = {"video": video, "t5_text_embeddings": torch.randn(b, 14, 1024)}
    loss, metrics = model.training_step(batch, 0)
    assert torch.isfinite(loss) and "flow_loss" in metrics
    loss.backward()
    assert model.net.crossattn_proj[0].weight.grad.abs().sum() > 0
    out = model.generate(video, torch.randn(b, 14, 1024), guidance=0.0, num_steps=3, seed=1)
    assert out.shape == video.shape and out.dtype == torch.uint8
    # A clip continues from its last frame, which comes back as given (x0 of given frames is the
    # clean latent; the pixel tokenizer is lossless up to uint8 rounding).
    assert (out[:, :, 0].int() - video[:, :, -1].int()).abs().max() <= 1
