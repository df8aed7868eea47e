"""Issue #26 item 9: sizes that must fit together (video size, frames, state_t, heads, schedule)
are refused before anything is built or written, in one line naming the key and the fix
(framework/trainer/validate_shapes.py). Before, each ended in a traceback from the net, the
tokenizer or the first step, some after config.yaml was written."""

from __future__ import annotations

import pytest
import torch

from framework.config import apply_overrides, get, load_all, names
from framework.config.lazy import instantiate
from framework.models.meta import building_on_meta
from framework.models.tokenizers import PixelTokenizer
from framework.trainer.validate import validate
from launch import train as launch_train

BAD = [
    # tiny_gr1: pixel tokenizer spatial 2, MiniTrainDiT patch 2, width 128, state_t 5, 5 frames
    ("data.dataset.video_size=[26,24]", "multiples of 4", "video_size=[28,24]"),
    ("data.dataset.video_size=[24,18]", "multiples of 4", "video_size=[24,20]"),
    ("model.net.num_heads=3", "model.net.num_heads=3 does not divide", "one of 1, 2, 4, 8"),
    ("model.state_t=6", "data.dataset.num_frames=5 is too few for model.state_t=6", "=6 or"),
    ("data.dataset.num_frames=3", "num_frames=3 is too few", "model.state_t=3"),
    ("sched.cycle_lengths=[0]", "sched.cycle_lengths=[0] is not allowed", "integer >= 1"),
    ("sched.warm_up_steps=[10,20]", "the schedule's lists differ in length", "one value per"),
    ("sched.warm_up_steps=[1000]", "sched.warm_up_steps=[1000] is not allowed", "[0, 1000)"),
]


@pytest.mark.parametrize("override,problem,fix", BAD, ids=[b[0] for b in BAD])
def test_sizes_that_do_not_fit_are_one_line_before_anything_is_built(
    tmp_path, capsys, override, problem, fix
):
    argv = [
        "tiny_gr1",
        f"job.output_root={tmp_path}/runs",
        f"data.dataset.dataset_dir={tmp_path}/data",
        "data.dataset.num_videos=2",
        "data.batch_size=2",
        "model.net.num_blocks=1",
        "train.max_steps=1",
        "~hooks.eval",
        "~hooks.sample",
        "~hooks.loss_curve",
    ]
    assert launch_train.main([*argv, override]) == 2
    err = capsys.readouterr().err.strip()
    assert problem in err and fix in err, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert not list(tmp_path.iterdir())  # no data made, no run folder, no config.yaml


@pytest.mark.parametrize(
    "name,override,message",
    [
        ("groot_gr1_480", "data.dataset.video_size=[480,854]", "multiples of 16"),
        ("groot_gr1_480", "data.dataset.num_frames=90", "makes 24 latent frames from 93"),
        ("bridge_57frames", "model.state_t=9", "use data.dataset.num_frames=65"),
        ("tiny_bridge", "model.state_t=17", "over model.net.max_frames=16"),
        ("groot_gr1_480", "model.net.num_heads=24", "does not divide model.net.model_channels"),
    ],
)
def test_the_real_families_constraints(name, override, message):
    """Wan VAE (8x, 4 frames) and Cosmos CV8x8x8 (8x, 8 frames) with their DiTs' patches: read
    from the config, nothing built (these would otherwise need the weights files)."""
    load_all()
    with pytest.raises(ValueError, match=message.replace("[", r"\[")):
        validate(apply_overrides(get(name), [override]))


def test_every_registered_experiment_passes():
    load_all()
    for name in names():
        validate(get(name))


@pytest.mark.parametrize("name", ["tiny_gr1", "tiny_bridge", "groot_gr1_480", "bridge_57frames"])
def test_compression_read_from_the_config_is_the_built_tokenizers(name):
    """The value the check uses equals what the tokenizer built from the same node reports (the
    VAEs built on the meta device from diffusers' own config: no weights needed)."""
    from framework.models.tokenizers import config_compression

    load_all()
    node = get(name).model.tokenizer
    with building_on_meta(), torch.device("meta"):
        tok = instantiate(node)
    assert config_compression(node) == (tok.spatial_compression, tok.temporal_compression)


def test_the_tokenizer_no_longer_says_resize_the_video():
    with pytest.raises(ValueError) as err:
        PixelTokenizer(spatial=4).encode(torch.zeros(1, 3, 1, 10, 8, dtype=torch.uint8))
    assert "resize the video" not in str(err.value)
    assert "data.dataset.video_size" in str(err.value)
