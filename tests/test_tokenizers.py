"""Tokenizers: exact pixel round trip; Wan VAE loading (diffusers folder and original
`tokenizer.pth` naming), frame arithmetic and normalisation on a small random VAE."""

from __future__ import annotations

import re

import pytest
import torch
from diffusers import AutoencoderKLWan
from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers

from framework.models.meta import building_on_meta
from framework.models.tokenizers import PixelTokenizer, WanVAETokenizer, to_uint8, to_unit_range

SMALL = dict(
    base_dim=8, z_dim=4, latents_mean=[0.1, 0.2, -0.3, 0.0], latents_std=[1.5, 2.0, 0.5, 1.0]
)
WAN21_MEAN0, WAN21_STD0 = -0.7571, 2.8184  # upstream/cosmos_predict2.md §5, channel 0


@pytest.fixture(scope="module")
def small_vae() -> AutoencoderKLWan:
    torch.manual_seed(0)
    return AutoencoderKLWan(**SMALL).eval()


@pytest.fixture(scope="module")
def video() -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, 256, (2, 3, 9, 16, 16), generator=g, dtype=torch.uint8)


@pytest.mark.parametrize("spatial,temporal", [(2, 1), (4, 4)])
def test_pixel_tokenizer_round_trip_exact(spatial, temporal, video):
    tok = PixelTokenizer(spatial=spatial, temporal=temporal)
    z = tok.encode(video)
    assert z.shape == (
        2,
        3 * spatial**2 * temporal,
        tok.latent_frames(9),
        16 // spatial,
        16 // spatial,
    )
    assert tok.latent_frames(9) == (9 if temporal == 1 else 3)
    back = tok.decode(z)
    assert back.shape == (2, 3, tok.pixel_frames(z.shape[2]), 16, 16)
    assert torch.equal(to_uint8(back), video)
    assert torch.equal(back, to_unit_range(video))


def test_frame_arithmetic_matches_spec():
    tok = PixelTokenizer(spatial=8, temporal=4)
    assert [tok.latent_frames(n) for n in (93, 61, 1, 5, 81)] == [24, 16, 1, 2, 21]
    assert [tok.pixel_frames(t) for t in (24, 16, 1, 2)] == [93, 61, 1, 5]


def test_bad_inputs_raise_clear_errors(video):
    tok = PixelTokenizer(spatial=3)
    with pytest.raises(ValueError, match="multiples of 3"):
        tok.encode(video)
    with pytest.raises(ValueError, match=r"\[B,3,N,H,W\]"):
        tok.encode(video[:, :2])
    with pytest.raises(TypeError, match="uint8 or float"):
        PixelTokenizer(2).encode(video.long())
    with pytest.raises(FileNotFoundError, match="tokenizer path"):
        WanVAETokenizer("/nonexistent/tokenizer.pth")


def test_wan_default_config_is_wan21_on_meta():
    with torch.device("meta"):
        tok = WanVAETokenizer()  # default path is not read on meta
    assert (tok.latent_channels, tok.spatial_compression, tok.temporal_compression) == (16, 8, 4)
    assert tok._mean[0, 0].item() == pytest.approx(WAN21_MEAN0)
    assert tok._std[0, 0].item() == pytest.approx(WAN21_STD0)
    assert tok.latent_frames(93) == 24
    with building_on_meta():
        tok = WanVAETokenizer("/not/downloaded/tokenizer.pth")
    assert next(tok.parameters()).is_meta and tok.latent_channels == 16


def test_wan_diffusers_folder_encode_decode(tmp_path, small_vae, video):
    small_vae.save_pretrained(tmp_path / "vae")
    tok = WanVAETokenizer(str(tmp_path))  # finds the vae/ subfolder
    assert tok.latent_channels == 4 and not any(p.requires_grad for p in tok.parameters())
    z = tok.encode(video)
    assert z.shape == (2, 4, 3, 2, 2) and z.dtype == torch.float32
    mean = torch.tensor(SMALL["latents_mean"]).view(1, 4, 1, 1, 1)
    std = torch.tensor(SMALL["latents_std"]).view(1, 4, 1, 1, 1)
    with torch.no_grad():
        mu = small_vae.encode(video.float() / 127.5 - 1).latent_dist.mean
    torch.testing.assert_close(z, (mu - mean) / std, rtol=1e-5, atol=1e-5)
    # float [-1,1] input gives the same latent as uint8
    torch.testing.assert_close(tok.encode(video.float() / 127.5 - 1), z)
    # causal: the first 2 latents of 9 frames are the encoding of the first 5 frames
    torch.testing.assert_close(tok.encode(video[:, :, :5]), z[:, :, :2], rtol=1e-4, atol=1e-4)
    out = tok.decode(z)
    assert out.shape == (2, 3, 9, 16, 16) and out.abs().max() <= 1
    with torch.no_grad():
        ref = small_vae.decode(mu).sample
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
    # constructor constants override the config's
    tok2 = WanVAETokenizer(str(tmp_path / "vae"), latents_mean=[0.0] * 4, latents_std=[1.0] * 4)
    torch.testing.assert_close(tok2.encode(video), mu, rtol=1e-5, atol=1e-5)
    assert tok2.identity != tok.identity
    with pytest.raises(ValueError, match="latent channels"):
        WanVAETokenizer(str(tmp_path), latents_mean=[0.0] * 16, latents_std=[1.0] * 16)


