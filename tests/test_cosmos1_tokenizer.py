"""Cosmos-Tokenize1-CV8x8x8 through AutoencoderKLCosmos: the real config, frame and spatial
mapping, per-frame normalisation, and offline loading from the official folder (TorchScript
archives read without running them), a diffusers folder, and a missing folder."""

from __future__ import annotations

import io
import pickle
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderKLCosmos
from torch import nn

from framework.models.cosmos1 import CosmosCV8x8x8Tokenizer
from framework.models.cosmos1.jit_archive import UnsafeArchiveError, read_torchscript_tensors
from framework.models.cosmos1.tokenizer import HUB_REPO, official_vae_to_diffusers
from framework.models.meta import building_on_meta

# Same structure as CV8x8x8 (haar patch 4, one temporal and one spatial downsample, attention in
# the mid blocks only), tiny channels.
SMALL = dict(
    encoder_block_out_channels=(8, 16, 16, 16),
    decode_block_out_channels=(16, 16, 16, 16),
    resolution=64,
    latents_mean=None,
    latents_std=None,
)
CV8X8X8_PARAMS = 105_653_696
# Fixtures write TorchScript archives the way upstream made its files.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")


@pytest.fixture(scope="module")
def small_vae() -> AutoencoderKLCosmos:
    torch.manual_seed(0)
    return AutoencoderKLCosmos(**SMALL).eval()


@pytest.fixture(scope="module")
def stats() -> tuple[torch.Tensor, torch.Tensor]:
    """A mean_std.pt-like pair: 16 channels x 16 latent frames, flattened channel-major."""
    g = torch.Generator().manual_seed(2)
    return torch.randn(256, generator=g) * 0.1, torch.rand(256, generator=g) + 0.5


def _video(b: int, n: int, h: int = 16, w: int = 24, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, 3, n, h, w), generator=g, dtype=torch.uint8)


def test_real_config_on_meta_and_frame_rules():
    with building_on_meta():
        tok = CosmosCV8x8x8Tokenizer("/not/downloaded")  # files are not read on meta
    assert next(tok.parameters()).is_meta
    assert sum(p.numel() for p in tok.parameters()) == CV8X8X8_PARAMS
    assert (tok.latent_channels, tok.spatial_compression, tok.temporal_compression) == (16, 8, 8)
    assert [tok.latent_frames(n) for n in (121, 57, 9, 1)] == [16, 8, 2, 1]
    assert [tok.pixel_frames(t) for t in (16, 8, 2, 1)] == [121, 57, 9, 1]
    # diffusers' default statistics are CV8x8x8-1.0's: 16 channels x 16 latent frames.
    assert tok._mean.shape == (1, 16, 16, 1, 1) and tok.max_latent_frames == 16


def test_real_config_random_weights_forward():
    torch.manual_seed(0)
    tok = CosmosCV8x8x8Tokenizer(None)
    z = tok.encode(_video(1, 9, 16, 16))
    assert z.shape == (1, 16, 2, 2, 2) and z.dtype == torch.float32 and torch.isfinite(z).all()
    out = tok.decode(z)
    assert out.shape == (1, 3, 9, 16, 16) and out.abs().max() <= 1


@pytest.mark.parametrize("n,t", [(57, 8), (9, 2), (1, 1)])
def test_small_frame_mapping_and_normalisation(small_vae, stats, n, t):
    tok = CosmosCV8x8x8Tokenizer(None, config=SMALL, latents_mean=stats[0], latents_std=stats[1])
    tok.vae.load_state_dict(small_vae.state_dict())
    video = _video(2, n)
    z = tok.encode(video)
    assert z.shape == (2, 16, t, 2, 3)
    x = video.float() / 127.5 - 1
    with torch.no_grad():
        raw = small_vae.encode(x).latent_dist.mode()
    # Per (channel, latent frame) statistics, the first t of the 16 stored frames (§5).
    mean = stats[0].view(1, 16, 16, 1, 1)[:, :, :t]
    std = stats[1].view(1, 16, 16, 1, 1)[:, :, :t]
    torch.testing.assert_close(z, (raw - mean) / std)
    out = tok.decode(z)
    assert out.shape == video.shape
    with torch.no_grad():
        ref = small_vae.decode(raw).sample.clamp(-1, 1)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)  # decode undoes the normalisation


