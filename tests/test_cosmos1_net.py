"""GeneralDIT (Cosmos-Predict1): sizes, official key names, strict loading and the extra position
embedding decision, forward semantics, RoPE/time/position formulas, FLOPs, LoRA, checkpointing,
compile and FSDP2."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from framework.models.cosmos1 import (
    GeneralDIT,
    apply_lora,
    forward_flops,
    load_base_into_lora,
    load_official,
    merge_lora_state_dict,
    net_config,
)
from framework.models.cosmos1.position import LearnablePosEmbAxis, VideoRopePosition3DEmb

SMALL = dict(
    model_channels=96,
    num_blocks=2,
    num_heads=2,
    crossattn_emb_channels=32,
    adaln_lora_dim=16,
    rope_h_extrapolation_ratio=2.0,
    rope_w_extrapolation_ratio=3.0,
    rope_t_extrapolation_ratio=2.0,
)
# docs/upstream/cosmos_predict1.md §4.5 minus the 128 weights of the logvar head (not the net's).
COUNTS = {
    ("7B", True): 7_236_208_640,
    ("7B", False): 7_234_701_312,
    ("14B", True): 14_267_169_792,
    ("14B", False): 14_265_285_632,
}


def _meta(size: str, extra: bool = True) -> GeneralDIT:
    with torch.device("meta"):
        return GeneralDIT(**net_config(size), extra_per_block_abs_pos_emb=extra)


def _small(seed: int = 0, **kwargs) -> GeneralDIT:
    torch.manual_seed(seed)
    net = GeneralDIT(**{**SMALL, **kwargs})
    with torch.no_grad():  # upstream init zeroes adaLN outputs; randomise so every path matters
        for p in net.parameters():
            p.normal_(0.0, 1.0 / p.shape[-1] ** 0.5)
    return net


def _inputs(b: int = 2, t: int = 3, h: int = 4, w: int = 6, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, 16, t, h, w, generator=g)
    ts = torch.rand(b, generator=g)
    text = torch.randn(b, 20, 32, generator=g)
    return x, ts, text


@pytest.mark.parametrize("size,extra", list(COUNTS))
def test_parameter_count(size, extra):
    count = sum(p.numel() for p in _meta(size, extra).parameters())
    print(f"{size} extra_per_block_abs_pos_emb={extra}: {count:,} (+128 logvar outside the net)")
    assert count == COUNTS[size, extra]


def test_official_key_names_and_shapes():
    sd = _meta("7B").state_dict()
    d = 4096
    outer = {k: tuple(v.shape) for k, v in sd.items() if not k.startswith("blocks.")}
    assert outer == {
        "x_embedder.proj.1.weight": (d, 72),
        "pos_embedder.seq": (128,),
        "extra_pos_embedder.pos_emb_h": (120, d),
        "extra_pos_embedder.pos_emb_w": (120, d),
        "extra_pos_embedder.pos_emb_t": (128, d),
        "t_embedder.1.linear_1.weight": (d, d),
        "t_embedder.1.linear_2.weight": (3 * d, d),
        "affline_norm.weight": (d,),
        "final_layer.adaLN_modulation.1.weight": (256, d),
        "final_layer.adaLN_modulation.2.weight": (2 * d, 256),
        "final_layer.linear.weight": (64, d),
    }
    prefix = "blocks.block5.blocks."
    block = {k[len(prefix) :]: tuple(v.shape) for k, v in sd.items() if k.startswith(prefix)}
    expected = {}
    for j, ctx in ((0, d), (1, 1024)):
        a = f"{j}.block.attn."
        expected.update(
            {
                a + "to_q.0.weight": (d, d),
                a + "to_q.1.weight": (128,),
                a + "to_k.0.weight": (d, ctx),
                a + "to_k.1.weight": (128,),
                a + "to_v.0.weight": (d, ctx),
                a + "to_out.0.weight": (d, d),
            }
        )
    expected.update({"2.block.layer1.weight": (4 * d, d), "2.block.layer2.weight": (d, 4 * d)})
    for j in range(3):
        expected.update(
            {
                f"{j}.adaLN_modulation.1.weight": (256, d),
                f"{j}.adaLN_modulation.2.weight": (3 * d, 256),
            }
        )
    assert block == expected
    assert {k.split(".")[1] for k in sd if k.startswith("blocks.")} == {
        f"block{i}" for i in range(28)
    }
    assert not any(k.endswith(".bias") for k in sd)
    assert "extra_pos_embedder.pos_emb_h" not in _meta("7B", extra=False).state_dict()


def test_init_follows_upstream():
    torch.manual_seed(0)
    net = GeneralDIT(**SMALL)
    for sub in net.sub_blocks():
        assert not sub.adaLN_modulation[2].weight.any()  # sub-blocks start as identity
    assert net.final_layer.adaLN_modulation[2].weight.any()  # upstream does not zero this one
    assert torch.equal(net.pos_embedder.seq, torch.arange(128.0))
    assert net.extra_pos_embedder.pos_emb_t.std().item() == pytest.approx(0.02, rel=0.05)
    assert net.t_embedder[1].linear_1.weight.std().item() == pytest.approx(0.02, rel=0.05)


def _official_file(net: GeneralDIT) -> dict[str, torch.Tensor]:
    """What an official model.pt holds (§4.4, §4.6): bf16 `net.` weights, the logvar head and
    TransformerEngine extra state."""
    sd = {"net." + k: v.to(torch.bfloat16) for k, v in net.state_dict().items()}
    sd["net.pos_embedder.seq"] = torch.arange(128.0)
    sd.update(
        {
            "logvar.0.freqs": torch.randn(128),
            "logvar.0.phases": torch.rand(128),
            "logvar.1.weight": torch.randn(1, 128),
            "net.blocks.block0.blocks.0.block.attn.attn_op._extra_state": torch.zeros(0),
            "net.affline_norm._extra_state": torch.zeros(0),
        }
    )
    return sd


def test_load_official_strict_and_clear_errors():
    src, dst = _small(0), _small(1)
    sd = _official_file(src)
    load_official(dst, sd)
    for k, v in src.state_dict().items():
        torch.testing.assert_close(dst.state_dict()[k], v.to(torch.bfloat16).float())

    bias = "net.blocks.block0.blocks.2.block.layer1.bias"
    with pytest.raises(ValueError, match=r"1 unexpected: blocks.block0.blocks.2.block.layer1.bias"):
        load_official(dst, {**sd, bias: torch.zeros(384)})
    missing = {k: v for k, v in sd.items() if k != "net.final_layer.linear.weight"}
    with pytest.raises(ValueError, match=r"1 missing: final_layer.linear.weight"):
        load_official(dst, missing)
    with pytest.raises(ValueError, match=r"wrong shape: x_embedder.proj.1.weight"):
        load_official(dst, {**sd, "net.x_embedder.proj.1.weight": torch.zeros(96, 68)})
    # Stripped dicts (e.g. converted from diffusers) lack the rope buffer: it is filled in.
    stripped = {k[4:]: v for k, v in sd.items() if k.startswith("net.")}
    del stripped["pos_embedder.seq"]
    dst.pos_embedder.seq.fill_(-1.0)
    load_official(dst, stripped)
    assert torch.equal(dst.pos_embedder.seq, torch.arange(128.0))


def test_extra_pos_emb_mismatch_fails_loudly_or_is_dropped_by_name():
    with_extra, without = _small(0), _small(1, extra_per_block_abs_pos_emb=False)
    with pytest.raises(ValueError, match=r"extra_per_block_abs_pos_emb=False; build it with True"):
        load_official(without, _official_file(with_extra))
    # Upstream's instruction run dropped the embedding; here only when asked to, by name.
    load_official(without, _official_file(with_extra), ignore=("extra_pos_embedder.*",))
    torch.testing.assert_close(
        without.final_layer.linear.weight,
        with_extra.final_layer.linear.weight.bfloat16().float(),
    )
    with pytest.raises(ValueError, match=r"build the net with\s+extra_per_block_abs_pos_emb=False"):
        load_official(_small(2), _official_file(without))


def test_load_ema_selects_net_ema():
    net, ema, dst = _small(0), _small(2), _small(3)
    sd = {**_official_file(net), **{"net_ema." + k: v for k, v in ema.state_dict().items()}}
    load_official(dst, sd, ema=True)
    torch.testing.assert_close(dst.state_dict(), ema.state_dict())
    with pytest.raises(ValueError, match="no 'net_ema.' keys"):
        load_official(dst, _official_file(net), ema=True)


def test_output_shape_and_dtype():
    net = _small()
    x, ts, text = _inputs()
    out = net(x, ts, text, fps=4.0)
    assert out.shape == (2, 16, 3, 4, 6) and out.dtype == torch.float32
    out16 = net.to(torch.bfloat16)(x.bfloat16(), ts, text, fps=4.0)
    assert out16.dtype == torch.bfloat16
    assert ((out16.float() - out).norm() / out.norm()).item() < 0.05


@torch.no_grad()
def test_timesteps_fps_and_mask_semantics():
    net = _small()
    x, ts, text = _inputs()
    base = net(x, ts, text, fps=4.0)
    torch.testing.assert_close(net(x, ts[:, None], text, fps=4.0), base)  # [B, 1] == [B]
    # One noise level per sample; samples are independent of each other.
    ts2 = ts.clone()
    ts2[0] += 0.3
    moved = net(x, ts2, text, fps=4.0)
    assert (moved[0] - base[0]).abs().max() > 1e-3
    torch.testing.assert_close(moved[1], base[1])
    # fps: None means 24; positions scale with 24 / fps; per-sample fps = separate runs.
    torch.testing.assert_close(net(x, ts, text), net(x, ts, text, fps=24.0))
    assert (net(x, ts, text, fps=24.0) - base).abs().max() > 1e-3
    mixed = net(x, ts, text, fps=torch.tensor([4.0, 30.0]))
    torch.testing.assert_close(mixed[0], base[0])
    torch.testing.assert_close(mixed[1:], net(x[1:], ts[1:], text[1:], fps=30.0))
    # No condition mask = zero mask; a set mask changes the output.
    zeros = torch.zeros(2, 1, 3, 4, 6)
    kw = dict(fps=4.0)
    torch.testing.assert_close(
        net(x, ts, text, **kw, condition_video_input_mask_B_C_T_H_W=zeros), base
    )
    assert (
        net(x, ts, text, **kw, condition_video_input_mask_B_C_T_H_W=zeros + 1) - base
    ).abs().max() > 1e-3
    # Padding mask: nearest resize of a pixel mask equals passing it at latent size.
    latent_pm = (torch.rand(2, 1, 4, 6) > 0.5).float()
    pixel_pm = latent_pm.repeat_interleave(8, 2).repeat_interleave(8, 3)
    torch.testing.assert_close(
        net(x, ts, text, **kw, padding_mask=pixel_pm),
        net(x, ts, text, **kw, padding_mask=latent_pm),
    )
    assert (net(x, ts, text, **kw, padding_mask=latent_pm) - base).abs().max() > 1e-3
    # RoPE positions do not read the seq buffer (a meta-materialised net computes the same).
    net.pos_embedder.seq.fill_(float("nan"))
    torch.testing.assert_close(net(x, ts, text, fps=4.0), base)


def test_input_errors_are_clear():
    net = _small()
    x, ts, text = _inputs()
    with pytest.raises(ValueError, match="divisible by the patch"):
        net(x[..., :5], ts, text)
    with pytest.raises(ValueError, match=r"timesteps must be \[B\] or \[B, 1\] with B=2"):
        net(x, ts[:, None].expand(2, 3), text)
    with pytest.raises(ValueError, match=r"x must be \[B, 16"):
        net(x[:, :15], ts, text)
    with pytest.raises(ValueError, match="one value per sample"):
        net(x, ts, text, fps=torch.tensor([4.0, 4.0, 4.0]))
    with pytest.raises(ValueError, match="exceeds the RoPE limits"):
        net.pos_embedder.angles(1, 121, 4, torch.device("cpu"))


def test_rope_angles_by_hand():
    rh, rw, rt, fps = 1.0, 2.0, 2.0, 4.0
    rope = VideoRopePosition3DEmb(128, rh, rw, rt, 120, 120, 128)
    t, h, w = 3, 5, 7
    angles = rope.angles(t, h, w, torch.device("cpu"), torch.tensor([fps]))[0]
    assert angles.shape == (t * h * w, 64) and angles.dtype == torch.float32
    theta_t = 10000 * rt ** (44 / 42)  # ~20671 for the 7B (§4.3)
    theta_h, theta_w = 10000 * rh ** (42 / 40), 10000 * rw ** (42 / 40)
    assert theta_t == pytest.approx(20671, abs=1)
    for pt, ph, pw in [(0, 0, 0), (2, 4, 6), (1, 3, 2)]:
        want = (
            [pt * 24 / fps * theta_t ** (-2 * j / 44) for j in range(22)]  # positions 0, 6, 12
            + [ph * theta_h ** (-2 * j / 42) for j in range(21)]
            + [pw * theta_w ** (-2 * j / 42) for j in range(21)]
        )
        got = angles[(pt * h + ph) * w + pw]
        torch.testing.assert_close(got, torch.tensor(want), rtol=1e-5, atol=1e-5)


def test_extra_pos_emb_by_hand():
    torch.manual_seed(0)
    emb = LearnablePosEmbAxis(8, 4, 5, 3)
    for p in emb.parameters():
        torch.nn.init.normal_(p)
    out = emb(2, 3, 4)
    assert out.shape == (1, 2 * 3 * 4, 8)
    raw = emb.pos_emb_t[1] + emb.pos_emb_h[2] + emb.pos_emb_w[3]
    want = raw / (1e-6 + raw.norm() / math.sqrt(8))
    torch.testing.assert_close(out[0, (1 * 3 + 2) * 4 + 3], want)


def test_flops_match_torch_flop_counter():
    net = _small()
    x, ts, text = _inputs(b=1, t=2, h=4, w=6)
    counter = FlopCounterMode(display=False)
    # The math backend decomposes attention into bmm, which the counter sees on CPU.
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), counter:
        net(x, ts, text)
    assert forward_flops(net, 2, 4, 6, text_len=20) == counter.get_total_flops()


# ---- LoRA ----


def test_lora_apply_load_base_and_merge():
    base = _small(0)
    x, ts, text = _inputs()
    with torch.no_grad():
        ref = base(x, ts, text)
    net = apply_lora(_small(5), rank=4, alpha=4)
    trainable = [n for n, p in net.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    assert any("to_q.0.lora_A" in n for n in trainable) and any(
        "layer2.lora_B" in n for n in trainable
    )
    load_base_into_lora(net, {"net." + k: v for k, v in base.state_dict().items()})
    with torch.no_grad():
        torch.testing.assert_close(net(x, ts, text), ref)  # B = 0: the base output
        for name, p in net.named_parameters():
            if ".lora_B." in name:
                p.normal_(0.0, 0.1)
        lora_out = net(x, ts, text)
    merged = merge_lora_state_dict(net.state_dict(), alpha=4, rank=4)
    plain = _small(6)
    load_official(plain, merged)
    with torch.no_grad():
        torch.testing.assert_close(plain(x, ts, text), lora_out, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="matched no Linear layer of GeneralDIT"):
        apply_lora(_small(), targets="q_proj")


# The shared parallelize on this net: tests/test_dit_parallelize.py.
