"""Long action rollouts (framework/inference/rollout.py) on the tiny action model with random
weights: chunk k starts from the last frame chunk k-1 generated, takes its own actions and seed
`seed + start index` (upstream's action inference, cosmos_predict2_5.md §6.5), and the chunks are
stitched without the frame they share; the whole thing through `video2world --actions`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from data_prep.synthetic_lerobot import ensure_synthetic_lerobot
from experiments.actions import tiny_lerobot_action
from framework.config import ConfigError, instantiate
from framework.data.video import ClipReader
from framework.inference import rollout
from framework.inference import video2world as v2w

CHUNK = 4  # tiny_lerobot_action: 5 pixel frames (pixel tokenizer), 4 actions of 3 dims


@pytest.fixture(scope="module")
def model():
    cfg = tiny_lerobot_action()
    cfg.model.text_encoder = None  # the tests pass embeddings
    torch.manual_seed(0)
    m = instantiate(cfg.model)
    m.net.init_weights()
    return m.eval()


def spy(model, monkeypatch) -> list[dict]:
    """Record each `model.generate` call (its given frames, seed, actions and output)."""
    calls: list[dict] = []
    real = model.generate

    def generate(video, *args, **kw):
        out = real(video, *args, **kw)
        calls.append(
            dict(video=video.clone(), seed=kw["seed"], actions=kw["conditions"]["actions"], out=out)
        )
        return out

    monkeypatch.setattr(model, "generate", generate)
    return calls


def run(model, actions, seed=3, log=print, **kw):
    first = torch.randint(0, 256, (1, 3, 1, 24, 24), dtype=torch.uint8)
    text = torch.zeros(1, 1, 1024)
    return rollout.generate_rollout(
        model,
        first,
        text,
        None,
        {"actions": actions},
        seed=seed,
        guidance=0.0,
        num_steps=2,
        log=log,
        **kw,
    ), first


def test_each_chunk_starts_from_the_last_frame_of_the_one_before(model, monkeypatch):
    calls = spy(model, monkeypatch)
    actions = torch.randn(1, 3 * CHUNK + 2, 3)
    said: list[str] = []
    video, first = run(model, actions, log=said.append)
    assert len(calls) == 3
    assert video.shape == (1, 3, 1 + 3 * CHUNK, 24, 24) and video.dtype == torch.uint8
    assert torch.equal(calls[0]["video"], first)
    for k in (1, 2):
        # The frame chunk k is given is exactly the last frame chunk k-1 generated.
        assert torch.equal(calls[k]["video"], calls[k - 1]["out"][:, :, -1:])
    # Per-chunk actions and seeds: chunk k takes actions [4k, 4k + 4) and seed 3 + 4k.
    for k, call in enumerate(calls):
        assert torch.equal(call["actions"], actions[:, k * CHUNK : (k + 1) * CHUNK])
    assert [c["seed"] for c in calls] == [3, 3 + CHUNK, 3 + 2 * CHUNK]
    # Stitched: chunk 0 whole, then each later chunk without its first (the given) frame.
    want = torch.cat([calls[0]["out"]] + [c["out"][:, :, 1:] for c in calls[1:]], dim=2)
    assert torch.equal(video, want)
    # The 2 actions that fill no chunk are left out, said in one line.
    assert len(said) == 1 and "last 2 of 14 actions do not fill a chunk of 4" in said[0]


def test_chunk_seed_is_the_start_index_as_upstream(model, monkeypatch):
    """--seed 0 reproduces upstream's seeds 0, c, 2c; another seed shifts them all, so the
    videos of best-of-N's candidates differ."""
    calls = spy(model, monkeypatch)
    a, _ = run(model, torch.randn(1, 2 * CHUNK, 3), seed=0)
    assert [c["seed"] for c in calls] == [0, CHUNK]
    torch.manual_seed(0)
    actions = torch.randn(1, 2 * CHUNK, 3)
    first = torch.randint(0, 256, (1, 3, 1, 24, 24), dtype=torch.uint8)
    common = dict(guidance=0.0, num_steps=2)
    one = rollout.generate_rollout(
        model, first, torch.zeros(1, 1, 1024), None, {"actions": actions}, seed=0, **common
    )
    again = rollout.generate_rollout(
        model, first, torch.zeros(1, 1, 1024), None, {"actions": actions}, seed=0, **common
    )
    other = rollout.generate_rollout(
        model, first, torch.zeros(1, 1, 1024), None, {"actions": actions}, seed=1, **common
    )
    assert torch.equal(one, again) and not torch.equal(one, other)


def test_chunk_size_and_num_chunks_options(model, monkeypatch):
    calls = spy(model, monkeypatch)
    state_t = model.state_t
    try:
        video, _ = run(model, torch.randn(1, 6, 3), chunk=2)
        assert video.shape[2] == 1 + 6 and [c["seed"] for c in calls] == [3, 5, 7]
        assert all(c["out"].shape[2] == 3 for c in calls)  # 2 actions -> 3-frame clips
    finally:
        model.state_t = state_t
    calls.clear()
    video, _ = run(model, torch.randn(1, 3 * CHUNK, 3), num_chunks=1)
    assert video.shape[2] == 1 + CHUNK and len(calls) == 1


def test_rollout_errors_are_one_line():
    assert rollout.plan_chunks(14, 4) == ([0, 4, 8], 2)
    assert rollout.plan_chunks(12, 4, num_chunks=2) == ([0, 4], 4)
    with pytest.raises(ConfigError, match="needs 12 actions, but 11 were given"):
        rollout.plan_chunks(11, 12)
    with pytest.raises(ConfigError, match="fill 2 chunk"):
        rollout.plan_chunks(8, 4, num_chunks=3)


