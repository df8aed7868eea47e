"""The action-conditioned DiTs: official keys and parameter counts from the key tables
(docs/upstream/cosmos_predict2_5.md §1.4-§1.5, §6.2, §6.6), strict loading of official-layout
files made here, starting from a plain Video2World file, and the injection rule of §6.2."""

from __future__ import annotations

import math
import re

import pytest
import torch
import torch.nn.functional as F

from framework.models.cosmos2.action import PREDICT2_ACTION, ActionConditionedDiT
from framework.models.cosmos2.net import net_config as p2_config
from framework.models.cosmos2_5.action import PREDICT2_5_ACTION, ActionChunkConditionedDiT
from framework.models.cosmos2_5.net import net_config as p25_config
from framework.models.family import family_of

TINY = dict(model_channels=64, num_blocks=2, num_heads=2, adaln_lora_dim=8)
TINY25 = dict(**TINY, crossattn_emb_channels=16, crossattn_proj_in_channels=24)


def official_keys(d, blocks, text, lora=256, head=128, proj_in=None, action_in=None, hidden=None):
    """{key after `net.`: shape} of an official file, written from the spec's key tables (§1.5;
    the Predict2 table is the same without crossattn_proj), with the action MLPs of §6.2."""
    keys = {
        "x_embedder.proj.1.weight": (d, 72),
        "t_embedder.1.linear_1.weight": (d, d),
        "t_embedder.1.linear_2.weight": (3 * d, d),
        "t_embedding_norm.weight": (d,),
        "final_layer.linear.weight": (64, d),
        "final_layer.adaln_modulation.1.weight": (lora, d),
        "final_layer.adaln_modulation.2.weight": (2 * d, lora),
    }
    if proj_in:
        keys.update({"crossattn_proj.0.weight": (text, proj_in), "crossattn_proj.0.bias": (text,)})
    block = {
        **{f"self_attn.{p}_proj.weight": (d, d) for p in ("q", "k", "v", "output")},
        **{f"{a}.{n}_norm.weight": (head,) for a in ("self_attn", "cross_attn") for n in "qk"},
        "cross_attn.q_proj.weight": (d, d),
        "cross_attn.k_proj.weight": (d, text),
        "cross_attn.v_proj.weight": (d, text),
        "cross_attn.output_proj.weight": (d, d),
        "mlp.layer1.weight": (4 * d, d),
        "mlp.layer2.weight": (d, 4 * d),
        **{f"adaln_modulation_{m}.1.weight": (lora, d) for m in ("self_attn", "cross_attn", "mlp")},
        **{
            f"adaln_modulation_{m}.2.weight": (3 * d, lora)
            for m in ("self_attn", "cross_attn", "mlp")
        },
    }
    for i in range(blocks):
        keys.update({f"blocks.{i}.{k}": v for k, v in block.items()})
    if action_in:
        hidden = hidden or 4 * d
        for name, out in (("action_embedder_B_D", d), ("action_embedder_B_3D", 3 * d)):
            keys.update(
                {
                    f"{name}.fc1.weight": (hidden, action_in),
                    f"{name}.fc1.bias": (hidden,),
                    f"{name}.fc2.weight": (out, hidden),
                    f"{name}.fc2.bias": (out,),
                }
            )
    return keys


def _count(keys: dict) -> int:
    return sum(math.prod(shape) for shape in keys.values())


def official_file(keys: dict) -> dict:
    """A released-style file: `net.` keys in bf16 plus the buffers and counters it carries."""
    g = torch.Generator().manual_seed(0)
    sd = {f"net.{k}": torch.randn(s, generator=g).to(torch.bfloat16) for k, s in keys.items()}
    sd["net.pos_embedder.seq"] = torch.arange(128.0)
    sd["net.accum_iteration"] = torch.tensor(3)
    sd["net.t_embedding_norm._extra_state"] = torch.zeros(0)
    return sd


