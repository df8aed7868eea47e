"""The Predict2.5 DiT: official key table and parameter counts (docs/upstream/cosmos_predict2_5.md
§1.4-§1.5), strict loading of an official-layout file, LoRA targets, FLOPs, fp32 islands."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from framework.models.cosmos2_5 import PREDICT2_5, Predict25DiT, forward_flops, net_config
from framework.models.family import family_of

TINY = dict(
    model_channels=64,
    num_blocks=2,
    num_heads=2,
    crossattn_emb_channels=16,
    crossattn_proj_in_channels=24,
    adaln_lora_dim=8,
)


def _meta(size: str) -> Predict25DiT:
    with torch.device("meta"):
        return Predict25DiT(**net_config(size))


def test_2b_key_table_and_parameter_count():
    net = _meta("2B")
    shapes = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    d = 2048
    table = {  # §1.5
        "x_embedder.proj.1.weight": (d, 72),
        "t_embedder.1.linear_1.weight": (d, d),
        "t_embedder.1.linear_2.weight": (3 * d, d),
        "t_embedding_norm.weight": (d,),
        "crossattn_proj.0.weight": (1024, 100352),
        "crossattn_proj.0.bias": (1024,),
        "final_layer.linear.weight": (64, d),
        "final_layer.adaln_modulation.1.weight": (256, d),
        "final_layer.adaln_modulation.2.weight": (2 * d, 256),
    }
    block = {
        **{f"self_attn.{p}_proj.weight": (d, d) for p in ("q", "k", "v", "output")},
        **{f"{a}.{n}_norm.weight": (128,) for a in ("self_attn", "cross_attn") for n in "qk"},
        "cross_attn.q_proj.weight": (d, d),
        "cross_attn.k_proj.weight": (d, 1024),
        "cross_attn.v_proj.weight": (d, 1024),
        "cross_attn.output_proj.weight": (d, d),
        "mlp.layer1.weight": (4 * d, d),
        "mlp.layer2.weight": (d, 4 * d),
        **{f"adaln_modulation_{m}.1.weight": (256, d) for m in ("self_attn", "cross_attn", "mlp")},
        **{
            f"adaln_modulation_{m}.2.weight": (3 * d, 256)
            for m in ("self_attn", "cross_attn", "mlp")
        },
    }
    for i in range(28):
        table.update({f"blocks.{i}.{k}": v for k, v in block.items()})
    assert shapes == table
    # §1.4: 69,206,528 per block, 18,630,656 outer, 102,761,472 projection, 2,059,174,912 total.
    assert sum(p.numel() for p in net.blocks[0].parameters()) == 69_206_528
    assert sum(p.numel() for p in net.crossattn_proj.parameters()) == 102_761_472
    assert sum(p.numel() for p in net.parameters()) == 2_059_174_912


def test_14b_parameter_count():
    assert sum(p.numel() for p in _meta("14B").parameters()) == 14_368_047_104


def _official_file(net: Predict25DiT, path: Path) -> None:
    """What a released `*_ema_bf16.pt` holds (§1.5): `net.` keys in bf16, RoPE buffers, training
    counters and TransformerEngine extra state."""
    sd = {f"net.{k}": v.to(torch.bfloat16) for k, v in net.state_dict().items()}
    sd.update(
        {
            "net.pos_embedder.seq": torch.arange(128.0),
            "net.pos_embedder.dim_spatial_range": torch.arange(0, 42, 2.0) / 42,
            "net.pos_embedder.dim_temporal_range": torch.arange(0, 44, 2.0) / 44,
            "net.accum_video_sample_counter": torch.tensor(7),
            "net.accum_iteration": torch.tensor(3),
            "net.accum_train_in_hours": torch.tensor(1.5),
            "net.t_embedding_norm._extra_state": torch.zeros(0),
            "net.blocks.0.self_attn.q_norm._extra_state": torch.zeros(0),
        }
    )
    torch.save(sd, path)


def test_official_file_loads_strictly(tmp_path):
    torch.manual_seed(0)
    src = Predict25DiT(**TINY)
    _official_file(src, tmp_path / "model_ema_bf16.pt")
    dst = Predict25DiT(**TINY)
    sd = torch.load(tmp_path / "model_ema_bf16.pt", weights_only=True)
    PREDICT2_5.load(dst, sd)
    for k, v in src.state_dict().items():
        assert torch.equal(dst.state_dict()[k], v.to(torch.bfloat16).float()), k


@pytest.mark.parametrize(
    "edit, named",
    [
        (lambda sd: sd.pop("net.crossattn_proj.0.bias"), "crossattn_proj.0.bias"),
        (
            lambda sd: sd.update({"net.blocks.0.self_attn.q_proj.bias": torch.zeros(64)}),
            "blocks.0.self_attn.q_proj.bias",
        ),
        (
            lambda sd: sd.update({"net.crossattn_proj.0.weight": torch.zeros(16, 25)}),
            "crossattn_proj.0.weight (16, 25) vs (16, 24)",
        ),
    ],
)
def test_wrong_file_is_refused_naming_the_key(tmp_path, edit, named):
    _official_file(Predict25DiT(**TINY), tmp_path / "m.pt")
    sd = torch.load(tmp_path / "m.pt", weights_only=True)
    edit(sd)
    with pytest.raises(ValueError, match=re.escape(named)):
        PREDICT2_5.load(Predict25DiT(**TINY), sd)


def test_family_and_defaults():
    net = Predict25DiT(**TINY)
    assert family_of(net) is PREDICT2_5
    assert PREDICT2_5.objective()._target_.endswith("FlowMatchingObjective")
    assert PREDICT2_5.sampler()._target_.endswith("UniPCSampler")


def test_lora_targets_and_2b_adapter_count():
    """§6: rank-32 adapters on q/k/v/output and the MLP: 1,638,400 per 2B block, none on the text
    projection or adaLN."""
    net = _meta("2B")
    PREDICT2_5.add_lora(net, rank=32, alpha=32, targets=None)  # the family's targets
    lora = {k: p.numel() for k, p in net.named_parameters() if ".lora_" in k}
    assert sum(lora.values()) == 28 * 1_638_400 == 45_875_200
    assert not any(k.startswith(("crossattn_proj", "t_embedder")) or "adaln" in k for k in lora)
    assert all(p.requires_grad == (".lora_" in k) for k, p in net.named_parameters())


def test_lora_merge_equals_the_adapted_net():
    torch.manual_seed(1)
    net = Predict25DiT(**TINY)
    PREDICT2_5.add_lora(net, rank=4, alpha=4, targets=None)
    with torch.no_grad():
        for k, p in net.named_parameters():
            if ".lora_B." in k:
                p.normal_()
    x, t, text = torch.randn(1, 16, 2, 4, 4), torch.tensor([500.0]), torch.randn(1, 5, 24)
    merged = Predict25DiT(**TINY)
    PREDICT2_5.load(merged, PREDICT2_5.merged_lora(net.state_dict(), 4, 4))
    with torch.no_grad():
        assert torch.allclose(net(x, t, text), merged(x, t, text), atol=1e-4)


def test_flops_match_torch_counter():
    """The analytic count equals torch's counter on a forward with per-frame timesteps (the
    formula counts the modulation per latent frame) and SDPA in its math form (the counter does
    not see the fused CPU kernel)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    net = Predict25DiT(**TINY).eval()
    x, t, text = torch.randn(1, 16, 3, 8, 8), torch.full((1, 3), 500.0), torch.randn(1, 7, 24)
    with FlopCounterMode(display=False) as counter, torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
        net(x, t, text)
    assert forward_flops(net, 3, 8, 8, text_len=7) == pytest.approx(counter.get_total_flops(), 1e-3)


