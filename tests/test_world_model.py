"""WorldModel with the Predict2 family on tiny nets: training step, LoRA, overfitting, latent
cache path, checkpoint loading and generation (PixelTokenizer keeps everything exact and fast)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from framework.diffusion.rectified_flow import RectifiedFlowObjective
from framework.diffusion.samplers import MultistepSampler
from framework.models.cosmos2.net import MiniTrainDiT
from framework.models.tokenizers import PixelTokenizer
from framework.models.world_model import WorldModel

TEXT_LEN, TEXT_DIM = 8, 32


class StandInNet(nn.Module):
    """MiniTrainDiT's forward signature on a 1x1x1 conv; records batch sizes and embeddings."""

    def __init__(self, channels: int):
        super().__init__()
        self.proj = nn.Conv3d(channels + 1, channels, 1)
        self.text = nn.Linear(TEXT_DIM, channels)
        self.calls: list[dict] = []

    def forward(
        self,
        x,
        timesteps_B_T,
        crossattn_emb,
        condition_video_input_mask_B_C_T_H_W=None,
        padding_mask=None,
    ):
        self.calls.append(dict(batch=x.shape[0], emb=crossattn_emb.clone(), t=timesteps_B_T))
        h = torch.cat([x, condition_video_input_mask_B_C_T_H_W.to(x.dtype)], dim=1)
        text = self.text(crossattn_emb.mean(1))[:, :, None, None, None]
        return self.proj(h) * (1 + timesteps_B_T[:, None, :, None, None]) + text


def tiny_dit(channels: int) -> MiniTrainDiT:
    return MiniTrainDiT(
        model_channels=64,
        num_blocks=2,
        num_heads=2,
        in_channels=channels,
        out_channels=channels,
        crossattn_emb_channels=TEXT_DIM,
        adaln_lora_dim=16,
    )


