"""Qwen2.5-VL positions by upstream's rule (transformers 4.51.3's get_rope_index), loading errors.

The reference here is written from 4.51.3's documented rule, independently of
framework/models/qwen_vl.py (a run-length walk over the tokens instead of its search for vision
placeholders): text advances by one on all three axes starting one past the largest position so
far; a video's tokens get (floor(t * seconds_per_grid * tokens_per_second), row, column) plus the
block's start; an image's time is 0. The tiny random Qwen2.5-VL of tests/critic_fixtures.py is fed
the critic's own inputs and compared with the same model given the reference positions.
"""

from __future__ import annotations

import pytest
import torch

from framework.inference import critic as C
from framework.inference import media
from framework.models import qwen_vl
from tests.critic_fixtures import make_tiny_reason1


def reference_positions(ids: list[int], cfg, grids: list[list[int]], seconds: list[float]):
    """[3, len(ids)] positions of one sequence holding videos only, by 4.51.3's rule."""
    merge = cfg.vision_config.spatial_merge_size
    tps = cfg.vision_config.tokens_per_second
    out: list[list[int]] = []
    nxt, i, v = 0, 0, 0
    while i < len(ids):
        if ids[i] != cfg.video_token_id:
            out.append([nxt, nxt, nxt])
            nxt, i = nxt + 1, i + 1
            continue
        t, h, w = grids[v][0], grids[v][1] // merge, grids[v][2] // merge
        step = torch.tensor(seconds[v], dtype=torch.float32)  # as the processor's tensor holds it
        block = []
        for k in range(t):
            time = int((torch.tensor(k) * step * tps).item())  # truncated, as .long() does
            block += [[nxt + time, nxt + r, nxt + c] for r in range(h) for c in range(w)]
        out += block
        nxt = max(max(p) for p in block) + 1
        i, v = i + t * h * w, v + 1
    return torch.tensor(out).T


@pytest.fixture(scope="module")
def critic(tmp_path_factory):
    folder = make_tiny_reason1(
        tmp_path_factory.mktemp("qwen_vl") / "Cosmos-Reason1-7B", initializer_range=0.3
    )
    c = C.CosmosReason1(str(folder), device="cpu", sampling=C.Sampling(max_new_tokens=3))
    yield c
    c.close()


def clip(path, frames: int, fps: float):
    gen = torch.Generator().manual_seed(frames)
    video = torch.randint(0, 256, (3, frames, 40, 64), dtype=torch.uint8, generator=gen)
    media.save_video(path, video, fps)
    return path


def logits(model, inputs: dict, positions: torch.Tensor | None = None) -> torch.Tensor:
    keep = ("input_ids", "attention_mask", "pixel_values_videos", "video_grid_thw")
    kw = {k: inputs[k] for k in keep}
    if positions is None:
        kw = inputs
    else:
        kw["position_ids"] = positions[:, None]
    with torch.inference_mode():
        return model(**kw).logits[0].float()


@pytest.mark.parametrize(
    "frames, fps, long",
    [
        (5, 8.0, False),  # 2 temporal grids: time stays below the frame's width in tokens
        (14, 2.0, True),  # 7 grids 1 s apart: time reaches 6 * 4 = 24 > 21 columns
    ],
)
def test_critic_inputs_give_upstream_positions(critic, tmp_path, frames, fps, long):
    """Logits of the critic's inputs (positions computed by the patched model, whatever the
    installed transformers does) equal those under the reference positions; under plain
    sequence positions (what 5.x gives inputs without token types) or 5.x's text placement
    after a long video they do not, so this comparison sees the difference."""
    inputs = critic.inputs(clip(tmp_path / "clip.mp4", frames, fps))
    cfg = critic.model.config
    ids = inputs["input_ids"][0].tolist()
    grid = inputs["video_grid_thw"][0].tolist()
    seconds = inputs["second_per_grid_ts"].tolist()
    ref = reference_positions(ids, cfg, [grid], seconds)
    ours, deltas = qwen_vl.rope_positions(
        cfg, inputs["input_ids"], None, inputs["video_grid_thw"], inputs["second_per_grid_ts"]
    )
    assert torch.equal(ours[:, 0], ref) and int(deltas) == int(ref.max()) + 1 - len(ids)

    want = logits(critic.model, inputs, ref)
    got = logits(critic.model, inputs)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)

    plain = torch.arange(len(ids)).expand(3, -1)
    assert (logits(critic.model, inputs, plain) - want).abs().max() > 0.1

    # transformers 5.x: text after a video starts at start + max(h, w) / merge.
    first = ids.index(cfg.video_token_id)
    n_video = sum(t == cfg.video_token_id for t in ids)
    merged = max(grid[1], grid[2]) // cfg.vision_config.spatial_merge_size
    after = first + n_video
    five = ref.clone()
    five[:, after:] = torch.arange(len(ids) - after) + first + merged
    assert torch.equal(five, ref) != long  # the rules differ exactly for the long video
    if long:
        assert int(ref[0, after - 1]) > first + merged - 1  # time passed the columns
        assert (logits(critic.model, inputs, five) - want).abs().max() > 0.1


