"""The video critic: upstream's answer parsing and score on canned answers, the frame arithmetic
of the upstream stack, patches as transformers lays them out, a tiny random Qwen2.5-VL through
the real transformers generate path, the registry, and the missing-weights error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from framework.inference import critic as C
from framework.inference import critic_frames as CF
from framework.inference import media
from tests.critic_fixtures import make_tiny_reason1

WELL_FORMED = """<think>
<overview>
A robot arm picks up a red cube.
</overview>

<component name="Arm motion">
<analysis>
Smooth & continuous.
</analysis>
<anomaly>No</anomaly>
</component>

<component name="Cube">
<analysis>
The cube changes colour midway.
</analysis>
<anomaly>Yes</anomaly>
</component>
</think>

<answer>
{answer}
</answer>"""


def test_parse_answer_follows_upstream_regex():
    assert C.parse_answer(WELL_FORMED.format(answer="No")) == "no"
    assert C.parse_answer(WELL_FORMED.format(answer="Yes")) == "yes"
    assert C.parse_answer("<ANSWER> yes </Answer>") == "yes"  # case and spaces
    assert C.parse_answer("<answer>No.</answer>") is None  # anything else inside: no match
    assert C.parse_answer("<answer>Maybe</answer>") is None
    assert C.parse_answer("<answer>No") is None  # unclosed
    assert C.parse_answer("The answer is No.") is None
    assert C.parse_answer("<answer>no</answer> <answer>yes</answer>") == "no"  # first counts


def test_share_of_no_on_well_formed_malformed_and_unparsed_answers():
    v = C.share_of_no([WELL_FORMED.format(answer=a) for a in ("No", "No", "Yes")] + ["junk"])
    assert (v.no, v.parsed, v.answers) == (2, 3, ["no", "no", "yes", None])
    assert v.score == pytest.approx(2 / 3)
    assert C.share_of_no(["junk", "<answer>perhaps</answer>"]).score == 0.0  # none parsed
    assert C.share_of_no([]).score == 0.0
    assert C.share_of_no(["<answer>Yes</answer>"] * 2).score == 0.0
    assert C.share_of_no(["<answer>No</answer>"] * 2).score == 1.0


def test_components_survive_text_that_is_not_xml():
    comps = C.parse_components(WELL_FORMED.format(answer="No"))  # holds a bare "&"
    assert [(c["name"], c["anomaly"]) for c in comps] == [("Arm motion", "No"), ("Cube", "Yes")]
    assert comps[0]["analysis"] == "Smooth & continuous."
    assert C.parse_components("no template at all") == []


def test_frames_follow_the_upstream_stack_for_a_93_frame_480p_clip():
    """qwen-vl-utils 0.0.11 at fps 16 and 8192*28*28 total pixels, then the 4.51.3 image
    processor at min 256*28*28: 92 frames of 280x476, then 364x588, 12,558 video tokens."""
    n = CF.num_sampled_frames(93, 16.0)
    # qwen-vl-utils 0.0.11 fetch_video: max(min(VIDEO_MAX_PIXELS, total / n * 2),
    # int(min_pixels * 1.05)) with min_pixels = 128*28*28.
    budget = max(min(768 * 28 * 28, 8192 * 28 * 28 / n * 2), int(128 * 28 * 28 * 1.05))
    assert CF.frame_pixel_cap(n) == budget
    stage1 = CF.smart_resize(432, 768, 28, CF.VIDEO_MIN_PIXELS, budget)
    stage2 = CF.smart_resize(*stage1, 28, CF.PROCESSOR_MIN_PIXELS, CF.PROCESSOR_MAX_PIXELS)
    assert (n, stage1, stage2) == (92, (280, 476), (364, 588))
    assert n // 2 * (364 // 14) * (588 // 14) // 4 == 12558
    # Few frames at a low rate: never more than the video has, always even.
    assert CF.num_sampled_frames(33, 4.0) == 32 and CF.num_sampled_frames(3, 8.0) == 2
    with pytest.raises(ValueError, match="too short"):
        CF.num_sampled_frames(1, 16.0)

    # Long videos hit the floor, which upstream rounds down to 105,369 pixels: a 252x480
    # frame then becomes 224x420 (224x448 under the unrounded 105,369.6).
    assert CF.frame_pixel_cap(200) == 105369
    assert CF.smart_resize(252, 480, 28, CF.VIDEO_MIN_PIXELS, 105369) == (224, 420)
    assert CF.smart_resize(252, 480, 28, CF.VIDEO_MIN_PIXELS, 105369.6) == (224, 448)

    frames = np.zeros((9, 72, 128, 3), np.uint8)  # small: the output size is set by min pixels
    video, fps = CF.prepare_frames(frames, 16.0, CF.VisionLayout())
    assert video.shape[:2] == (8, 3) and video.shape[2] % 28 == video.shape[3] % 28 == 0
    assert video.shape[2] * video.shape[3] >= CF.PROCESSOR_MIN_PIXELS
    assert fps == pytest.approx(8 / 9 * 16)


def test_patches_match_transformers_image_processor():
    """Two equal frames = one image as the Qwen2-VL image processor patches it (it repeats an
    image temporal_patch_size times): same normalization, same patch order."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
        Qwen2VLImageProcessorPil,
    )

    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (56, 84, 3), dtype=np.uint8)
    ref = Qwen2VLImageProcessorPil()(images=[img], do_resize=False, return_tensors="pt")
    frames = torch.from_numpy(img).permute(2, 0, 1)[None].float().expand(2, -1, -1, -1)
    ours, grid = CF.patchify(frames, CF.VisionLayout())
    assert grid == ref["image_grid_thw"][0].tolist() == [1, 4, 6]
    torch.testing.assert_close(ours, ref["pixel_values"].float(), atol=1e-5, rtol=1e-5)


