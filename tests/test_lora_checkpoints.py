"""A LoRA run from `checkpoint.load_path` saves its adapters, not the base (both checkpoint
formats), resumes exactly with the base read again from load_path, and the merge and export
commands fold the adapters into that base; frozen weights can live in bf16 under autocast."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from framework.config import apply_overrides, get, instantiate, load_all
from framework.trainer import Trainer
from framework.trainer import checkpoint_dcp as C
from framework.trainer.state import frozen_to_

LORA = "model.lora={rank:4,alpha:8,targets:'q_proj,v_proj,mlp.layer1'}"
pytestmark = pytest.mark.filterwarnings("ignore:LoRA rank=4, alpha=8")


def overrides(out: Path) -> list[str]:
    return [
        f"job.output_root={out}",
        f"data.dataset.dataset_dir={out.parent}/syn",
        "data.dataset.num_videos=4",
        "model.net.model_channels=64",
        "model.net.num_heads=1",
        "model.net.num_blocks=2",
        "~hooks.eval",
        "~hooks.sample",
        "~hooks.loss_curve",
        "~hooks.progress",
        "train.max_steps=4",
        "checkpoint.save_iter=2",
        "data.batch_size=2",
        "logging.every=1",
        "optim.lr=1e-2",
    ]


def tiny(out: Path, *extra: str):
    load_all()
    return apply_overrides(get("tiny_gr1"), [*overrides(out), *extra])


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """An official-layout base file: a plain tiny net trained one step."""
    out = tmp_path_factory.mktemp("lora") / "runs"
    Trainer(tiny(out, "job.name=base", "train.max_steps=1")).fit()
    return out / "worldtune" / "tiny" / "base" / "checkpoints" / "model" / "iter_000000001.pt"


def lora_run(base: Path, out: Path, name: str, fmt: str, *extra: str) -> Trainer:
    cfg = tiny(out, f"job.name={name}", LORA, f"checkpoint.load_path={base}", *extra)
    cfg.checkpoint.format = fmt
    t = Trainer(cfg)
    t.fit()
    return t


def trainable(t: Trainer) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in t.model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("fmt", ["pt", "dcp"])
def test_lora_checkpoints_hold_the_adapters_and_resume_exactly(base, tmp_path, fmt):
    full = lora_run(base, tmp_path, "full", fmt)
    ckpt = tmp_path / "worldtune" / "tiny" / "full" / "checkpoints"
    if fmt == "pt":
        keys = set(torch.load(ckpt / "model" / "iter_000000002.pt", weights_only=True))
    else:
        keys = {k.removeprefix("model.") for k in C.stored_keys(ckpt / "optim" / "iter_000000002")}
        keys = {k for k in keys if not k.startswith("optim.")}
    assert keys and all(".lora_A." in k or ".lora_B." in k for k in keys)
    final = torch.load(ckpt / "model" / "iter_000000004.pt", weights_only=True)
    assert set(final) == set(trainable(full))  # adapters only: no base_layer weights
    # Stop at 2, resume to 4: the base comes from load_path again, the adapters and AdamW from
    # the checkpoint.
    lora_run(base, tmp_path, "resumed", fmt, "train.max_steps=2")
    resumed = lora_run(base, tmp_path, "resumed", fmt)
    a, b = trainable(resumed), trainable(full)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("fmt", ["pt", "dcp"])
def test_merge_and_export_fold_the_adapters_into_the_load_path_base(base, tmp_path, fmt):
    from framework import export
    from framework.models.cosmos2 import merge_lora

    t = lora_run(base, tmp_path, "job", fmt)
    # What the live net computes, as plain official keys.
    want = t.model.family.merged_lora(dict(t.model.net.state_dict()), 4, 8.0)
    ckpt = tmp_path / "worldtune" / "tiny" / "job" / "checkpoints"
    step2 = ckpt / ("model/iter_000000002.pt" if fmt == "pt" else "optim/iter_000000002")
    final = ckpt / "model" / "iter_000000004.pt"
    assert merge_lora.main([str(final), str(tmp_path / "merged.pt")]) == 0
    merged = torch.load(tmp_path / "merged.pt", weights_only=True)
    merged = {k.removeprefix("net."): v for k, v in merged.items()}
    assert merged.keys() == want.keys()
    for k in want:
        torch.testing.assert_close(merged[k], want[k], rtol=0, atol=1e-6)
    assert export.main([str(final), "--to", "pt", str(tmp_path / "export.pt")]) == 0
    exported = torch.load(tmp_path / "export.pt", weights_only=True)
    for k in want:
        torch.testing.assert_close(exported[f"net.{k}"], want[k], rtol=0, atol=1e-6)
    # A step saved mid-run: merged from the model file (pt) or the sharded folder (dcp).
    assert merge_lora.main([str(step2), str(tmp_path / "m2.pt")]) == 0
    assert export.main([str(step2), "--to", "pt", str(tmp_path / "e2.pt")]) == 0
    m2 = torch.load(tmp_path / "m2.pt", weights_only=True)
    e2 = torch.load(tmp_path / "e2.pt", weights_only=True)
    assert m2.keys() == {f"net.{k}" for k in want}
    assert not torch.equal(
        m2["net.blocks.0.self_attn.q_proj.weight"], merged["blocks.0.self_attn.q_proj.weight"]
    )
    for k, v in m2.items():
        torch.testing.assert_close(e2[k], v, rtol=0, atol=1e-6)


def test_frozen_base_in_bf16_halves_its_memory_and_trains_under_autocast(tmp_path):
    """The trainer's `frozen_to_` under bf16 autocast (CPU autocast stands in for CUDA's)."""
    cfg = tiny(tmp_path, LORA)
    torch.manual_seed(0)
    model = instantiate(cfg.model)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    assert frozen_to_(model, torch.bfloat16) == 2 * frozen  # 4 -> 2 bytes per frozen value
    assert all(
        p.dtype == (torch.float32 if p.requires_grad else torch.bfloat16)
        for p in model.parameters()
    )
    b, t, h, w = 2, 5, 24, 24
    batch = {
        "video": torch.randint(0, 255, (b, 3, t, h, w), dtype=torch.uint8),
        "t5_text_embeddings": torch.randn(b, 32, 1024),
        "fps": torch.full((b,), 2.0),
    }
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, _ = model.training_step(batch, 0)
    loss.backward()
    assert torch.isfinite(loss)
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None and g.dtype == torch.float32 for g in grads)
    assert all(p.grad is None for p in model.parameters() if not p.requires_grad)