def test_generation_continues_from_upstream_positions(critic, tmp_path):
    """Greedy generation through transformers' generate (prefill + cached steps) gives, step
    by step, the logits of one forward over the whole sequence under reference positions."""
    inputs = critic.inputs(clip(tmp_path / "clip.mp4", 14, 2.0))
    with torch.inference_mode():
        out = critic.model.generate(
            **inputs,
            do_sample=False,
            max_new_tokens=3,
            min_new_tokens=3,
            output_logits=True,
            return_dict_in_generate=True,
        )
    ids = out.sequences[0].tolist()
    cfg = critic.model.config
    grid = inputs["video_grid_thw"][0].tolist()
    ref = reference_positions(ids, cfg, [grid], inputs["second_per_grid_ts"].tolist())
    full = dict(inputs, input_ids=out.sequences, attention_mask=torch.ones_like(out.sequences))
    want = logits(critic.model, full, ref)
    n = inputs["input_ids"].shape[1]
    for k, step in enumerate(out.logits):
        torch.testing.assert_close(step[0].float(), want[n - 1 + k], atol=1e-4, rtol=1e-4)


def test_rule_for_images_padding_and_several_videos():
    """Hand-checked positions: an image (time 0), a padded second sequence (padding gets 1,
    as 4.51 writes it), two videos with different time steps in one batch."""
    from types import SimpleNamespace

    cfg = SimpleNamespace(
        vision_config=SimpleNamespace(spatial_merge_size=2, tokens_per_second=2),
        image_token_id=9,
        video_token_id=8,
        vision_start_token_id=7,
    )
    # text, image (grid 1x4x4 = 2x2 tokens), text, video (2x4x4 = 2x2x2 tokens), text
    ids = [1, 7] + [9] * 4 + [2, 7] + [8] * 8 + [3]
    pos, delta = qwen_vl.rope_positions(
        cfg,
        torch.tensor([ids]),
        image_grid_thw=torch.tensor([[1, 4, 4]]),
        video_grid_thw=torch.tensor([[2, 4, 4]]),
        second_per_grid_ts=torch.tensor([0.75]),
    )
    t, h, w = pos[:, 0].tolist()
    # text 0,1; image at 2: rows 2,2,3,3 cols 2,3,2,3 time 2; text 4,5 (one past max 3);
    # video at 6: time floor(0 * 1.5), floor(1 * 1.5) = 0, 1 -> 6, 7; text at 8 (max 7 + 1).
    assert t == [0, 1, 2, 2, 2, 2, 4, 5] + [6] * 4 + [7] * 4 + [8]
    assert h == [0, 1, 2, 2, 3, 3, 4, 5] + [6, 6, 7, 7] * 2 + [8]
    assert w == [0, 1, 2, 3, 2, 3, 4, 5] + [6, 7, 6, 7] * 2 + [8]
    assert delta.tolist() == [[8 + 1 - len(ids)]]

    padded = torch.tensor([[0, 0, 1, 7, 8, 8, 8, 8, 3]])
    mask = torch.tensor([[0, 0, 1, 1, 1, 1, 1, 1, 1]])
    pos, delta = qwen_vl.rope_positions(
        cfg, padded, video_grid_thw=torch.tensor([[1, 4, 4]]), attention_mask=mask
    )
    assert pos[0, 0].tolist() == [1, 1, 0, 1, 2, 2, 2, 2, 4]
    assert delta.tolist() == [[4 + 1 - 9]]
    text, delta = qwen_vl.rope_positions(cfg, torch.tensor([[5, 6, 7]]))
    assert text[:, 0].tolist() == [[0, 1, 2]] * 3 and delta.tolist() == [[0]]


def test_missing_weights_name_the_download_command(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(qwen_vl.QwenVLError) as err:
        qwen_vl.load_qwen_vl("Qwen/Qwen2.5-VL-7B-Instruct", label="judge")
    msg = str(err.value)
    assert "\n" not in msg and "`hf download Qwen/Qwen2.5-VL-7B-Instruct`" in msg
    folder = tmp_path / "ckpt" / "Cosmos-Reason1-7B"
    with pytest.raises(qwen_vl.QwenVLError, match=r"hf download nvidia/Cosmos-Reason1-7B --local"):
        qwen_vl.resolve(folder, hub_id="nvidia/Cosmos-Reason1-7B")
    assert qwen_vl.is_hub_id("Qwen/Qwen2.5-VL-7B-Instruct")
    assert not qwen_vl.is_hub_id("checkpoints/nvidia/Cosmos-Reason1-7B")