def test_causal_first_frame_and_errors(small_vae):
    tok = CosmosCV8x8x8Tokenizer(None, config=SMALL)
    tok.vae.load_state_dict(small_vae.state_dict())
    video = _video(1, 9)
    # Latent frame 0 depends on pixel frame 0 only (the condition frame of Video2World, §3.5).
    torch.testing.assert_close(tok.encode(video)[:, :, :1], tok.encode(video[:, :, :1]))
    with pytest.raises(ValueError, match=r"encodes 1 \+ 8k frames; got 10. Use 9 frames"):
        tok.encode(_video(1, 10))
    with pytest.raises(ValueError, match="multiples of 8"):
        tok.encode(_video(1, 9, 12, 16))
    per_frame = CosmosCV8x8x8Tokenizer(
        None, config=SMALL, latents_mean=[0.0] * 32, latents_std=[1.0] * 32
    )
    with pytest.raises(ValueError, match=r"3 latent frames exceed the 2 per-frame statistics"):
        per_frame.encode(_video(1, 17))
    with pytest.raises(ValueError, match="not a multiple of the 16 latent channels"):
        CosmosCV8x8x8Tokenizer(None, config=SMALL, latents_mean=[0.0] * 20)


# ---- the official folder: encoder.jit / decoder.jit / mean_std.pt ----

_INVERSE = (  # diffusers -> official names, the inverse of VAE_RENAMES
    (r"mid_block\.resnets\.0\.", "mid.block_1."),
    (r"mid_block\.resnets\.1\.", "mid.block_2."),
    (r"mid_block\.attentions\.0\.", "mid.attn_1.0."),
    (r"mid_block\.temp_attentions\.0\.", "mid.attn_1.1."),
    (r"down_blocks\.(\d)\.", r"down.\1."),
    (r"\.resnets\.", ".block."),
    (r"downsamplers\.0\.", "downsample."),
    (r"upsamplers\.0\.", "upsample."),
    (r"\.to_q\.", ".q.conv3d."),
    (r"\.to_k\.", ".k.conv3d."),
    (r"\.to_v\.", ".v.conv3d."),
    (r"\.to_out\.0\.", ".proj_out.conv3d."),
    (r"\.conv_s\.", ".0.conv3d."),
    (r"\.conv_t\.", ".1.conv3d."),
    (r"\.(conv[123])\.(weight|bias)$", r".\1.conv3d.\2"),
    (r"conv_shortcut\.", "nin_shortcut.conv3d."),
    (r"^(post_)?quant_conv\.", r"\1quant_conv.conv3d."),
)


