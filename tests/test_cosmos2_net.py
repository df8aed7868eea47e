"""MiniTrainDiT: sizes, official key names, strict loading, layout and formula checks."""

from __future__ import annotations

import math
import pickle

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from framework.io import UnsafeFileError, read_checkpoint
from framework.models.cosmos2 import (
    MiniTrainDiT,
    forward_flops,
    load_official,
    net_config,
)
from framework.models.dit.embeddings import Patchify, Timesteps
from framework.models.dit.rope import Rope3D

SMALL = dict(
    model_channels=96,
    num_blocks=2,
    num_heads=2,
    crossattn_emb_channels=32,
    adaln_lora_dim=16,
    rope_h_extrapolation_ratio=3.0,
    rope_w_extrapolation_ratio=3.0,
)


def _meta(size: str) -> MiniTrainDiT:
    with torch.device("meta"):
        return MiniTrainDiT(**net_config(size))


def _small(seed: int = 0) -> MiniTrainDiT:
    torch.manual_seed(seed)
    net = MiniTrainDiT(**SMALL)
    with torch.no_grad():  # upstream init zeroes adaLN outputs; randomise so every path matters
        for p in net.parameters():
            p.normal_(0.0, 1.0 / p.shape[-1] ** 0.5)
    return net


def _inputs(b: int = 2, t: int = 3, h: int = 4, w: int = 6, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, 16, t, h, w, generator=g)
    ts = torch.rand(b, t, generator=g)
    text = torch.randn(b, 20, 32, generator=g)
    return x, ts, text


@pytest.mark.parametrize("size,count", [("2B", 1_956_413_440), ("14B", 14_265_285_632)])
def test_parameter_count(size, count):
    assert sum(p.numel() for p in _meta(size).parameters()) == count


def test_official_key_names_and_shapes():
    sd = _meta("2B").state_dict()
    d = 2048
    outer = {k: tuple(v.shape) for k, v in sd.items() if not k.startswith("blocks.")}
    assert outer == {
        "x_embedder.proj.1.weight": (d, 72),
        "t_embedder.1.linear_1.weight": (d, d),
        "t_embedder.1.linear_2.weight": (3 * d, d),
        "t_embedding_norm.weight": (d,),
        "final_layer.linear.weight": (64, d),
        "final_layer.adaln_modulation.1.weight": (256, d),
        "final_layer.adaln_modulation.2.weight": (2 * d, 256),
    }
    block = {
        k[len("blocks.5.") :]: tuple(v.shape) for k, v in sd.items() if k.startswith("blocks.5.")
    }
    expected = {f"{a}.{p}_proj.weight": (d, d) for a in ("self_attn", "cross_attn") for p in "qkvo"}
    expected = {k.replace("o_proj", "output_proj"): v for k, v in expected.items()}
    expected.update({"cross_attn.k_proj.weight": (d, 1024), "cross_attn.v_proj.weight": (d, 1024)})
    for a in ("self_attn", "cross_attn"):
        expected.update({f"{a}.q_norm.weight": (128,), f"{a}.k_norm.weight": (128,)})
    expected.update({"mlp.layer1.weight": (4 * d, d), "mlp.layer2.weight": (d, 4 * d)})
    for s in ("self_attn", "cross_attn", "mlp"):
        expected.update(
            {
                f"adaln_modulation_{s}.1.weight": (256, d),
                f"adaln_modulation_{s}.2.weight": (3 * d, 256),
            }
        )
    assert block == expected
    assert {int(k.split(".")[1]) for k in sd if k.startswith("blocks.")} == set(range(28))
    assert not any(k.endswith(".bias") for k in sd)