def test_bf16_net_keeps_its_fp32_islands():
    """§1.2 item 5: in a bf16 net the timestep MLP, the adaLN modulations and the final layer
    compute in fp32 (on the bf16 weights' exact values), and the velocity comes out fp32."""
    from framework.models.cosmos2_5.layers import modulation

    torch.manual_seed(2)
    net = Predict25DiT(**TINY).eval().to(torch.bfloat16)
    f32 = Predict25DiT(**TINY).eval()
    f32.load_state_dict({k: v.float() for k, v in net.state_dict().items()})
    timesteps = torch.tensor([[10.0], [900.0]])
    emb, lora = net.embed_time(timesteps, torch.bfloat16)
    emb32, lora32 = f32.embed_time(timesteps, torch.float32)
    assert lora.dtype == torch.float32 and torch.allclose(lora, lora32, rtol=1e-6, atol=1e-6)
    got = modulation(net.blocks[0].adaln_modulation_mlp, emb, lora, 3)
    want = modulation(f32.blocks[0].adaln_modulation_mlp, emb32, lora32, 3)
    assert all(g.dtype == torch.float32 and torch.allclose(g, w) for g, w in zip(got, want))
    x, t, text = torch.randn(2, 16, 2, 4, 4), torch.tensor([10.0, 900.0]), torch.randn(2, 5, 24)
    with torch.no_grad():
        out = net(x.bfloat16(), t, text.bfloat16())
    assert out.dtype == torch.float32


def test_no_other_family_is_imported():
    root = Path(__file__).resolve().parents[1] / "framework" / "models" / "cosmos2_5"
    pattern = re.compile(r"framework\.models\.cosmos(1|2)\b(?!_5)")
    for path in root.glob("*.py"):
        assert not pattern.search(path.read_text()), path
