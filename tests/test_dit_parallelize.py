"""The shared parallelize (framework/models/dit/parallelize.py: activation checkpointing, compile,
FSDP2 over `net.units()`) on every family's net: same loss and gradients as the plain net, official
state-dict names kept, attention outputs saved under "selective", real sharding on 2 processes."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
import torch.distributed as dist
from torch.utils._python_dispatch import TorchDispatchMode

from framework.models.dit.parallelize import SDPA_OPS, parallelize_net
from tests import test_cosmos1_net as p1
from tests import test_cosmos2_net as p2


@dataclass(frozen=True)
class Case:
    small: Callable[[], torch.nn.Module]
    forward: Callable[..., torch.Tensor]  # (net, x, timesteps, text) -> output
    sharded: str  # a Linear weight inside the first unit
    attention_units: int  # attention calls a full recompute reruns (2 blocks: self + cross)


def _p25_small() -> torch.nn.Module:
    from framework.models.cosmos2_5.net import Predict25DiT

    torch.manual_seed(0)
    net = Predict25DiT(**{**p2.SMALL, "crossattn_proj_in_channels": 24})
    with torch.no_grad():  # random adaLN outputs, so every path matters
        for p in net.parameters():
            p.normal_(0.0, 1.0 / p.shape[-1] ** 0.5)
    return net


CASES = {
    "cosmos2": Case(p2._small, lambda n, x, t, c: n(x, t, c), "blocks.0.mlp.layer1.weight", 4),
    "cosmos1": Case(
        p1._small,
        lambda n, x, t, c: n(x, t[:, 0], c, fps=4.0),
        "blocks.block0.blocks.2.block.layer1.weight",
        4,
    ),
    "cosmos2_5": Case(
        _p25_small, lambda n, x, t, c: n(x, t * 1000, c[..., :24]), "blocks.0.mlp.layer1.weight", 4
    ),
}


class _CountSDPA(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.calls += func in SDPA_OPS
        return func(*args, **(kwargs or {}))


def _loss_and_grads(case: Case, net, count_backward: bool = False):
    x, ts, text = p2._inputs()
    net.zero_grad(set_to_none=True)
    loss = case.forward(net, x, ts, text).float().square().mean()
    counter = _CountSDPA()
    with counter if count_backward else contextlib.nullcontext():
        loss.backward()
    grads = {n: p.grad.clone() for n, p in net.named_parameters()}
    return loss.detach(), grads, counter.calls


@pytest.mark.parametrize("family", sorted(CASES))
@pytest.mark.parametrize("mode", ["full", "selective"])
def test_checkpointing_same_grads_and_attention_saved(family, mode):
    case = CASES[family]
    ref_loss, ref_grads, base_calls = _loss_and_grads(case, case.small(), count_backward=True)
    assert base_calls == 0  # without checkpointing backward never reruns attention
    net = case.small()
    keys, params = list(net.state_dict()), [n for n, _ in net.named_parameters()]
    parallelize_net(net, activation_checkpointing=mode, fsdp=False)
    loss, grads, calls = _loss_and_grads(case, net, count_backward=True)
    # Full reruns every attention; selective keeps their outputs (and recomputes the rest).
    assert calls == (case.attention_units if mode == "full" else 0)
    assert list(net.state_dict()) == keys and [n for n, _ in net.named_parameters()] == params
    torch.testing.assert_close(loss, ref_loss, rtol=0, atol=0)
    for name, g in ref_grads.items():
        torch.testing.assert_close(grads[name], g, rtol=1e-6, atol=1e-7)


def test_checkpointing_mode_is_validated():
    with pytest.raises(ValueError, match="fix parallel.activation_checkpointing"):
        parallelize_net(p2._small(), activation_checkpointing="sometimes", fsdp=False)
    with pytest.raises(RuntimeError, match="torch.distributed to be initialized"):
        parallelize_net(p2._small(), fsdp=True)


@pytest.mark.slow
@pytest.mark.parametrize("family", sorted(CASES))
def test_compiled_checkpointed_units_match_eager(family):
    case = CASES[family]
    ref_loss, ref_grads, _ = _loss_and_grads(case, case.small())
    net = parallelize_net(
        case.small(),
        activation_checkpointing="selective",
        compile=True,
        fsdp=False,
        compile_backend="aot_eager",
    )
    loss, grads, _ = _loss_and_grads(case, net)
    assert list(net.state_dict()) == list(case.small().state_dict())
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-6)
    for name, g in ref_grads.items():
        torch.testing.assert_close(grads[name], g, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("family", sorted(CASES))
@pytest.mark.parametrize("shape", [(1,), (1, 1)])
def test_fsdp2_single_process_gloo(tmp_path, family, shape):
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import DTensor

    case = CASES[family]
    ref_loss, ref_grads, _ = _loss_and_grads(case, case.small())
    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/store", rank=0, world_size=1)
    try:
        names = ("shard",) if len(shape) == 1 else ("replicate", "shard")
        mesh = init_device_mesh("cpu", shape, mesh_dim_names=names)
        net = parallelize_net(case.small(), mesh=mesh, activation_checkpointing="full")
        sd = net.state_dict()
        assert list(sd) == list(case.small().state_dict())
        assert isinstance(sd[case.sharded], DTensor)
        loss, grads, _ = _loss_and_grads(case, net)
        torch.testing.assert_close(loss, ref_loss, rtol=1e-6, atol=1e-7)
        for name, g in ref_grads.items():
            g_full = grads[name].full_tensor() if isinstance(grads[name], DTensor) else grads[name]
            torch.testing.assert_close(g_full, g, rtol=1e-5, atol=1e-7)
    finally:
        dist.destroy_process_group()


def _fsdp_worker(rank: int, store: str, family: str) -> None:
    from torch.distributed.device_mesh import init_device_mesh

    case = CASES[family]
    ref_loss, ref_grads, _ = _loss_and_grads(case, case.small())
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        net = parallelize_net(
            case.small(), mesh=init_device_mesh("cpu", (2,)), activation_checkpointing="full"
        )
        weight = net.get_parameter(case.sharded)
        assert weight.to_local().shape[0] == weight.shape[0] // 2  # really sharded
        loss, grads, _ = _loss_and_grads(case, net)  # same batch on both ranks: mean equals ref
        torch.testing.assert_close(loss, ref_loss, rtol=1e-6, atol=1e-7)
        for name, g in ref_grads.items():
            torch.testing.assert_close(grads[name].full_tensor(), g, rtol=1e-5, atol=1e-7)
        dist.barrier()  # both ranks past every check and collective
    finally:
        dist.destroy_process_group()
    # About one run in fifteen, a rank that passed every check still died with SIGABRT while
    # the interpreter shut down ("terminate called without an active exception": a C++ thread
    # left joinable at static destruction; which one was not found, with or without the barrier
    # above). The checks are done by then, so a passing rank leaves without that teardown.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


@pytest.mark.dist
@pytest.mark.slow
@pytest.mark.parametrize("family", ["cosmos1", "cosmos2"])
def test_fsdp2_two_processes_gloo(tmp_path, family):
    torch.multiprocessing.spawn(_fsdp_worker, args=(str(tmp_path / "store"), family), nprocs=2)