def make_batch(b: int = 2, frames: int = 3, size: int = 16, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {
        "video": torch.randint(0, 256, (b, 3, frames, size, size), generator=g, dtype=torch.uint8),
        "t5_text_embeddings": torch.randn(b, TEXT_LEN, TEXT_DIM, generator=g),
        "padding_mask": torch.zeros(b, 1, size, size),
    }


def make_model(net: nn.Module | None = None, state_t: int = 3, **kw) -> WorldModel:
    """A Predict2-family model; objective fields (e.g. text_dropout) may be passed too."""
    tok = kw.pop("tokenizer", PixelTokenizer(spatial=2))
    fields = RectifiedFlowObjective.__dataclass_fields__
    objective = RectifiedFlowObjective(**{k: kw.pop(k) for k in list(kw) if k in fields})
    kw.setdefault("max_text_tokens", TEXT_LEN)
    torch.manual_seed(0)
    net = net or tiny_dit(tok.latent_channels)
    return WorldModel(net, tok, objective, MultistepSampler(), state_t, family="cosmos2", **kw)


def test_training_step_finite_and_grads_on_trainable_only():
    model = make_model()
    loss, metrics = model.training_step(make_batch(), step=0)
    assert torch.isfinite(loss) and loss.requires_grad
    assert set(metrics) >= {"edm_loss", "mse_loss"}
    assert metrics["edm_loss"] == pytest.approx(loss.item() / 10.0, rel=1e-5)
    loss.backward()
    params = model.trainable_parameters()
    assert len(params) == len(list(model.net.parameters()))
    assert all(p.grad is not None for p in params)
    # Only the net is state: tokenizer, objective and sampler stay out of checkpoints.
    assert all(k.startswith("net.") for k in model.state_dict())


def test_lora_only_lora_params_train():
    model = make_model(lora=dict(rank=4, alpha=4, targets="q_proj,k_proj,v_proj,output_proj"))
    names = [n for n, p in model.net.named_parameters() if p.requires_grad]
    assert names and all(".lora_A." in n or ".lora_B." in n for n in names)
    loss, _ = model.training_step(make_batch(), step=0)
    loss.backward()
    for n, p in model.net.named_parameters():
        assert (p.grad is not None) == p.requires_grad, n
    assert {id(p) for p in model.trainable_parameters()} == {
        id(p) for p in model.net.parameters() if p.requires_grad
    }


def test_overfits_one_batch():
    model = make_model(text_dropout=0.0)
    opt = torch.optim.Adam(model.trainable_parameters(), lr=3e-3)
    batch = make_batch(b=2)
    losses = []
    for step in range(30):
        torch.manual_seed(123)  # same sigma, noise and condition frames every step
        loss, _ = model.training_step(batch, step)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


def test_latent_path_equals_video_path():
    model = make_model()
    batch = make_batch()
    torch.manual_seed(7)
    loss_video, _ = model.training_step(batch, 0)
    latent_batch = {k: v for k, v in batch.items() if k != "video"}
    latent_batch["latent"] = model.tokenizer.encode(batch["video"])
    torch.manual_seed(7)
    loss_latent, _ = model.training_step(latent_batch, 0)
    torch.testing.assert_close(loss_video, loss_latent)


def test_temporal_crop_and_too_short_clip():
    model = make_model(StandInNet(12))
    video = make_batch(frames=7)["video"]
    torch.manual_seed(0)
    lat = model.latents({"video": video})
    assert lat.shape == (2, 12, 3, 8, 8)
    windows = [model.tokenizer.encode(video[:, :, s : s + 3]) for s in range(5)]
    assert any(torch.equal(lat, w) for w in windows)
    with pytest.raises(ValueError, match="state_t=3 needs 3"):
        model.latents({"video": video[:, :, :2]})


def test_load_weights_strict_ignores_official_buffers_and_maps_lora():
    src = make_model()
    sd = {f"net.{k}": v.clone() for k, v in src.net.state_dict().items()}
    sd["net.accum_iteration"] = torch.tensor(5)  # official buffer: dropped by name
    sd["logvar.1.weight"] = torch.zeros(1, 128)  # a Predict1 head: foreign to this family
    dst = make_model(net=tiny_dit(12))
    with torch.no_grad():
        for p in dst.net.parameters():
            p.zero_()
    dst.load_weights(sd)
    for k, v in src.net.state_dict().items():
        assert torch.equal(dst.net.state_dict()[k], v), k
    with pytest.raises(ValueError, match="missing|unexpected"):
        dst.load_weights({**sd, "net.blocks.9.mlp.layer1.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="belong to no part"):
        dst.load_weights({**sd, "conditioner.x": torch.zeros(1)})
    missing = dict(sd)
    missing.pop("net.final_layer.linear.weight")
    with pytest.raises(ValueError, match="final_layer.linear.weight"):
        dst.load_weights(missing)

    lora = make_model(lora=dict(rank=2, alpha=2, targets="q_proj"))
    lora.load_weights(sd)
    q = "blocks.0.self_attn.q_proj"
    assert torch.equal(lora.net.state_dict()[f"{q}.base_layer.weight"], sd[f"net.{q}.weight"])


def test_flops_and_parallelize_without_mesh():
    model = make_model()
    assert model.flops_per_sample(make_batch()) > 0
    parallel = OmegaConf.create(
        dict(strategy="none", activation_checkpointing="full", compile=False)
    )
    model.parallelize(None, parallel)
    loss, _ = model.training_step(make_batch(), 0)
    loss.backward()
    assert torch.isfinite(loss)


def test_generate_shape_determinism_conditioning_and_batched_cfg():
    net = StandInNet(12)
    model = make_model(net)
    batch = make_batch(b=2)
    first = batch["video"][:, :, :1]  # an image input
    out = model.generate(first, batch["t5_text_embeddings"], num_steps=4, seed=3)
    assert out.dtype == torch.uint8 and out.shape == (2, 3, 3, 16, 16)
    assert torch.equal(out[:, :, 0], first[:, :, 0])  # the conditioning frame is kept exactly
    # one batched forward per x0 evaluation (4 steps + final), cond and uncond concatenated
    assert [c["batch"] for c in net.calls] == [4] * 5
    assert torch.equal(net.calls[0]["emb"][:2], batch["t5_text_embeddings"])
    assert net.calls[0]["emb"][2:].abs().sum() == 0  # no negative prompt -> zero embedding
    t_cond = 1e-4 / 1.0001
    assert net.calls[0]["t"][:, 0].tolist() == pytest.approx([t_cond] * 4, rel=1e-5)
    again = model.generate(first, batch["t5_text_embeddings"], num_steps=4, seed=3)
    assert torch.equal(out, again)
    other = model.generate(first, batch["t5_text_embeddings"], num_steps=4, seed=4)
    assert not torch.equal(out, other)


def test_generate_guidance_formula_and_video_conditioning():
    net = StandInNet(48)
    model = make_model(net, state_t=3, tokenizer=PixelTokenizer(spatial=2, temporal=4))
    batch = make_batch(b=1, frames=12)
    emb, neg = batch["t5_text_embeddings"], torch.randn(1, TEXT_LEN, TEXT_DIM)
    out = model.generate(
        batch["video"], emb, neg, num_conditional_frames=5, guidance=0.0, num_steps=3
    )
    assert out.shape == (1, 3, 9, 16, 16)
    # the last 5 input frames condition 2 latent frames and come back unchanged
    assert torch.equal(out[:, :, :5], batch["video"][:, :, -5:])
    assert [c["batch"] for c in net.calls] == [1] * 4  # guidance 0 skips the uncond half
    with pytest.raises(ValueError, match="num_conditional_frames=1"):
        model.generate(batch["video"][:, :, :1], emb, num_conditional_frames=5)


@pytest.mark.parametrize("length", [TEXT_LEN + 3, TEXT_LEN - 3])
def test_net_sees_text_at_max_text_tokens_in_training_and_generation(length):
    # Zero slots take softmax mass in cross-attention: the net must always see the trained length.
    net = StandInNet(12)
    model = make_model(net, max_text_tokens=length, text_dropout=0.0)
    batch = make_batch(b=1)
    emb = batch["t5_text_embeddings"]
    model.training_step(batch, step=0)
    model.generate(batch["video"][:, :, :1], emb, num_steps=1, guidance=0.0, seed=0)
    keep = min(length, TEXT_LEN)
    for call in net.calls:
        assert call["emb"].shape == (1, length, TEXT_DIM)
        assert torch.equal(call["emb"][:, :keep], emb[:, :keep])
        assert call["emb"][:, keep:].abs().sum() == 0


def test_batched_cfg_equals_two_separate_passes():
    from framework.diffusion.conditioning import condition_mask
    from framework.diffusion.rectified_flow import denoise
    from framework.diffusion.samplers import sample

    net = StandInNet(12)
    model = make_model(net)
    batch = make_batch(b=1)
    emb, neg, g = batch["t5_text_embeddings"], torch.randn(1, TEXT_LEN, TEXT_DIM), 7.0
    out = model.generate(batch["video"][:, :, :1], emb, neg, guidance=g, num_steps=3, seed=1)

    cond = model.tokenizer.encode(model.condition_video(batch["video"][:, :, :1], 1))
    mask = condition_mask(torch.ones(1, dtype=torch.long), cond.shape)
    pad = torch.zeros(1, 1, 16, 16)

    def x0_fn(x, sigma):
        s = torch.full((1, 1), sigma)
        c = denoise(net, x, s, cond, mask, emb, pad)
        u = denoise(net, x, s, cond, mask, neg, pad)
        return c + g * (c - u)

    ref = sample(x0_fn, tuple(cond.shape), num_steps=3, seed=1)
    expect = ((model.tokenizer.decode(ref) + 1) * 127.5 + 0.5).floor().clamp(0, 255)
    assert (out.float() - expect).abs().max() <= 1  # rounding at a .5 boundary at most


def test_generate_from_prompts_uses_text_encoder():
    class FakeT5:  # T5TextEncoder's interface: encode(prompts) -> (embeddings, lengths)
        def encode(self, prompts):
            emb = torch.stack([torch.full((TEXT_LEN, TEXT_DIM), float(len(p))) for p in prompts])
            return emb, torch.full((len(prompts),), TEXT_LEN)

    net = StandInNet(12)
    model = make_model(net, text_encoder=FakeT5())
    image = make_batch(b=1)["video"][:, :, :1]
    model.generate(image, ["abc"], ["a"], num_steps=1)
    assert net.calls[0]["emb"][:, 0, 0].tolist() == [3.0, 1.0]
    with pytest.raises(ValueError, match="no text_encoder"):
        make_model(StandInNet(12)).generate(image, ["abc"], num_steps=1)


def test_cached_latent_prefix_equals_encoding_of_first_frames():
    model = make_model(StandInNet(48), state_t=2, tokenizer=PixelTokenizer(spatial=2, temporal=4))
    video = make_batch(b=1, frames=9)["video"]
    lat = model.latents({"latent": model.tokenizer.encode(video)})
    torch.testing.assert_close(lat, model.tokenizer.encode(video[:, :, :5]))
    with pytest.raises(ValueError, match="rebuild the latent cache"):
        make_model(StandInNet(48), state_t=4, tokenizer=PixelTokenizer(2, 4)).latents(
            {"latent": lat}
        )


@pytest.mark.slow
def test_compiled_generation_equals_eager():
    """video2world --compile: per-block torch.compile of the net (aot_eager here to keep the
    CPU test short; inductor is the same wiring) gives the eager video."""
    eager, compiled = make_model(), make_model()  # the same seeded weights
    compiled.compile_for_inference(backend="aot_eager")
    assert all(b._compiled_call_impl is not None for b in compiled.net.blocks)
    assert all(b._compiled_call_impl is None for b in eager.net.blocks)
    assert list(compiled.state_dict()) == list(eager.state_dict())
    batch = make_batch(b=1)
    first = batch["video"][:, :, :1]
    a = eager.generate(first, batch["t5_text_embeddings"], num_steps=3, seed=1)
    b = compiled.generate(first, batch["t5_text_embeddings"], num_steps=3, seed=1)
    assert (a.int() - b.int()).abs().max() <= 1


def test_compile_for_inference_without_family_parallelize_is_one_line():
    model = make_model(StandInNet(12))
    model.family = dataclasses.replace(model.family, parallelize=None)
    with pytest.raises(ValueError, match="drop --compile"):
        model.compile_for_inference()


@pytest.mark.parametrize("given", [1, 5])
def test_generation_encodes_only_the_given_frames_of_a_causal_tokenizer(given):
    """The same video whether the whole padded clip is encoded (a tokenizer not marked causal)
    or only the given frames (causal): the latents after them are never used."""
    model = make_model(StandInNet(48), state_t=3, tokenizer=PixelTokenizer(spatial=2, temporal=4))
    batch = make_batch(b=1, frames=9)
    clip = batch["video"][:, :, :given]
    frames = []
    encode = model.tokenizer.encode
    model.tokenizer.encode = lambda x: frames.append(x.shape[2]) or encode(x)
    outs = {}
    for causal in (True, False):
        model.tokenizer.causal = causal
        outs[causal] = model.generate(
            clip, batch["t5_text_embeddings"], num_conditional_frames=given, num_steps=3, seed=2
        )
    assert frames == [given, 9]  # the causal path encodes the given frames only
    assert torch.equal(outs[True], outs[False])
