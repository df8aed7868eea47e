"""Parity of MiniTrainDiT with diffusers' CosmosTransformer3DModel on converted weights."""

from __future__ import annotations

import types

import pytest
import torch
import torch.nn.functional as F

from framework.models.cosmos2 import MiniTrainDiT, load_official
from framework.models.cosmos2.convert import diffusers_to_official, official_to_diffusers

transformer_cosmos = pytest.importorskip("diffusers.models.transformers.transformer_cosmos")

# h and w ratios differ on purpose, so a swapped axis or a mis-mapped rope_scale shows up.
RATIOS = dict(
    rope_t_extrapolation_ratio=0.8, rope_h_extrapolation_ratio=2.0, rope_w_extrapolation_ratio=3.0
)
HEADS, HEAD_DIM, LAYERS, TEXT_DIM, LORA_DIM = 3, 64, 2, 48, 32


def _nearest_resize_shim() -> types.SimpleNamespace:
    """diffusers resizes the padding mask with torchvision, which this project does not install.
    torchvision's tensor NEAREST resize is F.interpolate(mode="nearest"), reproduced here."""

    def resize(img, size, interpolation=None):
        return F.interpolate(img, size=list(size), mode="nearest")

    functional = types.SimpleNamespace(resize=resize)
    mode = types.SimpleNamespace(NEAREST="nearest")
    return types.SimpleNamespace(functional=functional, InterpolationMode=mode)


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    ref = transformer_cosmos.CosmosTransformer3DModel(
        in_channels=17,
        out_channels=16,
        num_attention_heads=HEADS,
        attention_head_dim=HEAD_DIM,
        num_layers=LAYERS,
        mlp_ratio=4.0,
        text_embed_dim=TEXT_DIM,
        adaln_lora_dim=LORA_DIM,
        max_size=(128, 240, 240),
        patch_size=(1, 2, 2),
        rope_scale=(
            RATIOS["rope_t_extrapolation_ratio"],
            RATIOS["rope_h_extrapolation_ratio"],
            RATIOS["rope_w_extrapolation_ratio"],
        ),
        concat_padding_mask=True,
        extra_pos_embed_type=None,
    ).eval()
    # Re-init everything (diffusers zero-inits nothing here, but norms start at one): random norm
    # scales and linears so that any mis-mapped weight changes the output.
    with torch.no_grad():
        for name, param in ref.named_parameters():
            if name.endswith("norm_q.weight") or name.endswith("norm_k.weight") or "norm." in name:
                param.uniform_(0.5, 1.5)
            else:
                param.normal_(0.0, 1.0 / param.shape[-1] ** 0.5)
    # Official q/k RMSNorm eps is 1e-6 (upstream/cosmos_predict2.md §4.5); diffusers builds them
    # with its default 1e-5.
    for module in ref.modules():
        if isinstance(module, transformer_cosmos.Attention):
            module.norm_q.eps = module.norm_k.eps = 1e-6

    ours = MiniTrainDiT(
        model_channels=HEADS * HEAD_DIM,
        num_blocks=LAYERS,
        num_heads=HEADS,
        crossattn_emb_channels=TEXT_DIM,
        adaln_lora_dim=LORA_DIM,
        **RATIOS,
    ).eval()
    load_official(ours, {"net." + k: v for k, v in diffusers_to_official(ref.state_dict()).items()})
    return ref, ours


def _inputs(n_cond: list[int], per_frame: bool, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    b, t, h, w = len(n_cond), 3, 6, 10
    x = torch.randn(b, 16, t, h, w, generator=g)
    t_frame = torch.rand(b, 1, generator=g).expand(b, t).clone()
    mask = torch.zeros(b, 1, t, h, w)
    for i, n in enumerate(n_cond):
        mask[i, :, :n] = 1.0
        # conditional frames' timestep (upstream/cosmos_predict2.md §4.1.7)
        t_frame[i, :n] = 1e-4 / 1.0001
    if per_frame:
        t_frame = t_frame + 0.05 * torch.rand(b, t, generator=g)
    text = torch.randn(b, 512, TEXT_DIM, generator=g)
    text[:, 300:] = 0.0  # zero-padded T5 slots, attended without a mask
    # Pixel-resolution padding mask (8x the latent), random so that nearest sampling matters.
    # diffusers repeats it over the batch, so it takes a single [1,1,H,W] mask.
    padding = (torch.rand(1, 1, 8 * h, 8 * w, generator=g) > 0.5).float()
    return x, t_frame, text, mask, padding


def _compare(ref, ours, x, t_frame, text, mask, padding, t_ref):
    with torch.no_grad(), pytest.MonkeyPatch.context() as mp:
        mp.setattr(transformer_cosmos, "transforms", _nearest_resize_shim(), raising=False)
        expected = ref(
            hidden_states=x,
            timestep=t_ref,
            encoder_hidden_states=text,
            fps=None,
            condition_mask=mask,
            padding_mask=padding,
            return_dict=False,
        )[0]
        got = ours(x, t_frame, text, mask, padding.expand(x.shape[0], -1, -1, -1))
    assert got.shape == expected.shape == x.shape
    rel = ((got - expected).norm() / expected.norm()).item()
    max_rel = ((got - expected).abs().max() / expected.abs().max()).item()
    print(f"relative L2 error {rel:.2e}, max abs error / max abs {max_rel:.2e}")
    return rel, max_rel


@pytest.mark.parametrize("n_cond", [[1, 1], [2, 2], [1, 2]])
def test_video2world_per_frame_timesteps(models, n_cond):
    ref, ours = models
    x, t_frame, text, mask, padding = _inputs(n_cond, per_frame=True)
    b, t = t_frame.shape
    rel, max_rel = _compare(
        ref, ours, x, t_frame, text, mask, padding, t_ref=t_frame.view(b, 1, t, 1, 1)
    )
    assert rel < 1e-5 and max_rel < 1e-5


def test_single_timestep_per_sample(models):
    ref, ours = models
    x, t_frame, text, mask, padding = _inputs([1, 2], per_frame=False, seed=2)
    t_sample = torch.tensor([0.3, 0.9])
    rel, max_rel = _compare(ref, ours, x, t_sample, text, mask, padding, t_ref=t_sample)
    assert rel < 1e-5 and max_rel < 1e-5


def test_parity_detects_a_swapped_weight(models):
    """Guards the test itself: a single wrong weight must break parity."""
    ref, ours = models
    x, t_frame, text, mask, padding = _inputs([1, 2], per_frame=True, seed=3)
    b, t = t_frame.shape
    block = ours.blocks[1].self_attn
    saved = block.q_proj.weight.detach().clone()
    try:
        with torch.no_grad():
            block.q_proj.weight.copy_(block.k_proj.weight)
        rel, _ = _compare(
            ref, ours, x, t_frame, text, mask, padding, t_ref=t_frame.view(b, 1, t, 1, 1)
        )
    finally:
        with torch.no_grad():
            block.q_proj.weight.copy_(saved)
    assert rel > 1e-3


def test_key_conversion_round_trip(models):
    ref, ours = models
    official = ours.state_dict()
    assert set(official_to_diffusers(official)) == set(ref.state_dict())
    assert diffusers_to_official(official_to_diffusers(official)).keys() == official.keys()