def to_official_names(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in sd.items():
        key = re.sub(r"up_blocks\.(\d)\.", lambda m: f"up.{2 - int(m[1])}.", key)
        for pattern, repl in _INVERSE:
            key = re.sub(pattern, repl, key)
        out[key] = value
    return out


class _Holder(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def save_torchscript(tensors: dict[str, torch.Tensor], path) -> None:
    """A TorchScript archive whose module tree holds `tensors` under their dotted names, as
    upstream's `torch.jit.script(model.encoder_jit())` files do."""
    root = _Holder()
    for key, value in tensors.items():
        *path_parts, leaf = key.split(".")
        module = root
        for part in path_parts:
            if not hasattr(module, part):
                module.add_module(part, _Holder())
            module = getattr(module, part)
        if leaf in ("weight", "bias"):
            module.register_parameter(leaf, nn.Parameter(value.clone()))
        else:
            module.register_buffer(leaf, value.clone())
    torch.jit.script(root).save(str(path))


def _official_folder(folder, vae: AutoencoderKLCosmos, stats, split: bool = True) -> None:
    official = to_official_names(vae.state_dict())
    # The forward table maps these names back exactly.
    assert official_vae_to_diffusers(official).keys() == vae.state_dict().keys()
    wavelets = {"wavelets": torch.tensor([2**-0.5, 2**-0.5]), "_arange": torch.arange(2)}
    enc = {k: v for k, v in official.items() if k.startswith(("encoder.", "quant_conv."))}
    dec = {k: v for k, v in official.items() if k.startswith(("decoder.", "post_quant_conv."))}
    enc.update({f"encoder.patcher3d.{k}": v for k, v in wavelets.items()})
    dec.update({f"decoder.unpatcher3d.{k}": v for k, v in wavelets.items()})
    folder.mkdir(parents=True, exist_ok=True)
    if split:
        save_torchscript(enc, folder / "encoder.jit")
        save_torchscript(dec, folder / "decoder.jit")
    else:
        save_torchscript({**enc, **dec}, folder / "autoencoder.jit")
    torch.save(stats, folder / "mean_std.pt")


@pytest.mark.parametrize("split", [True, False], ids=["encoder_decoder_jit", "autoencoder_jit"])
def test_official_folder_loads_weights_only(tmp_path, small_vae, stats, split):
    folder = tmp_path / "Cosmos-Tokenize1-CV8x8x8-720p"
    _official_folder(folder, small_vae, stats, split=split)
    tok = CosmosCV8x8x8Tokenizer(str(folder), config=SMALL)
    for k, v in small_vae.state_dict().items():
        assert torch.equal(tok.vae.state_dict()[k], v), k
    assert tok.max_latent_frames == 16 and not any(p.requires_grad for p in tok.parameters())
    ref = CosmosCV8x8x8Tokenizer(None, config=SMALL, latents_mean=stats[0], latents_std=stats[1])
    ref.vae.load_state_dict(small_vae.state_dict())
    video = _video(1, 9)
    torch.testing.assert_close(tok.encode(video), ref.encode(video))
    assert tok.identity.startswith("cosmos-cv8x8x8-") and tok.identity != ref.identity
    # A different config does not load silently.
    with pytest.raises(ValueError, match=r"do not match the CV8x8x8 config \(.*wrong shape"):
        CosmosCV8x8x8Tokenizer(str(folder), config={**SMALL, "latent_channels": 8})


def test_jit_archive_reader_matches_torch_jit_and_runs_no_code(tmp_path):
    tensors = {"a.weight": torch.randn(3, 2), "a.b.0.bias": torch.randn(4).bfloat16()}
    tensors["c.buf"] = torch.arange(6).view(2, 3).t()  # non-contiguous buffer
    save_torchscript(tensors, tmp_path / "m.jit")
    got = read_torchscript_tensors(tmp_path / "m.jit")
    assert got.keys() == torch.jit.load(str(tmp_path / "m.jit")).state_dict().keys()
    for k, v in tensors.items():
        assert torch.equal(got[k], v) and got[k].dtype == v.dtype

    # The same archive with data.pkl replaced by a pickle that calls os.system when loaded.
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            import os

            return (os.system, (f"touch {marker}",))

    with (
        zipfile.ZipFile(tmp_path / "m.jit") as src,
        zipfile.ZipFile(tmp_path / "evil.jit", "w") as dst,
    ):
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename.endswith("/data.pkl"):
                data = pickle.dumps(Evil(), protocol=2)
            dst.writestr(item, data)
    with pytest.raises(UnsafeArchiveError, match="holds more than modules and tensors"):
        read_torchscript_tensors(tmp_path / "evil.jit")
    assert not marker.exists()
    (tmp_path / "junk.jit").write_bytes(b"not a zip")
    with pytest.raises(UnsafeArchiveError, match="is not a TorchScript archive"):
        read_torchscript_tensors(tmp_path / "junk.jit")


def test_diffusers_folder(tmp_path, small_vae, stats):
    vae = AutoencoderKLCosmos(
        **{**SMALL, "latents_mean": stats[0].tolist(), "latents_std": stats[1].tolist()}
    )
    vae.load_state_dict(small_vae.state_dict())
    vae.save_pretrained(tmp_path / "pipeline" / "vae")
    tok = CosmosCV8x8x8Tokenizer(str(tmp_path / "pipeline"))  # finds the vae/ subfolder
    ref = CosmosCV8x8x8Tokenizer(None, config=SMALL, latents_mean=stats[0], latents_std=stats[1])
    ref.vae.load_state_dict(small_vae.state_dict())
    video = _video(1, 9)
    torch.testing.assert_close(tok.encode(video), ref.encode(video))


def test_missing_folder_names_the_download_command(tmp_path):
    for path in (tmp_path / "absent", tmp_path):  # no folder; a folder without the files
        with pytest.raises(FileNotFoundError) as err:
            CosmosCV8x8x8Tokenizer(str(path))
        message = str(err.value)
        assert "\n" not in message
        assert f"hf download {HUB_REPO} encoder.jit decoder.jit mean_std.pt" in message
        assert f"--local-dir {path}" in message


def test_mean_std_must_be_plain_tensors(tmp_path, small_vae, stats):
    folder = tmp_path / "tok"
    _official_folder(folder, small_vae, stats)
    buf = io.BytesIO()
    pickle.dump({"mean": print}, buf, protocol=2)
    (folder / "mean_std.pt").write_bytes(buf.getvalue())
    with pytest.raises(ValueError, match="readable with weights_only=True"):
        CosmosCV8x8x8Tokenizer(str(folder), config=SMALL)


@pytest.mark.slow
def test_a_dry_run_first_does_not_leave_later_tokenizers_on_meta():
    """A dry run that is the process's first import of diffusers' CV8x8x8 module once made its
    module-level wavelets meta tensors, so every later tokenizer failed its first encode. A fresh
    interpreter, since this one has imported the module already."""
    code = f"""
import torch
from framework.models.cosmos1 import CosmosCV8x8x8Tokenizer
from framework.models.meta import building_on_meta
with torch.device("meta"), building_on_meta():
    CosmosCV8x8x8Tokenizer(None, config={SMALL!r})
tok = CosmosCV8x8x8Tokenizer(None, config={SMALL!r})
print(tok.encode(torch.zeros(1, 3, 9, 16, 24, dtype=torch.uint8)).device)
"""
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["cpu"]


@pytest.mark.parametrize("given", [1, 9])
def test_first_latents_do_not_depend_on_later_frames(given, stats):
    """CosmosCV8x8x8Tokenizer.causal: generation encodes only the given frames."""
    tok = CosmosCV8x8x8Tokenizer(None, config=SMALL, latents_mean=stats[0], latents_std=stats[1])
    assert tok.causal
    video = _video(1, 17)
    full = tok.encode(video)
    prefix = tok.encode(video[:, :, :given])
    assert prefix.shape[2] == tok.latent_frames(given)
    torch.testing.assert_close(prefix, full[:, :, : prefix.shape[2]], rtol=1e-5, atol=1e-5)


def test_scaled_tokenizer_is_causal_when_its_tokenizer_is(stats):
    """Predict1's tokenizer is ScaledTokenizer(CV8x8x8): it reports the inner `causal`, so
    generation encodes only the given frames through it (as for the Predict2 family)."""
    from framework.models.cosmos1.latent_scale import ScaledTokenizer
    from framework.models.tokenizers import PixelTokenizer
    from tests.test_world_model import StandInNet, make_batch, make_model

    cv = CosmosCV8x8x8Tokenizer(None, config=SMALL, latents_mean=stats[0], latents_std=stats[1])
    assert ScaledTokenizer(cv, 0.5).causal
    inner = PixelTokenizer(spatial=2, temporal=4)
    inner.causal = False
    assert not ScaledTokenizer(inner, 0.5).causal
    inner.causal = True
    model = make_model(StandInNet(48), state_t=3, tokenizer=ScaledTokenizer(inner, 0.5))
    frames = []
    encode = inner.encode
    inner.encode = lambda x: frames.append(x.shape[2]) or encode(x)
    batch = make_batch(b=1, frames=9)
    model.generate(
        batch["video"][:, :, :1],
        batch["t5_text_embeddings"],
        num_conditional_frames=1,
        num_steps=2,
        seed=0,
    )
    assert frames == [1]  # not the 9-frame padded clip
