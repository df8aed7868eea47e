"""LoRA on an action family trains the action embedders beside the adapters (the family's
`lora_trainable`, peft's `modules_to_save` with official names): a plain Video2World base without
them loads, a LoRA step changes them, the adapters-only checkpoint holds them, and export / merge
keep their trained values."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from data_prep.synthetic_lerobot import ensure_synthetic_lerobot
from framework.config import apply_overrides, get, instantiate, load_all
from framework.models.dit.action import ACTION_KEYS
from framework.models.dit.state_dict import matches
from framework.trainer import Trainer

pytestmark = pytest.mark.filterwarnings("ignore:LoRA rank=4, alpha=8")


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> tuple[Path, Path]:
    """A small synthetic LeRobot set and a plain (no-action) Predict2.5 base file of the tiny
    action net's size, as the 2.5 action recipe starts from the plain 2B file."""
    root = tmp_path_factory.mktemp("action_lora")
    data = ensure_synthetic_lerobot(
        root / "lerobot", num_episodes=3, num_frames=5, size=24, num_val=1
    )
    load_all()
    torch.manual_seed(1)
    plain = instantiate(get("tiny_lerobot_no_action").model.net)
    with torch.no_grad():  # a trained base: no zero-initialised modulation layer left, so the
        for param in plain.parameters():  # timestep embedding (and action_embedder_B_D) matter
            param.add_(0.05 * torch.randn_like(param))
    base = root / "base.pt"
    torch.save({f"net.{k}": v for k, v in plain.state_dict().items()}, base)
    return data, base


def lora_job(data: Path, base: Path, out: Path, *extra: str):
    return apply_overrides(
        get("tiny_lerobot_action"),
        [
            f"job.output_root={out}",
            "job.name=lora",
            f"data.dataset.dataset_dir={data}",
            "data.dataset.num_episodes=3",
            "data.dataset.num_val=1",
            "data.dataset.size=24",
            "data.batch_size=2",
            "~hooks.eval",
            "~hooks.sample",
            "~hooks.loss_curve",
            "~hooks.progress",
            "train.max_steps=2",
            "checkpoint.save_iter=2",
            "optim.lr=1e-2",
            "model.lora={rank:4,alpha:8}",
            f"checkpoint.load_path={base}",
            *extra,
        ],
    )


def action_params(net) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in net.named_parameters() if matches(n, ACTION_KEYS)}


def test_lora_trains_and_keeps_the_action_embedders(setup, tmp_path):
    from framework import export

    data, base = setup
    trainer = Trainer(lora_job(data, base, tmp_path))
    net = trainer.model.net
    before = action_params(net)
    assert len(before) == 8  # fc1/fc2 weight and bias of both embedders
    assert all(p.requires_grad for n, p in net.named_parameters() if n in before)
    # The base stays frozen: only the adapters and the action embedders train.
    for n, p in net.named_parameters():
        assert p.requires_grad == (n in before or ".lora_" in n), n
    trainer.fit()
    after = action_params(net)
    changed = {n: not torch.equal(before[n], after[n]) for n in before}
    assert all(changed.values()), changed

    job = tmp_path / "worldtune" / "tiny_action" / "lora" / "checkpoints" / "model"
    saved = torch.load(job / "iter_000000002.pt", weights_only=True)
    for n, v in after.items():  # saved with the adapters, under their official names
        torch.testing.assert_close(saved[f"net.{n}"], v)
    assert not any(".base_layer." in k for k in saved)

    # Export folds the adapters into the base from load_path and keeps the trained embedders.
    want = trainer.model.family.merged_lora(dict(net.state_dict()), 4, 8.0)
    out = tmp_path / "export.pt"
    assert export.main([str(job / "iter_000000002.pt"), "--to", "pt", str(out)]) == 0
    exported = torch.load(out, weights_only=True)
    assert {k.removeprefix("net.") for k in exported if k.startswith("net.")} == set(want)
    for k, v in want.items():
        torch.testing.assert_close(exported[f"net.{k}"], v, rtol=0, atol=1e-6)
    for n, v in after.items():
        torch.testing.assert_close(exported[f"net.{n}"], v)
    # The merged file is a plain action net's: it loads strictly with the embedders in it.
    plain = instantiate(lora_job(data, base, tmp_path, "model.lora=null").model)
    plain.load_weights(exported)
    for n, v in after.items():
        torch.testing.assert_close(dict(plain.net.named_parameters())[n], v)


def test_predict2_action_lora_base_keeps_the_files_embedders_and_trains_them():
    """Predict2's recipe starts from the released action file: its embedders load into the
    LoRA net (and then train); a file missing any other key still fails naming it."""
    from framework.models.cosmos2.action import PREDICT2_ACTION, ActionConditionedDiT

    kw = dict(model_channels=64, num_blocks=1, num_heads=2, adaln_lora_dim=8, action_dim=6)
    torch.manual_seed(0)
    released = {f"net.{k}": v for k, v in ActionConditionedDiT(**kw).state_dict().items()}
    net = ActionConditionedDiT(**kw)
    PREDICT2_ACTION.add_lora(net, 4, 8.0, None)
    PREDICT2_ACTION.load_lora_base(net, released)
    params = dict(net.named_parameters())
    for name in ("action_embedder_B_D.fc1.weight", "action_embedder_B_3D.fc2.bias"):
        torch.testing.assert_close(params[name], released[f"net.{name}"])
        assert params[name].requires_grad
    assert not params["blocks.0.self_attn.q_proj.base_layer.weight"].requires_grad
    del released["net.blocks.0.mlp.layer1.weight"]
    with pytest.raises(ValueError, match=r"blocks\.0\.mlp\.layer1\.base_layer\.weight"):
        PREDICT2_ACTION.load_lora_base(net, released)
