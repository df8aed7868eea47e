"""Cosmos-Tokenize1-CV8x8x8-720p, the Predict1 video tokenizer, through diffusers'
`AutoencoderKLCosmos` (docs/upstream/cosmos_predict1.md §5).

Continuous causal autoencoder: [-1, 1] video [B,3,N,H,W] with N = 1 + 8k -> latent
[B,16,1+k,H/8,W/8] (57 -> 8, 9 -> 2, 1 -> 1; latent frame 0 depends on pixel frame 0 only).
Latents are normalised per channel and per latent-frame index with the official `mean_std.pt`:
encode (E(x) - mean[:, :, :T]) / std[:, :, :T], decode D(z * std + mean). The x sigma_data (0.5)
of §3.2 belongs to the objective, not here. A clip is encoded as one chunk, which is upstream's
setting for the Bridge experiment (pixel_chunk_duration 57); the stats cover up to 16 latent
frames (121 pixel frames). Upstream normalises in bf16; here it is fp32 (the VAE itself runs in
bf16 on CUDA, as upstream).

Weights, offline, from `path` (a local folder):

- The official folder, `hf download nvidia/Cosmos-Tokenize1-CV8x8x8-720p` (what upstream's
  download script fetches): `encoder.jit` + `decoder.jit` (or `autoencoder.jit`) and
  `mean_std.pt`. The .jit files are TorchScript, i.e. code, and are never run: their tensors are
  read from the zip by an unpickler that refuses every global but tensors
  (framework/models/cosmos1/jit_archive.py). encoder.jit holds `encoder.*` and `quant_conv.*`,
  decoder.jit `post_quant_conv.*` and `decoder.*` (upstream's `encoder_jit()` and
  `decoder_jit()`); together they are the key set of `autoencoder.jit`, which diffusers'
  converter maps with the table of docs/upstream/peers.md §b.4 (`VAE_RENAMES` below):
  `down.i -> down_blocks.i`, `up.i -> up_blocks.(2-i)`, `.block. -> .resnets.`, mid-block and
  attention names, `.0.conv3d / .1.conv3d -> .conv_s / .conv_t`, `X.conv3d -> X`. The wavelet
  buffers (`wavelets`, `_arange`, `patch_size_buffer`) are constants diffusers rebuilds and are
  dropped. The result loads strictly into `AutoencoderKLCosmos()`, whose defaults are the
  CV8x8x8 config. `mean_std.pt` is read with `framework.io.load_torch_file` (weights_only):
  (mean, std), each viewed [16, -1] (channel, latent frame).
- A diffusers folder (`config.json` + safetensors, or one with a `vae/` subfolder), e.g. the
  `vae/` of a converted Cosmos 1.0 pipeline; its config's latents_mean/std are the same
  (channel, frame) table, flattened.
- None: random weights (tests, dry runs).
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from framework.io import UnsafeFileError, load_torch_file
from framework.models.cosmos1.jit_archive import read_torchscript_tensors
from framework.models.tokenizers import _TokenizerBase, argument, to_unit_range

HUB_REPO = "nvidia/Cosmos-Tokenize1-CV8x8x8-720p"
LOCAL_DIR = "checkpoints/nvidia/Cosmos-Tokenize1-CV8x8x8-720p"
OFFICIAL_FILES = ("encoder.jit", "decoder.jit", "mean_std.pt")

# diffusers' converter table for the Cosmos tokenizer (docs/upstream/peers.md §b.4), applied in
# this order as substring replacements to official key names.
VAE_RENAMES: tuple[tuple[str, str], ...] = (
    ("down.0", "down_blocks.0"),
    ("down.1", "down_blocks.1"),
    ("down.2", "down_blocks.2"),
    ("up.0", "up_blocks.2"),
    ("up.1", "up_blocks.1"),
    ("up.2", "up_blocks.0"),
    (".block.", ".resnets."),
    ("downsample", "downsamplers.0"),
    ("upsample", "upsamplers.0"),
    ("mid.block_1", "mid_block.resnets.0"),
    ("mid.attn_1.0", "mid_block.attentions.0"),
    ("mid.attn_1.1", "mid_block.temp_attentions.0"),
    ("mid.block_2", "mid_block.resnets.1"),
    (".q.conv3d", ".to_q"),
    (".k.conv3d", ".to_k"),
    (".v.conv3d", ".to_v"),
    (".proj_out.conv3d", ".to_out.0"),
    (".0.conv3d", ".conv_s"),
    (".1.conv3d", ".conv_t"),
    ("conv1.conv3d", "conv1"),
    ("conv2.conv3d", "conv2"),
    ("conv3.conv3d", "conv3"),
    ("nin_shortcut.conv3d", "conv_shortcut"),
    ("quant_conv.conv3d", "quant_conv"),
    ("post_quant_conv.conv3d", "post_quant_conv"),
)
# Haar-wavelet buffers of the official patcher: constants diffusers rebuilds (same table).
VAE_DROPPED: tuple[str, ...] = ("*wavelets", "*_arange", "*patch_size_buffer")


def official_vae_to_diffusers(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """Official tokenizer key names -> `AutoencoderKLCosmos` names, dropping the wavelet buffers."""
    out = {}
    for key, value in state_dict.items():
        if any(fnmatch.fnmatchcase(key, p) for p in VAE_DROPPED):
            continue
        for old, new in VAE_RENAMES:
            key = key.replace(old, new)
        out[key] = value
    return out


def _missing(path: str) -> FileNotFoundError:
    return FileNotFoundError(
        f"Cosmos tokenizer weights not found in {path!r}; download them with `hf download "
        f"{HUB_REPO} {' '.join(OFFICIAL_FILES)} --local-dir {path}` (or point the tokenizer path "
        "at a diffusers AutoencoderKLCosmos folder)."
    )


def _stats(values: Sequence[float] | Tensor | None, channels: int, fill: float) -> Tensor:
    """Per-(channel, latent frame) statistics [1, C, N, 1, 1] in fp32."""
    if values is None:
        return torch.full((1, channels, 1, 1, 1), fill, device="cpu")
    # Always CPU, also under a meta default device (--dryrun): statistics are data, not weights.
    t = torch.as_tensor(values, dtype=torch.float32, device="cpu").detach().reshape(-1)
    if t.numel() % channels:
        raise ValueError(
            f"Latent mean/std have {t.numel()} values, not a multiple of the "
            f"{channels} latent channels; pass the matching mean_std.pt."
        )
    return t.view(1, channels, -1, 1, 1).clone()


class CosmosCV8x8x8Tokenizer(_TokenizerBase):
    """The Predict1 tokenizer, frozen; the same interface as `WanVAETokenizer`.

    `path`: see the module docstring. `config`: `AutoencoderKLCosmos` kwargs for official files
    and random weights (default: the real CV8x8x8 config; a diffusers folder carries its own).
    `latents_mean/std`: override the file's or config's statistics (flat, channel-major).
    `dtype` None means bf16 on CUDA (as upstream) and float32 elsewhere.
    """

    causal = True  # causal 3D convolutions in time (tests/test_*tokenizer*.py check it)

    def __init__(
        self,
        path: str | None = LOCAL_DIR,
        *,
        config: dict | None = None,
        latents_mean: Sequence[float] | None = None,
        latents_std: Sequence[float] | None = None,
        dtype: str | None = None,
    ) -> None:
        super().__init__()
        self.vae, file_stats, self._files = self._build(path, dict(config or {}))
        self.vae.requires_grad_(False).eval()
        self.vae.use_slicing = True  # one sample at a time bounds activation memory
        cfg = self.vae.config
        self.latent_channels = int(cfg.latent_channels)
        self.spatial_compression = int(cfg.spatial_compression_ratio)
        self.temporal_compression = int(cfg.temporal_compression_ratio)
        mean = latents_mean if latents_mean is not None else file_stats[0]
        std = latents_std if latents_std is not None else file_stats[1]
        self._mean = _stats(mean, self.latent_channels, 0.0)
        self._std = _stats(std, self.latent_channels, 1.0)
        if self._mean.shape != self._std.shape:
            raise ValueError(
                f"Latent mean and std have different shapes "
                f"{tuple(self._mean.shape)} and {tuple(self._std.shape)}."
            )
        # Per-frame statistics bound the clip length; a single column applies to every frame.
        self.max_latent_frames = self._mean.shape[2] if self._mean.shape[2] > 1 else None
        self._dtype_name = dtype
        self.identity = self._identity(path)

    @classmethod
    def compression_for(cls, node: Mapping) -> tuple[int, int]:
        """From `config` over AutoencoderKLCosmos's defaults (the CV8x8x8 ratios)."""
        from framework.models.meta import import_on_cpu

        vae, config = import_on_cpu("diffusers", "AutoencoderKLCosmos"), node.get("config") or {}
        keys = ("spatial_compression_ratio", "temporal_compression_ratio")
        return tuple(int(argument(vae, config, k)) for k in keys)

    @staticmethod
    def _build(path: str | None, config: dict) -> tuple[nn.Module, tuple, list[str]]:
        from framework.models.meta import import_on_cpu, on_meta

        AutoencoderKLCosmos = import_on_cpu("diffusers", "AutoencoderKLCosmos")
        if on_meta() or torch.get_default_device().type == "meta":
            # A dry run needs shapes only, not weights.
            with torch.device("meta"):
                vae = AutoencoderKLCosmos(**config)
            return vae, (vae.config.latents_mean, vae.config.latents_std), []
        if path is None:
            vae = AutoencoderKLCosmos(**config)
            return vae, (vae.config.latents_mean, vae.config.latents_std), []
        if not os.path.isdir(path):
            raise _missing(path)
        for folder in (path, os.path.join(path, "vae")):
            if os.path.isfile(os.path.join(folder, "config.json")):
                vae = AutoencoderKLCosmos.from_pretrained(folder, local_files_only=True)
                files = [os.path.join(folder, f) for f in sorted(os.listdir(folder))]
                return vae, (vae.config.latents_mean, vae.config.latents_std), files
        return _load_official(path, config)

    def _identity(self, path: str | None) -> str:
        """Stable across machines: file names and sizes, config and normalisation constants."""
        files = [(os.path.basename(f), os.path.getsize(f)) for f in self._files]
        cfg = {
            k: v
            for k, v in self.vae.config.items()
            if not k.startswith("_") and k not in ("latents_mean", "latents_std")
        }
        blob = json.dumps(
            [
                os.path.basename(str(path)),
                files,
                cfg,
                self._mean.flatten().tolist(),
                self._std.flatten().tolist(),
            ],
            sort_keys=True,
            default=str,
        )
        return "cosmos-cv8x8x8-" + hashlib.sha1(blob.encode()).hexdigest()[:12]

    def compute_dtype(self, device: torch.device) -> torch.dtype:
        if self._dtype_name is not None:
            return getattr(torch, self._dtype_name)
        return torch.bfloat16 if device.type == "cuda" else torch.float32

    def place(self, device: torch.device | str) -> None:
        device = torch.device(device)
        dtype = self.compute_dtype(device)
        p = next(self.vae.parameters())
        if p.device != device or p.dtype != dtype:
            self.vae.to(device=device, dtype=dtype)

    def _frame_stats(self, t: int, device: torch.device) -> tuple[Tensor, Tensor]:
        if self.max_latent_frames is not None and t > self.max_latent_frames:
            raise ValueError(
                f"{t} latent frames exceed the {self.max_latent_frames} per-frame statistics of "
                f"the tokenizer ({self.pixel_frames(self.max_latent_frames)} pixel frames); use "
                "shorter clips."
            )
        n = 1 if self.max_latent_frames is None else t
        return self._mean[:, :, :n].to(device), self._std[:, :, :n].to(device)

    @torch.no_grad()
    def encode(self, video: Tensor) -> Tensor:
        """Normalised latent (z - mean) / std, float32 [B, 16, 1 + (N-1)/8, H/8, W/8]."""
        self._check_video(video)
        n = video.shape[2]
        if (n - 1) % self.temporal_compression:
            raise ValueError(
                f"The Cosmos tokenizer encodes 1 + {self.temporal_compression}k frames; got {n}. "
                f"Use {self.pixel_frames(self.latent_frames(n))} frames."
            )
        x = to_unit_range(video)
        self.place(x.device)
        z = self.vae.encode(x.to(self.vae.dtype)).latent_dist.mode().float()
        mean, std = self._frame_stats(z.shape[2], z.device)
        return (z - mean) / std

    @torch.no_grad()
    def decode(self, latent: Tensor) -> Tensor:
        """Video in [-1, 1], float32."""
        self._check_latent(latent)
        self.place(latent.device)
        mean, std = self._frame_stats(latent.shape[2], latent.device)
        z = latent.float() * std + mean
        return self.vae.decode(z.to(self.vae.dtype)).sample.float().clamp(-1, 1)


