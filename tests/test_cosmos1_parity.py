"""Parity of GeneralDIT with diffusers' CosmosTransformer3DModel (Cosmos 1.0 config) on converted
weights, and the official <-> diffusers key conversion."""

from __future__ import annotations

import types

import pytest
import torch
import torch.nn.functional as F

from framework.models.cosmos1 import (
    GeneralDIT,
    diffusers_config,
    diffusers_to_official,
    load_official,
    official_to_diffusers,
)

transformer_cosmos = pytest.importorskip("diffusers.models.transformers.transformer_cosmos")

# h, w and t ratios differ on purpose, so a swapped axis or a mis-mapped rope_scale shows up.
SMALL = dict(
    model_channels=192,
    num_blocks=2,
    num_heads=3,
    crossattn_emb_channels=48,
    adaln_lora_dim=32,
    rope_t_extrapolation_ratio=0.8,
    rope_h_extrapolation_ratio=2.0,
    rope_w_extrapolation_ratio=3.0,
)


def _nearest_resize_shim() -> types.SimpleNamespace:
    """diffusers resizes the padding mask with torchvision, which this project does not install.
    torchvision's tensor NEAREST resize is F.interpolate(mode="nearest"), reproduced here."""

    def resize(img, size, interpolation=None):
        return F.interpolate(img, size=list(size), mode="nearest")

    functional = types.SimpleNamespace(resize=resize)
    mode = types.SimpleNamespace(NEAREST="nearest")
    return types.SimpleNamespace(functional=functional, InterpolationMode=mode)


def _pair(extra: bool):
    torch.manual_seed(0)
    ours = GeneralDIT(**SMALL, extra_per_block_abs_pos_emb=extra).eval()
    # Random everything (norm scales around one, position tables included) so that any
    # mis-mapped weight changes the output.
    with torch.no_grad():
        for param in ours.parameters():
            if param.ndim == 1:
                param.uniform_(0.5, 1.5)
            else:
                param.normal_(0.0, 1.0 / param.shape[-1] ** 0.5)
    ref = transformer_cosmos.CosmosTransformer3DModel(**diffusers_config(ours)).eval()
    ref.load_state_dict(official_to_diffusers(ours.state_dict()), strict=True)
    # Official q/k RMSNorm eps is 1e-6 (§4.1); diffusers builds them with its default 1e-5.
    for module in ref.modules():
        if isinstance(module, transformer_cosmos.Attention):
            module.norm_q.eps = module.norm_k.eps = 1e-6
    return ref, ours


@pytest.fixture(scope="module", params=[True, False], ids=["extra_pos_emb", "no_extra_pos_emb"])
def models(request):
    return _pair(request.param)


def _inputs(n_cond: list[int], seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    b, t, h, w = len(n_cond), 3, 6, 10
    x = torch.randn(b, 16, t, h, w, generator=g)
    timesteps = torch.rand(b, generator=g) * 3.2 - 2.1  # c_noise over sigma in [2e-4, 80]
    mask = torch.zeros(b, 1, t, h, w)
    for i, n in enumerate(n_cond):
        mask[i, :, :n] = 1.0
    text = torch.randn(b, 512, SMALL["crossattn_emb_channels"], generator=g)
    text[:, 40:] = 0.0  # zero-padded T5 slots, attended without a mask (§9 item 4)
    # Pixel-resolution padding mask (8x the latent), random so that nearest sampling matters.
    # diffusers repeats it over the batch, so it takes a single [1,1,H,W] mask.
    padding = (torch.rand(1, 1, 8 * h, 8 * w, generator=g) > 0.5).float()
    return x, timesteps, text, mask, padding


def _compare(ref, ours, x, timesteps, text, mask, padding, fps):
    with torch.no_grad(), pytest.MonkeyPatch.context() as mp:
        mp.setattr(transformer_cosmos, "transforms", _nearest_resize_shim(), raising=False)
        expected = ref(
            hidden_states=x,
            timestep=timesteps,
            encoder_hidden_states=text,
            fps=fps,
            condition_mask=mask,
            padding_mask=padding,
            return_dict=False,
        )[0]
        got = ours(
            x,
            timesteps,
            text,
            fps=fps,
            padding_mask=padding.expand(x.shape[0], -1, -1, -1),
            condition_video_input_mask_B_C_T_H_W=mask,
        )
    assert got.shape == expected.shape == x.shape
    rel = ((got - expected).norm() / expected.norm()).item()
    max_rel = ((got - expected).abs().max() / expected.abs().max()).item()
    print(f"fps={fps}: relative L2 error {rel:.2e}, max abs error / max abs {max_rel:.2e}")
    return rel, max_rel


@pytest.mark.parametrize("fps", [None, 4, 30])
@pytest.mark.parametrize("n_cond", [[1, 1], [0, 1], [1, 3]])
def test_video2world_parity(models, n_cond, fps):
    ref, ours = models
    rel, max_rel = _compare(ref, ours, *_inputs(n_cond), fps=fps)
    assert rel < 1e-5 and max_rel < 1e-5


def test_parity_detects_one_changed_weight(models):
    """Guards the test itself: a single perturbed weight must break parity."""
    ref, ours = models
    weight = ours.blocks["block1"].blocks[0].block.attn.to_q[0].weight
    saved = weight.detach().clone()
    try:
        with torch.no_grad():
            weight[0, 0] += 0.5
        rel, _ = _compare(ref, ours, *_inputs([1, 2], seed=3), fps=4)
    finally:
        with torch.no_grad():
            weight.copy_(saved)
    assert rel > 1e-4


def test_diffusers_weights_load_back_and_match(models):
    """diffusers -> official -> our net (the rope buffer, absent in diffusers, is filled in)."""
    ref, ours = models
    back = GeneralDIT(**SMALL, extra_per_block_abs_pos_emb=ours.extra_per_block_abs_pos_emb)
    load_official(back.eval(), diffusers_to_official(ref.state_dict()))
    x, timesteps, text, mask, padding = _inputs([1, 2], seed=4)
    with torch.no_grad():
        args = (x, timesteps, text)
        kw = dict(fps=4.0, condition_video_input_mask_B_C_T_H_W=mask)
        torch.testing.assert_close(back(*args, **kw), ours(*args, **kw), rtol=0, atol=0)


def test_key_conversion_round_trip_exact(models):
    ref, ours = models
    official = ours.state_dict()
    to_diffusers = official_to_diffusers(official)
    assert set(to_diffusers) == set(ref.state_dict())
    again = diffusers_to_official(to_diffusers)
    assert set(again) == set(official) - {"pos_embedder.seq"}
    assert all(again[k] is official[k] for k in again)
    reference = ref.state_dict()
    assert official_to_diffusers(diffusers_to_official(reference)).keys() == reference.keys()
    # TransformerEngine extra state is dropped on the way out; unknown keys pass through so a
    # strict load names them.
    extra = {"blocks.block0.blocks.0.block.attn.attn_op._extra_state": torch.zeros(0), "foo": 1}
    assert official_to_diffusers(extra) == {"foo": 1}