def test_predict2_5_action_2b_keys_and_parameter_count():
    with torch.device("meta"):
        net = ActionChunkConditionedDiT(**p25_config("2B"), action_dim=7)
    shapes = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    assert shapes == official_keys(2048, 28, 1024, proj_in=100352, action_in=28)
    actions = sum(p.numel() for n, p in net.named_parameters() if n.startswith("action_embedder"))
    assert actions == 67_592_192  # §6.2
    assert _count(official_keys(2048, 28, 1024, proj_in=100352, action_in=28)) == 2_126_767_104
    assert sum(p.numel() for p in net.parameters()) == 2_126_767_104  # 2,059,174,912 + above
    assert family_of(net) is PREDICT2_5_ACTION and PREDICT2_5_ACTION.conditions == ("actions",)


def test_predict2_action_2b_keys_and_parameter_count():
    with torch.device("meta"):
        net = ActionConditionedDiT(**p2_config("2B"))
    shapes = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    assert shapes == official_keys(2048, 28, 1024, action_in=84)
    # Predict2 2B (1,956,413,440) + 84 -> 8192 -> 2048 / 6144 MLPs (68,509,696).
    assert _count(official_keys(2048, 28, 1024, action_in=84)) == 2_024_923_136
    assert sum(p.numel() for p in net.parameters()) == 2_024_923_136
    assert family_of(net) is PREDICT2_ACTION


@pytest.mark.parametrize(
    "cls, kw, family, keys",
    [
        (ActionChunkConditionedDiT, TINY25, PREDICT2_5_ACTION, dict(proj_in=24, action_in=28)),
        (ActionConditionedDiT, TINY, PREDICT2_ACTION, dict(action_in=84)),
    ],
)
def test_official_layout_loads_strictly_and_base_file_keeps_action_init(cls, kw, family, keys):
    text = kw.get("crossattn_emb_channels", 1024)
    sd = official_file(official_keys(64, 2, text, lora=8, head=32, **keys))
    net = cls(**kw)
    family.load(net, sd)
    for k, v in net.state_dict().items():
        assert torch.equal(v, sd[f"net.{k}"].float()), k
    # The recipes start from a plain Video2World file: no action keys, the rest strict.
    base = {k: v for k, v in sd.items() if "action_embedder" not in k}
    fresh = cls(**kw)
    init = fresh.action_embedder_B_D.fc1.weight.clone()
    family.load(fresh, base)
    assert torch.equal(fresh.action_embedder_B_D.fc1.weight, init)
    assert torch.equal(fresh.x_embedder.proj[1].weight, sd["net.x_embedder.proj.1.weight"].float())
    # Some action keys but not all, or a base file for generation (meta + assign): refused.
    partial = dict(
        base, **{"net.action_embedder_B_D.fc1.bias": sd["net.action_embedder_B_D.fc1.bias"]}
    )
    with pytest.raises(ValueError, match=re.escape("missing: action_embedder_B_D.fc1.weight")):
        family.load(cls(**kw), partial)
    with torch.device("meta"):
        meta = cls(**kw)
    with pytest.raises(ValueError, match="no action embedders"):
        family.load(meta, base, assign=True)


def test_action_embedders_are_initialised():
    """Upstream leaves them uninitialised (§8 item 3); ours get torch's Linear init, also after a
    re-init of the whole net."""
    torch.manual_seed(0)
    net = ActionChunkConditionedDiT(**TINY25, action_dim=3, temporal_compression_ratio=2)
    net.init_weights()
    fc1 = net.action_embedder_B_3D.fc1
    bound = 1 / fc1.in_features**0.5  # kaiming-uniform(a=sqrt 5) bound of nn.Linear
    assert fc1.weight.abs().max() <= bound and fc1.weight.std() > bound / 3
    assert net.action_embedder_B_3D.fc2.bias.abs().max() <= 1 / fc1.out_features**0.5


