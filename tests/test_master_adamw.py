"""AdamW over bf16 weights with fp32 master weights (optim.master_weights=true)."""

from __future__ import annotations

import pytest
import torch

import tests.toy_experiments  # noqa: F401  (registers toy_regression)
from framework.config import ConfigError, apply_overrides, get
from framework.trainer import Trainer
from framework.trainer.master_adamw import MasterAdamW, adamw_master_update_
from framework.trainer.optim import adamw
from framework.trainer.state import clip_by_norm_


def _pair(seed: int = 0):
    """The same weights as fp32 parameters and as bf16 parameters (values exact in bf16)."""
    g = torch.Generator().manual_seed(seed)
    # ranks 1 to 5 and dimensions of size 1, as a real net has (the compiled update once hit
    # dynamo's recompile limit on these when it took tensors unflattened)
    shapes = [(8, 5), (5,), (3, 4, 2), (1, 16), (4, 1, 3, 2, 2), (1,), (2, 1, 6), (9, 1)]
    values = [torch.randn(s, generator=g).bfloat16().float() for s in shapes]
    ref = [torch.nn.Parameter(v.clone()) for v in values]
    low = [torch.nn.Parameter(v.bfloat16()) for v in values]
    return ref, low, g


def _grads(ref, low, g, scale: float = 1.0):
    for p, q in zip(ref, low):
        grad = (scale * torch.randn(p.shape, generator=g)).bfloat16()
        p.grad, q.grad = grad.float(), grad.clone()


@pytest.mark.parametrize("compiled", [False, True])
@pytest.mark.slow
def test_masters_follow_torch_adamw_and_params_are_the_rounded_masters(compiled):
    ref, low, g = _pair()
    kw = {"lr": 1e-2, "weight_decay": 0.1, "betas": (0.9, 0.99), "eps": 1e-8}
    opt_ref = adamw(ref, fused=False, **kw)
    opt = adamw(low, master_weights=True, **kw)
    assert isinstance(opt, MasterAdamW)
    opt.compile = compiled
    # the decay group and the 1-D no-decay group are those of the fp32 optimizer
    assert [gr["weight_decay"] for gr in opt.param_groups] == [0.1, 0.0]
    torch._dynamo.reset()
    for _ in range(5):
        _grads(ref, low, g)
        opt_ref.step()
        opt.step()
    for p, q in zip(ref, low):
        master = opt.state[q]["master"]
        assert q.dtype == torch.bfloat16 and master.dtype == torch.float32
        torch.testing.assert_close(master, p.detach(), rtol=1e-6, atol=1e-7)
        assert torch.equal(q.detach(), master.bfloat16())
        # the update is small against bf16's step: without masters most of it would be lost
        assert not torch.equal(master, master.bfloat16().float())


def test_grad_scale_clips_as_scaling_the_gradients_does():
    ref, low, g = _pair(1)
    opt_ref = adamw(ref, lr=1e-2, weight_decay=0.0, fused=False)
    opt = adamw(low, lr=1e-2, weight_decay=0.0, master_weights=True)
    for _ in range(3):
        _grads(ref, low, g, scale=50.0)
        norm = torch.stack([p.grad.norm() for p in ref]).norm()
        clip_by_norm_(opt_ref, ref, norm, 1.0)  # scales ref's gradients in place
        clip_by_norm_(opt, low, norm, 1.0)  # sets grad_scale, gradients untouched
        assert opt.grad_scale is not None
        opt_ref.step()
        opt.step()
        opt.grad_scale = None
    for p, q in zip(ref, low):
        torch.testing.assert_close(opt.state[q]["master"], p.detach(), rtol=1e-5, atol=1e-7)


def test_state_dict_round_trip_keeps_fp32_masters():
    _, low, g = _pair(2)
    opt = adamw(low, lr=1e-2, weight_decay=0.1, master_weights=True)
    for p in low:
        p.grad = torch.randn(p.shape, generator=g).bfloat16()
    opt.step()
    saved = {k: v for k, v in opt.state_dict().items()}
    masters = [opt.state[p]["master"].clone() for p in low]
    fresh = adamw(low, lr=1e-2, weight_decay=0.1, master_weights=True)
    fresh.load_state_dict(saved)
    for p, m in zip(low, masters):
        # torch's own loader would have cast these to the bf16 parameter's dtype
        for key in ("master", "exp_avg", "exp_avg_sq"):
            assert fresh.state[p][key].dtype == torch.float32
        assert torch.equal(fresh.state[p]["master"], m)
        assert float(fresh.state[p]["step"]) == 1.0


def test_update_formula_by_hand():
    p, m, v, master = (torch.zeros(1, dtype=torch.bfloat16), *torch.zeros(2, 1), torch.ones(1))
    g = torch.tensor([0.5], dtype=torch.bfloat16)
    lr, b1, b2, eps, wd = 0.1, 0.9, 0.99, 1e-8, 0.5
    hp = torch.tensor([lr, b1, b2, eps, wd, 1 - b1, (1 - b2) ** 0.5, 1.0 / 2.0])  # grad_scale 2
    adamw_master_update_(p, g, master, m, v, hp)
    gs = 0.25
    m1, v1 = (1 - b1) * gs, (1 - b2) * gs * gs
    want = 1 * (1 - lr * wd) - lr * (m1 / (1 - b1)) / ((v1 / (1 - b2)) ** 0.5 + eps)
    assert float(master) == pytest.approx(want, rel=1e-6)
    assert float(m) == pytest.approx(m1) and float(v) == pytest.approx(v1)
    assert float(p) == float(torch.tensor(want).bfloat16())


def _cfg(tmp_path, *overrides):
    return apply_overrides(
        get("toy_regression"),
        [
            f"job.output_root={tmp_path}",
            "+optim.master_weights=true",
            "train.precision=bf16",
            "data.num_workers=0",
            *overrides,
        ],
    )


@pytest.mark.parametrize("fmt", ["pt", "dcp"])
def test_trainer_runs_bf16_weights_and_resumes_exactly(tmp_path, fmt):
    """Format dcp goes through torch.distributed.checkpoint's optimizer state dict, which
    initialises the state with a zero-learning-rate step before loading it."""
    fmt_ = f"+checkpoint.format={fmt}"  # the toy config has no such key
    straight = Trainer(_cfg(tmp_path, "job.name=straight", "train.max_steps=8", fmt_))
    assert straight.fit() is True
    assert all(p.dtype == torch.bfloat16 for p in straight.params)
    assert isinstance(straight.optimizer, MasterAdamW)
    first = Trainer(_cfg(tmp_path, "job.name=split", "train.max_steps=4", fmt_))
    first.fit()
    resumed = Trainer(_cfg(tmp_path, "job.name=split", "train.max_steps=8", fmt_))
    assert resumed.step == 4
    resumed.fit()
    for p, q in zip(straight.params, resumed.params):
        assert torch.equal(p, q)
        assert torch.equal(
            straight.optimizer.state[p]["master"], resumed.optimizer.state[q]["master"]
        )


@pytest.mark.parametrize(
    ("overrides", "says"),
    [
        (["train.precision=fp32"], "train.precision=bf16"),
        (["parallel.strategy=fsdp"], "parallel.strategy=fsdp"),
    ],
)
def test_master_weights_refused_where_they_cannot_work(tmp_path, overrides, says):
    with pytest.raises(ConfigError, match=says):
        Trainer(_cfg(tmp_path, "job.name=bad", *overrides))
