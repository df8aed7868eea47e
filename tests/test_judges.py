"""DreamGen-Bench judge scores: upstream's prompts, frame sampling and reply rule, and both
questions through a tiny random Qwen2.5-VL (the critic's test model) with the real generate."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from framework.evaluation import judges as J
from framework.evaluation.metrics import Videos, build_metrics
from tests.critic_fixtures import make_tiny_reason1


def test_reply_rule_prompts_and_frame_sampling():
    assert [J.parse_reply(r) for r in ("1", " 1\n", "1.", "10", "0", "Yes", "", " 0 1")] == [
        1, 1, 1, 1, 0, 0, 0, 0,
    ]  # fmt: skip
    text = J.IF_PROMPT.format(prompt="pick up the cube")
    assert "to finish the task: 'pick up the cube'? If it fails" in text
    assert text.endswith("Answer 0 for No or 1 for Yes. Reply only 0 or 1.")
    assert "Please be a strict judge. If it breaks the laws of physics" in J.PA_PROMPT
    # np.linspace(0, 92, 49, dtype=int) for a 93-frame clip; a 20-frame clip repeats its last.
    assert J.if_frame_indices(93) == np.linspace(0, 92, 49, dtype=int).tolist()
    assert J.if_frame_indices(93)[:4] == [0, 1, 3, 5] and J.if_frame_indices(93)[-1] == 92
    assert J.if_frame_indices(20) == list(range(20)) + [19] * 29
    frames = J.if_frames(np.zeros((20, 432, 768, 3), np.uint8))
    assert len(frames) == 49 and frames[0].shape == (129, 230, 3)  # int(0.3 * 432), int(0.3 * 768)


@pytest.fixture(scope="module")
def judge(tmp_path_factory):
    folder = make_tiny_reason1(tmp_path_factory.mktemp("judge") / "Qwen2.5-VL-7B-Instruct")
    return J.QwenJudge(str(folder), device="cpu")


def test_both_questions_through_a_tiny_qwen(judge):
    rng = np.random.default_rng(0)
    video = rng.integers(0, 256, (9, 48, 80, 3), dtype=np.uint8)
    prompt = J.IF_PROMPT.format(prompt="push the plate")
    inputs = judge.inputs(prompt, images=J.if_frames(video))
    ids = inputs["input_ids"][0]
    assert inputs["image_grid_thw"].shape == (49, 3)
    per_image = int(inputs["image_grid_thw"][0].prod()) // 4
    assert int((ids == judge.ids["image"]).sum()) == 49 * per_image
    text = judge.tokenizer.decode([t for t in ids.tolist() if t not in judge.ids.values()])
    assert "push the plate" in text and text.index("push the plate") < text.index(
        "<|vision_start|>"
    )
    reply = judge.ask(inputs)
    assert isinstance(reply, str) and judge.ask(inputs) == reply  # set_seed(0) each time

    pa = judge.inputs(J.PA_PROMPT, video=(video, 16.0))
    assert pa["video_grid_thw"].shape == (1, 3) and "pixel_values" not in pa
    # 9 frames at 16 fps -> 2 fps gives 1.1 frames -> at least 4 (even); time step 2 / 1.78 fps.
    assert pa["video_grid_thw"][0, 0] == 2
    text = judge.tokenizer.decode(pa["input_ids"][0].tolist())
    assert text.index("<|video_pad|>") < text.index("physics dynamics")  # video first
    assert isinstance(judge.ask(pa), str)


def test_judge_metrics_score_zero_or_one(judge, monkeypatch):
    monkeypatch.setitem(J._JUDGES, (str(judge.folder), "cpu"), judge)
    metrics = build_metrics(["dreamgen_if", "dreamgen_pa"])
    video = torch.randint(0, 256, (1, 3, 9, 48, 80), dtype=torch.uint8)
    v = Videos("a", "push the plate", 16.0, video[:, :, 1:], video[:, :, 1:], video[:, :, 1:],
               video, video)  # fmt: skip
    for m in metrics:
        m.judge_name = str(judge.folder)
        m.setup("cpu")
        assert set(m.item(v).values()) <= {0.0, 1.0}
    # Replies are parsed by the rule: force the model's reply to check the wiring.
    monkeypatch.setattr(J.QwenJudge, "ask", lambda self, inputs: " 1")
    assert metrics[0].item(v) == {"dreamgen_if": 1.0}
    monkeypatch.setattr(J.QwenJudge, "ask", lambda self, inputs: "No")
    v.cache.clear()  # PA-I keeps its answer in the video's cache (for dreamgen_pa_mean)
    assert metrics[1].item(v) == {"dreamgen_pa": 0.0}
    monkeypatch.setattr(J.QwenJudge, "ask", lambda self, inputs: "1")
    assert metrics[1].item(v) == {"dreamgen_pa": 0.0}  # the same video is not asked again
    v.cache.clear()
    assert metrics[1].item(v) == {"dreamgen_pa": 1.0}


def test_missing_judge_weights_name_the_download(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (metric,) = build_metrics(["dreamgen_if"])
    with pytest.raises(FileNotFoundError) as err:
        metric.setup("cpu")
    assert "`hf download Qwen/Qwen2.5-VL-7B-Instruct`" in str(err.value)
    assert "\n" not in str(err.value)