def _reference_modulation(net, timesteps, actions, given):
    """§6.2 as written upstream: actions [B, 4(T-1), D] -> [B, T-1, 4D] -> MLPs, zero prepended
    for frame 0, times (1 - cond mask); added to the raw sinusoid before the norm and to the
    AdaLN-LoRA vector."""
    b, k = actions.shape[0], net.actions_per_frame
    chunks = actions.reshape(b, 1, -1).reshape(b, actions.shape[1] // k, -1)

    def mlp(m):
        return m.fc2(F.gelu(m.fc1(chunks), approximate="tanh"))

    a_d, a_3d = mlp(net.action_embedder_B_D), mlp(net.action_embedder_B_3D)
    a_d = torch.cat([torch.zeros_like(a_d[:, :1]), a_d], 1) * (1 - given)[..., None]
    a_3d = torch.cat([torch.zeros_like(a_3d[:, :1]), a_3d], 1) * (1 - given)[..., None]
    sinusoid = net.t_embedder[0](timesteps * 0.001)
    lin = net.t_embedder[1]
    lora = lin.linear_2(F.silu(lin.linear_1(sinusoid)))
    return net.t_embedding_norm(sinusoid + a_d), lora + a_3d


def test_injection_follows_upstream_and_given_frames_take_no_action():
    torch.manual_seed(0)
    net = ActionChunkConditionedDiT(**TINY25, action_dim=3, temporal_compression_ratio=2)
    b, t = 2, 4
    actions = torch.randn(b, 2 * (t - 1), 3)
    given = torch.tensor([[1.0, 0, 0, 0], [1.0, 1, 0, 0]])  # sample 1: two given frames
    timesteps = torch.rand(b, 1) * 1000
    free = 1 - given
    got = net.embed_time(timesteps, torch.float32, action_emb=net.embed_actions(actions, t, free))
    want = _reference_modulation(net, timesteps, actions, given)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)
    # The forward reads the given frames from the condition mask: changing a given frame's
    # actions changes nothing; changing a free frame's does.
    x = torch.randn(b, 16, t, 4, 4)
    mask = given[:, None, :, None, None].expand(b, 1, t, 4, 4)
    args = (x, timesteps, torch.randn(b, 5, 24), mask)
    out = net(*args, actions=actions)
    edited = actions.clone()
    edited[1, 0:2] += 1.0  # sample 1's latent frame 1 is given: its actions are ignored
    assert torch.equal(net(*args, actions=edited)[1], out[1])
    edited[1, 4:6] += 1.0  # latent frame 3 is generated
    assert not torch.allclose(net(*args, actions=edited)[1], out[1])


def test_wrong_action_shape_names_what_is_needed():
    net = ActionChunkConditionedDiT(**TINY25, action_dim=7)
    x, ts, text = torch.randn(1, 16, 4, 4, 4), torch.ones(1, 1), torch.randn(1, 3, 24)
    with pytest.raises(ValueError, match=re.escape("needs actions [B, 12, 7] for 4 latent")):
        net(x, ts, text, actions=torch.zeros(1, 11, 7))
    p2 = ActionConditionedDiT(**TINY, in_channels=16)
    with pytest.raises(ValueError, match="T_a \\* D = 84; got none"):
        p2(x, ts, torch.randn(1, 3, 1024))


@pytest.mark.parametrize(
    "name, upstream, count",
    [
        (
            "predict2_5_bridge_action_256x320",
            "cosmos_predict2p5_2B_reason_embeddings_action_conditioned_rectified_flow_bridge_"
            "13frame_256x320",
            2_126_767_104,
        ),
        (
            "predict2_bridge_action_480x640",
            "predict2_video2world_2b_action_conditioned_training",
            2_024_923_136,
        ),
    ],
)
def test_bridge_action_recipes_dry_run_at_upstream_counts(name, upstream, count):
    from framework.config import get, instantiate, load_all
    from framework.config.registry import resolve_name

    load_all()
    assert resolve_name(upstream) == name
    cfg = get(name)
    with torch.device("meta"):
        net = instantiate(cfg.model.net)
    assert sum(p.numel() for p in net.parameters()) == count
    obj = cfg.model.objective
    if name.startswith("predict2_5"):  # §6.4
        assert list(obj.conditional_frames_probs) == [0.0, 1.0] and cfg.optim.lr == 3.2e-4
        assert cfg.data.dataset.text == "online" and cfg.data.batch_size == 8
    else:  # §6.6
        assert obj.min_num_conditional_frames == obj.max_num_conditional_frames == 1
        assert cfg.optim.lr == 1e-4 and list(cfg.optim.betas) == [0.9, 0.99]
        assert cfg.data.dataset.text == "none" and not cfg.train.ema.enabled
    assert cfg.model.state_t == 4 and cfg.data.dataset.num_frames == 13