@pytest.fixture(scope="module")
def reason1(tmp_path_factory):
    return make_tiny_reason1(tmp_path_factory.mktemp("critic") / "Cosmos-Reason1-7B")


def test_tiny_reason1_answers_through_transformers_generate(reason1, tmp_path):
    """Random weights give random text; what matters is the real path (tokenizer, chat
    template, patches, mrope positions, sampling with K return sequences) and that any answer
    is parsed without error into a score in [0, 1]."""
    video = tmp_path / "clip.mp4"
    gen = torch.Generator().manual_seed(0)
    media.save_video(
        video, torch.randint(0, 256, (3, 5, 40, 64), dtype=torch.uint8, generator=gen), 8
    )
    critic = C.CosmosReason1(str(reason1), device="cpu", sampling=C.Sampling(max_new_tokens=6))
    inputs = critic.inputs(video)
    grid = inputs["video_grid_thw"][0].tolist()
    # 5 frames at 8 fps -> 4 sampled; 40x64 -> 252x420 (video min pixels) -> 364x588 (processor)
    assert grid == [2, 364 // 14, 588 // 14]
    n_video = int((inputs["input_ids"] == critic.video_token_id).sum())
    assert (
        n_video == grid[0] * grid[1] * grid[2] // 4 == inputs["pixel_values_videos"].shape[0] // 4
    )
    assert inputs["second_per_grid_ts"].item() == pytest.approx(2 / (4 / 5 * 8))

    responses = critic.responses(video, num_trials=3, seed=7)
    assert len(responses) == 3 and all(isinstance(r, str) for r in responses)
    assert critic.responses(video, num_trials=3, seed=7) == responses  # set_seed per video
    verdict = critic.score(responses + ["<answer>No</answer>"])
    assert 0.0 <= verdict.score <= 1.0 and verdict.parsed >= 1
    assert critic.settings()["temperature"] == 0.6 and critic.settings()["top_k"] == 50
    critic.close()


def test_missing_weights_is_one_line_with_the_download_command(tmp_path):
    folder = tmp_path / "checkpoints" / "nvidia" / "Cosmos-Reason1-7B"
    with pytest.raises(C.CriticError) as err:
        C.CosmosReason1.check(str(folder))
    msg = str(err.value)
    assert "\n" not in msg and str(folder) in msg
    assert f"hf download nvidia/Cosmos-Reason1-7B --local-dir {folder}" in msg


class ConstantCritic(C.Critic):
    """A critic added without touching the framework (by import path)."""

    name = "constant"

    def __init__(self, **kwargs) -> None:
        self.kwargs = kwargs

    def responses(self, video: Path, num_trials: int, seed: int) -> list[str]:
        return ["<answer>No</answer>"] * num_trials


def test_critics_by_name_or_import_path():
    assert C.critic_class("cosmos_reason1") is C.CosmosReason1
    assert C.critic_class("tests.test_critic:ConstantCritic") is ConstantCritic
    assert C.critic_class("tests.test_critic.ConstantCritic") is ConstantCritic
    assert ConstantCritic().score(ConstantCritic().responses(Path("x"), 2, 0)).score == 1.0
    for bad, why in [
        ("nope", "not registered"),
        ("tests.test_critic:Missing", "cannot be imported"),
        ("tests.test_critic:WELL_FORMED", "not a subclass"),
    ]:
        with pytest.raises(C.CriticError, match=why):
            C.critic_class(bad)