def _official_file(net: MiniTrainDiT) -> dict[str, torch.Tensor]:
    """What an official model-*.pt holds: bf16 `net.` weights plus buffers and counters (§4.7)."""
    sd = {"net." + k: v.to(torch.bfloat16) for k, v in net.state_dict().items()}
    sd.update(
        {
            "net.pos_embedder.seq": torch.arange(128.0),
            "net.pos_embedder.dim_spatial_range": torch.zeros(21),
            "net.pos_embedder.dim_temporal_range": torch.zeros(22),
            "net.accum_video_sample_counter": torch.tensor(5),
            "net.accum_image_sample_counter": torch.tensor(0),
            "net.accum_iteration": torch.tensor(7),
            "net.accum_train_in_hours": torch.tensor(1.5),
            "net.t_embedding_norm._extra_state": torch.zeros(0),
            "net.blocks.0.self_attn.q_norm._extra_state": torch.zeros(0),
        }
    )
    return sd


def test_load_official_strict_and_clear_errors():
    src, dst = _small(0), _small(1)
    sd = _official_file(src)
    load_official(dst, sd)
    for k, v in src.state_dict().items():
        torch.testing.assert_close(dst.state_dict()[k], v.to(torch.bfloat16).float())

    with pytest.raises(ValueError, match=r"1 unexpected: blocks.0.self_attn.q_proj.bias"):
        load_official(dst, {**sd, "net.blocks.0.self_attn.q_proj.bias": torch.zeros(96)})
    missing = {k: v for k, v in sd.items() if k != "net.final_layer.linear.weight"}
    with pytest.raises(ValueError, match=r"1 missing: final_layer.linear.weight"):
        load_official(dst, missing)
    with pytest.raises(ValueError, match=r"wrong shape: x_embedder.proj.1.weight"):
        load_official(dst, {**sd, "net.x_embedder.proj.1.weight": torch.zeros(96, 68)})


def test_load_ema_selects_net_ema_and_file_round_trip(tmp_path):
    net, ema, dst = _small(0), _small(2), _small(3)
    sd = {**_official_file(net), **{"net_ema." + k: v for k, v in ema.state_dict().items()}}
    path = tmp_path / "iter_000000010.pt"
    torch.save({"model": sd}, path)
    load_official(dst, read_checkpoint(path), ema=True)
    torch.testing.assert_close(dst.state_dict(), ema.state_dict())
    with pytest.raises(ValueError, match="no 'net_ema.' keys"):
        load_official(dst, _official_file(net), ema=True)


