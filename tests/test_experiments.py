"""Every registered experiment builds, takes an override, round-trips YAML and builds on meta."""

from __future__ import annotations

import pytest
import torch

from framework.config import apply_overrides, from_yaml, get, instantiate, load_all, names, to_yaml
from framework.config.registry import OPTIONAL_KEYS, TOP_LEVEL_KEYS
from framework.models.meta import building_on_meta

load_all()


@pytest.mark.parametrize("name", names())
def test_experiment_builds_and_round_trips(name):
    cfg = get(name)
    assert tuple(k for k in cfg if k not in OPTIONAL_KEYS) == TOP_LEVEL_KEYS
    apply_overrides(cfg, ["train.max_steps=2"])
    again = from_yaml(to_yaml(cfg))
    assert again == cfg and again.train.max_steps == 2
    with torch.device("meta"), building_on_meta():
        model = instantiate(again.model)
    assert sum(p.numel() for p in model.parameters()) > 0
    for method in ("training_step", "trainable_parameters", "parallelize"):
        assert callable(getattr(model, method)), f"{name}: model lacks {method}()"
    assert isinstance(model.net, torch.nn.Module)


def test_seed_names_resolve_to_the_same_experiment():
    long = get("predict2_video2world_training_2b_groot_gr1_480")
    assert long == get("groot_gr1_480")
    assert long.job.name == "2b_groot_gr1_480" and long.job.project == "posttraining"
    assert get("predict2_video2world_training_14b_groot_gr1_480").job.name == "14b_groot_gr1_480"


def test_groot_recipe_values():
    cfg = get("groot_gr1_480")
    assert cfg.optim.lr == pytest.approx(2**-14.5) and cfg.optim.weight_decay == 0.1
    assert list(cfg.optim.betas) == [0.9, 0.99] and cfg.optim.eps == 1e-8
    assert list(cfg.sched.warm_up_steps) == [1000] and list(cfg.sched.cycle_lengths) == [100000]
    assert list(cfg.sched.f_max) == [0.2] and list(cfg.sched.f_min) == [0.1]
    assert cfg.data.batch_size == 1 and cfg.data.dataset.num_frames == 93
    assert list(cfg.data.dataset.video_size) == [432, 768]
    assert cfg.checkpoint.save_iter == 200 and cfg.train.grad_clip == 1.0
    assert cfg.parallel.shard_size == 8 and cfg.model.state_t == 24
    assert cfg.checkpoint.load_path.endswith(
        "nvidia/Cosmos-Predict2-2B-Video2World/model-720p-16fps.pt"
    )