_RES = {
    "norm1.gamma": "residual.0.gamma",
    "conv1": "residual.2",
    "norm2.gamma": "residual.3.gamma",
    "conv2": "residual.6",
    "conv_shortcut": "shortcut",
}


def _res_name(rest: str) -> str:
    for new, old in _RES.items():
        if rest.startswith(new):
            return old + rest[len(new) :]
    raise KeyError(rest)


def to_original_wan_keys(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Inverse of diffusers' `convert_wan_vae_to_diffusers` (original Wan2.1 `VAE_` names)."""
    out = {}
    for key, value in sd.items():
        k = key
        k = re.sub(r"^(encoder|decoder)\.conv_in\.", r"\1.conv1.", k)
        k = re.sub(r"^(encoder|decoder)\.norm_out\.", r"\1.head.0.", k)
        k = re.sub(r"^(encoder|decoder)\.conv_out\.", r"\1.head.2.", k)
        k = re.sub(r"^quant_conv\.", "conv1.", k)
        k = re.sub(r"^post_quant_conv\.", "conv2.", k)
        k = k.replace("mid_block.attentions.0.", "middle.1.")
        if m := re.match(r"^(encoder|decoder)\.mid_block\.resnets\.(\d)\.(.*)$", k):
            k = f"{m[1]}.middle.{2 * int(m[2])}.{_res_name(m[3])}"
        elif m := re.match(r"^encoder\.down_blocks\.(\d+)\.(.*)$", k):
            rest = m[2] if m[2].startswith(("resample", "time_conv")) else _res_name(m[2])
            k = f"encoder.downsamples.{m[1]}.{rest}"
        elif m := re.match(r"^decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.*)$", k):
            k = f"decoder.upsamples.{4 * int(m[1]) + int(m[2])}.{_res_name(m[3])}"
        elif m := re.match(r"^decoder\.up_blocks\.(\d+)\.upsamplers\.0\.(.*)$", k):
            k = f"decoder.upsamples.{4 * int(m[1]) + 3}.{m[2]}"
        out[k] = value
    return out


def test_wan_original_tokenizer_pth(tmp_path, small_vae, video):
    sd = small_vae.state_dict()
    original = to_original_wan_keys(sd)
    assert "decoder.middle.0.residual.0.gamma" in original
    # the inverse is exact: diffusers' converter maps it back key for key
    assert convert_wan_vae_to_diffusers(original).keys() == sd.keys()
    path = tmp_path / "tokenizer.pth"
    torch.save(original, path)
    ref = WanVAETokenizer(None, config=SMALL)
    ref.vae.load_state_dict(sd)
    tok = WanVAETokenizer(str(path), config=SMALL)
    torch.testing.assert_close(tok.encode(video), ref.encode(video))
    assert tok.identity.startswith("wan2.1-vae-")
    with pytest.raises(ValueError, match="matching `config`"):
        WanVAETokenizer(str(path), config=dict(SMALL, base_dim=16))


@pytest.mark.parametrize("given", [1, 5])
def test_wan_vae_first_latents_do_not_depend_on_later_frames(given, video):
    """WanVAETokenizer.causal: generation encodes only the given frames (WorldModel.generate)."""
    tok = WanVAETokenizer(None, config=SMALL)
    assert tok.causal
    full = tok.encode(video)
    prefix = tok.encode(video[:, :, :given])
    assert prefix.shape[2] == tok.latent_frames(given)
    torch.testing.assert_close(prefix, full[:, :, : prefix.shape[2]], rtol=1e-5, atol=1e-6)
    later = video.clone()
    later[:, :, given:] = 255 - later[:, :, given:]  # other later frames: same first latents
    torch.testing.assert_close(
        tok.encode(later)[:, :, : prefix.shape[2]], prefix, rtol=1e-5, atol=1e-6
    )