def test_chunk_size_must_fill_latent_frames():
    from types import SimpleNamespace

    tok = SimpleNamespace(temporal_compression=4, pixel_frames=lambda t: 4 * (t - 1) + 1)
    model = SimpleNamespace(tokenizer=tok, state_t=4)
    rollout.set_chunk_size(model, 8)
    assert model.state_t == 3 and rollout.chunk_size(model) == 8
    with pytest.raises(ConfigError, match="--chunk_size 6 is not a positive multiple"):
        rollout.set_chunk_size(model, 6)


def test_multi_chunk_rollout_needs_one_given_frame(model):
    first = torch.zeros(1, 3, 1, 24, 24, dtype=torch.uint8)
    with pytest.raises(ConfigError, match="--num_conditional_frames 1"):
        rollout.generate_rollout(
            model,
            first,
            torch.zeros(1, 1, 1024),
            None,
            {"actions": torch.zeros(1, 2 * CHUNK, 3)},
            num_conditional_frames=2,
        )


def test_video2world_actions_cli_writes_the_stitched_rollout(tmp_path, monkeypatch):
    data = ensure_synthetic_lerobot(
        tmp_path / "datasets" / "synthetic_lerobot_actions",
        num_episodes=2,
        num_frames=9,
        size=24,
        num_val=1,
    )
    monkeypatch.setenv("DATASETS", str(tmp_path / "datasets"))
    cfg = tiny_lerobot_action()
    torch.manual_seed(0)
    net = instantiate(cfg.model.net)
    ckpt = tmp_path / "net.pt"
    torch.save({f"net.{k}": v for k, v in net.state_dict().items()}, ckpt)
    video = next(data.glob("videos/**/observation.images.top/**/*.mp4"))
    acts = tmp_path / "a.json"
    acts.write_text(json.dumps(np.random.default_rng(0).normal(size=(9, 3)).tolist()))
    out, batch_out = tmp_path / "out.mp4", tmp_path / "b.mp4"
    common = ["--experiment", "tiny_lerobot_action", "--checkpoint", str(ckpt), "--num_steps", "1"]
    rc = v2w.main(
        [*common, "--input_path", str(video), "--actions", str(acts), "--save_path", str(out)]
    )
    assert rc == 0
    with ClipReader(out) as r:
        assert r.num_frames == 1 + 2 * CHUNK  # 9 actions: 2 chunks of 4, one left out
    batch = tmp_path / "batch.json"
    entry = {"input_video": str(video), "actions": str(acts), "output_video": str(batch_out)}
    batch.write_text(json.dumps([entry]))
    rc = v2w.main([*common, "--batch_input_json", str(batch), "--chunk_size", "2"])
    assert rc == 0
    with ClipReader(batch_out) as r:
        assert r.num_frames == 1 + 4 * 2
    assert (
        v2w.main(
            [
                *common,
                "--input_path",
                str(video),
                "--actions",
                str(acts),
                "--save_path",
                str(out),
                "--chunk_size",
                "0",
            ]
        )
        == v2w.USER_ERROR
    )


def test_an_action_item_starts_from_the_first_frame_of_its_video(tmp_path):
    """Actions are read from frame 0 of an episode, so the rollout starts there (upstream's
    action inference conditions on frame `start_frame_idx`, 0); without actions a video still
    gives its last frame."""
    from types import SimpleNamespace

    from framework.inference import media, prompts

    frames = torch.zeros(3, 6, 24, 24, dtype=torch.uint8)
    frames[0, 0] = 250  # frame 0 red, the others black
    src = media.save_video(tmp_path / "in.mp4", frames, fps=4)
    given = []

    class Spy:
        family = SimpleNamespace(conditions=("actions",))
        tokenizer = SimpleNamespace(pixel_frames=lambda t: t)
        state_t = CHUNK + 1

        def generate(self, cond, emb, neg, **kw):
            given.append(cond)
            return torch.zeros(1, 3, CHUNK + 1, 24, 24, dtype=torch.uint8)

    s = v2w.Settings(size=(24, 24), fps=4.0, negative_prompt="", guidance=0.0, num_steps=1)
    embed = prompts.PromptEmbedder(lambda texts: torch.ones(len(texts), 1, 8))
    item = v2w.Item(str(src), "", str(tmp_path / "o.mp4"))
    v2w.generate_item(Spy(), embed, item, s)
    item.conditions = {"actions": torch.zeros(1, CHUNK, 3)}
    v2w.generate_item(Spy(), embed, item, s)
    last, first = (g[0, 0, 0].float().mean() for g in given)
    assert last < 30 and first > 200


def test_best_of_n_takes_the_rollout_options():
    """Best-of-N parses video2world's action options and hands them to every candidate's
    generate_item through the shared settings."""
    from types import SimpleNamespace

    from framework.inference import best_of_n

    args, _ = best_of_n.parse_args(
        ["--actions", "a.npy", "--chunk_size", "8", "--num_chunks", "2", "--num_steps", "1"]
    )
    cfg = SimpleNamespace(
        model={"fps": 4.0, "empty_prompt": "encode"},
        data=SimpleNamespace(dataset=SimpleNamespace(video_size=[24, 24])),
    )
    args.negative_prompt = ""
    s = v2w.settings_of(args, cfg)
    assert (s.chunk_size, s.num_chunks, s.empty_prompt) == (8, 2, "encode")
