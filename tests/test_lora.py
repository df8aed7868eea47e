"""LoRA via peft on MiniTrainDiT: counts, names, merge, loading."""

from __future__ import annotations

import pytest
import torch

from framework.models.cosmos2 import MiniTrainDiT, load_official, net_config
from framework.models.cosmos2.lora import (
    apply_lora,
    load_base_into_lora,
    lora_state_dict,
    merge_lora_state_dict,
)

SMALL = dict(
    model_channels=64, num_blocks=2, num_heads=2, crossattn_emb_channels=32, adaln_lora_dim=16
)


def _small(seed: int) -> MiniTrainDiT:
    torch.manual_seed(seed)
    net = MiniTrainDiT(**SMALL)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0.0, 1.0 / p.shape[-1] ** 0.5)
    return net


def _inputs():
    g = torch.Generator().manual_seed(0)
    return (
        torch.randn(2, 16, 2, 4, 4, generator=g),
        torch.rand(2, 2, generator=g),
        torch.randn(2, 10, 32, generator=g),
    )


def test_2b_rank16_lora_parameter_count():
    with torch.device("meta"):
        net = apply_lora(MiniTrainDiT(**net_config("2B")), rank=16, alpha=16)
    trainable = sum(p.numel() for p in net.parameters() if p.requires_grad)
    assert trainable == 22_937_600
    keys = net.state_dict().keys()
    for path in (
        "blocks.3.self_attn.q_proj",
        "blocks.3.cross_attn.v_proj",
        "blocks.3.self_attn.output_proj",
        "blocks.3.mlp.layer2",
    ):
        assert {
            f"{path}.base_layer.weight",
            f"{path}.lora_A.default.weight",
            f"{path}.lora_B.default.weight",
        } <= keys
    assert "blocks.3.adaln_modulation_mlp.1.weight" in keys  # not a target


def test_lora_starts_as_identity_and_only_lora_trains():
    net = _small(0)
    x, ts, text = _inputs()
    with torch.no_grad():
        before = net(x, ts, text)
    apply_lora(net, rank=4, alpha=4)
    with torch.no_grad():
        torch.testing.assert_close(net(x, ts, text), before)
    net(x, ts, text).square().mean().backward()
    for name, p in net.named_parameters():
        if ".lora_" in name:
            assert p.requires_grad and p.dtype == torch.float32
        else:
            assert not p.requires_grad and p.grad is None
    lora_b = net.blocks[0].mlp.layer1.lora_B["default"].weight
    assert lora_b.grad is not None and lora_b.grad.abs().sum() > 0


def test_merged_state_dict_matches_lora_net_and_loads_strictly():
    with pytest.warns(UserWarning, match="alpha == rank"):
        net = apply_lora(_small(0), rank=4, alpha=8)
    with torch.no_grad():  # nonzero B so the merge is exercised
        for name, p in net.named_parameters():
            if ".lora_" in name:
                p.normal_(0.0, 0.2)
    x, ts, text = _inputs()
    with torch.no_grad():
        want = net(x, ts, text)
    sd = {"net." + k: v for k, v in net.state_dict().items()}
    merged = merge_lora_state_dict(sd, alpha=8, rank=4)
    assert not any(".lora_" in k or "base_layer" in k for k in merged)
    plain = _small(1)
    load_official(plain, merged)  # strict: every official key present, nothing extra
    with torch.no_grad():
        got = plain(x, ts, text)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    # The scale is alpha / rank: merging with the wrong alpha gives a different net.
    load_official(plain, merge_lora_state_dict(sd, alpha=4, rank=4))
    with torch.no_grad():
        assert (plain(x, ts, text) - want).abs().max() > 1e-3
    assert set(lora_state_dict(net)) == {k[4:] for k in sd if ".lora_" in k}


def test_load_base_into_lora_net():
    base = _small(0)
    x, ts, text = _inputs()
    with torch.no_grad():
        want = base(x, ts, text)
    net = apply_lora(_small(5), rank=4, alpha=4)
    b_before = net.blocks[1].self_attn.q_proj.lora_B["default"].weight.clone()
    load_base_into_lora(net, {"net." + k: v for k, v in base.state_dict().items()})
    with torch.no_grad():
        torch.testing.assert_close(net(x, ts, text), want)  # B is zero: base output
    torch.testing.assert_close(net.blocks[1].self_attn.q_proj.lora_B["default"].weight, b_before)
    sd = base.state_dict()
    del sd["blocks.0.mlp.layer1.weight"]
    with pytest.raises(ValueError, match="missing: blocks.0.mlp.layer1.base_layer.weight"):
        load_base_into_lora(net, sd)


def test_bad_targets_are_reported():
    with pytest.raises(ValueError, match="matched no Linear"), pytest.warns(UserWarning):
        apply_lora(_small(0), rank=128, alpha=128, targets="to_q,to_k")