def test_read_checkpoint_refuses_pickled_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"net.x": Evil()}, f)
    with pytest.raises(UnsafeFileError, match="other than tensors"):
        read_checkpoint(path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_checkpoint(tmp_path / "nope.pt")


def test_output_shape_and_dtype():
    net = _small()
    x, ts, text = _inputs()
    out = net(x, ts, text)
    assert out.shape == (2, 16, 3, 4, 6) and out.dtype == torch.float32
    net_bf16 = net.to(torch.bfloat16)
    out16 = net_bf16(x.bfloat16(), ts, text)
    assert out16.dtype == torch.bfloat16
    assert ((out16.float() - out).norm() / out.norm()).item() < 0.05


def test_timesteps_batch_and_mask_semantics():
    net = _small()
    x, ts, text = _inputs()
    with torch.no_grad():
        # [B] equals [B, T] with the value repeated over frames.
        shared = torch.tensor([0.2, 0.7])
        torch.testing.assert_close(net(x, shared, text), net(x, shared[:, None].expand(2, 3), text))
        # Per-frame timesteps matter, and samples are independent of each other.
        base = net(x, ts, text)
        ts2 = ts.clone()
        ts2[0, 1] += 0.3
        moved = net(x, ts2, text)
        assert (moved[0] - base[0]).abs().max() > 1e-3
        torch.testing.assert_close(moved[1], base[1])
        # No condition mask = zero mask; a set mask changes the output.
        zeros = torch.zeros(2, 1, 3, 4, 6)
        torch.testing.assert_close(net(x, ts, text, zeros), base)
        assert (net(x, ts, text, zeros + 1) - base).abs().max() > 1e-3
        # Padding mask: nearest resize of a pixel mask equals passing it at latent size.
        latent_pm = (torch.rand(2, 1, 4, 6) > 0.5).float()
        pixel_pm = latent_pm.repeat_interleave(8, 2).repeat_interleave(8, 3)
        torch.testing.assert_close(
            net(x, ts, text, None, pixel_pm), net(x, ts, text, None, latent_pm)
        )
        assert (net(x, ts, text, None, latent_pm) - base).abs().max() > 1e-3


def test_input_errors_are_clear():
    net = _small()
    x, ts, text = _inputs()
    with pytest.raises(ValueError, match="divisible by the patch"):
        net(x[..., :5], ts, text)
    with pytest.raises(ValueError, match=r"timesteps must be \[B\] or \[B, 3\]"):
        net(x, ts[:, :2], text)
    with pytest.raises(ValueError, match=r"x must be \[B, 16"):
        net(x[:, :15], ts, text)
    with pytest.raises(ValueError, match="exceeds the RoPE limits"):
        net.pos_embedder.angles(1, 121, 4, torch.device("cpu"))


def test_patch_layouts():
    # Patch embed: feature index = c*4 + dy*2 + dx (channel outermost, §4.5.3).
    x = torch.zeros(1, 3, 1, 2, 2)
    for c in range(3):
        for dy in range(2):
            for dx in range(2):
                x[0, c, 0, dy, dx] = c * 4 + dy * 2 + dx
    assert Patchify(2, 1)(x).flatten().tolist() == list(range(12))
    # Unpatchify: feature index = dy*32 + dx*16 + c (channel innermost, §4.5.8).
    net = _small()
    feats = torch.arange(64.0).view(1, 1, 1, 1, 64)
    out = net._unpatchify(feats)
    for c in (0, 5, 15):
        for dy in range(2):
            for dx in range(2):
                assert out[0, c, 0, dy, dx].item() == dy * 32 + dx * 16 + c


def test_rope_angles_by_hand():
    head_dim, rh, rw, rt = 128, 3.0, 2.0, 20 / 24
    rope = Rope3D(head_dim, rh, rw, rt, 120, 120, 128)
    t, h, w = 3, 5, 7
    angles = rope.angles(t, h, w, torch.device("cpu"))[0]
    assert angles.shape == (t * h * w, 64) and angles.dtype == torch.float32
    theta_t = 10000 * rt ** (44 / 42)
    theta_h = 10000 * rh ** (42 / 40)
    theta_w = 10000 * rw ** (42 / 40)
    for pt, ph, pw in [(0, 0, 0), (2, 4, 6), (1, 3, 2)]:
        want = (
            [pt * theta_t ** (-2 * j / 44) for j in range(22)]
            + [ph * theta_h ** (-2 * j / 42) for j in range(21)]
            + [pw * theta_w ** (-2 * j / 42) for j in range(21)]
        )
        got = angles[(pt * h + ph) * w + pw]
        torch.testing.assert_close(
            got, torch.tensor(want, dtype=torch.float32), rtol=1e-5, atol=1e-5
        )


def test_timestep_sinusoid_is_cos_first():
    emb = Timesteps(8)(torch.tensor([[0.0, 0.5]]))
    assert emb[0, 0].tolist() == [1.0] * 4 + [0.0] * 4
    want = [math.cos(0.5 * math.exp(-math.log(1e4) * k / 4)) for k in range(4)]
    want += [math.sin(0.5 * math.exp(-math.log(1e4) * k / 4)) for k in range(4)]
    torch.testing.assert_close(emb[0, 1], torch.tensor(want))


def test_flops_match_torch_flop_counter():
    net = _small()
    x, ts, text = _inputs(b=1, t=2, h=4, w=6)
    counter = FlopCounterMode(display=False)
    # The math backend decomposes attention into bmm, which the counter sees on CPU.
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), counter:
        net(x, ts, text)
    assert forward_flops(net, 2, 4, 6, text_len=20) == counter.get_total_flops()


# The shared parallelize on this net: tests/test_dit_parallelize.py.