def _load_official(path: str, config: dict) -> tuple[nn.Module, tuple, list[str]]:
    """The official folder: encoder.jit + decoder.jit (or autoencoder.jit) and mean_std.pt."""
    from diffusers import AutoencoderKLCosmos

    names = (
        ["encoder.jit", "decoder.jit"]
        if all(os.path.isfile(os.path.join(path, f)) for f in ("encoder.jit", "decoder.jit"))
        else ["autoencoder.jit"]
    )
    files = [os.path.join(path, f) for f in (*names, "mean_std.pt")]
    if not all(os.path.isfile(f) for f in files):
        raise _missing(path)
    official: dict[str, Tensor] = {}
    for f in files[:-1]:
        official.update(read_torchscript_tensors(f))
    sd = official_vae_to_diffusers(official)
    try:
        mean, std = load_torch_file(files[-1])
    except (UnsafeFileError, ValueError, TypeError) as err:
        raise ValueError(
            f"{files[-1]!r} is not a (mean, std) pair of tensors readable with "
            f"weights_only=True: {str(err).splitlines()[0]}"
        ) from None
    vae = AutoencoderKLCosmos(**{**config, "latents_mean": None, "latents_std": None})
    expected = vae.state_dict()
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    wrong = [
        f"{k} {tuple(v.shape)}"
        for k, v in sd.items()
        if k in expected and expected[k].shape != v.shape
    ]
    if missing or unexpected or wrong:
        detail = "; ".join(
            f"{label}: {', '.join(keys[:4])}" + (" ..." if len(keys) > 4 else "")
            for label, keys in (
                ("missing", missing),
                ("unexpected", unexpected),
                ("wrong shape", wrong),
            )
            if keys
        )
        raise ValueError(
            f"The tokenizer files in {path!r} do not match the CV8x8x8 config "
            f"({detail}); pass the matching `config`."
        )
    vae.load_state_dict(sd, strict=True)
    return vae, (mean, std), files
