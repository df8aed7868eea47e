"""Video tokenizers: the Wan2.1 VAE of Cosmos-Predict2 (through diffusers) and an exact
space-to-depth pixel tokenizer for tiny CPU runs. Both share one interface
(upstream/cosmos_predict2.md §5):

    latent_channels, spatial_compression, temporal_compression, identity,
    latent_frames(n), pixel_frames(t), encode(video) -> latent, decode(latent) -> [-1, 1] video,
    place(device) (move once to the device and its compute dtype).

Videos are [B,3,N,H,W], uint8 or float in [-1,1]; latents are float32 [B,C,T,H/s,W/s] with
T = 1 + (N - 1) // temporal_compression (93 -> 24 for the Wan VAE).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from einops import rearrange
from torch import Tensor, nn

from framework.data.pixels import to_uint8, to_unit_range  # noqa: F401  (re-exported)
from framework.io import read_checkpoint

# The tokenizer shipped with the Video2World checkpoints (upstream/cosmos_predict2.md §5); the GR00T
# 14B models use the identical 14B copy.
WAN21_HUB_FILE = "hf://nvidia/Cosmos-Predict2-2B-Video2World/tokenizer/tokenizer.pth"
WAN21_LOCAL_FILE = "checkpoints/nvidia/Cosmos-Predict2-2B-Video2World/tokenizer/tokenizer.pth"


class _TokenizerBase(nn.Module):
    """Frame arithmetic and input checks shared by the tokenizers."""

    spatial_compression: int
    temporal_compression: int
    latent_channels: int
    # True when the first latents do not depend on later frames: encode(x[:, :, :n]) equals the
    # first latent_frames(n) latents of encode(x) (tested per tokenizer). Generation then encodes
    # only the given frames instead of the whole padded clip.
    causal: bool = False

    def latent_frames(self, num_pixel_frames: int) -> int:
        return 1 + (num_pixel_frames - 1) // self.temporal_compression

    def pixel_frames(self, num_latent_frames: int) -> int:
        return self.temporal_compression * (num_latent_frames - 1) + 1

    def _check_video(self, video: Tensor) -> None:
        s = self.spatial_compression
        if video.ndim != 5 or video.shape[1] != 3:
            raise ValueError(f"Video must be [B,3,N,H,W]; got shape {tuple(video.shape)}.")
        if video.shape[3] % s or video.shape[4] % s:
            raise ValueError(
                f"Video height and width {tuple(video.shape[3:])} must be multiples of {s} (the "
                "tokenizer's spatial compression); choose a video size that is (in training "
                "data.dataset.video_size)."
            )

    def _check_latent(self, latent: Tensor) -> None:
        if latent.ndim != 5 or latent.shape[1] != self.latent_channels:
            raise ValueError(
                f"Latent must be [B,{self.latent_channels},T,H,W]; got {tuple(latent.shape)}."
            )

    def place(self, device: torch.device | str) -> None:
        """Move to `device` (no-op if already there)."""
        self.to(device)


class PixelTokenizer(_TokenizerBase):
    """Space-to-depth by `spatial` and frame stacking by `temporal`: an exact, weight-free inverse
    pair for tiny CPU experiments. The first frame is repeated `temporal - 1` times in front so the
    frame rule matches the causal VAE (1 + 4k frames -> 1 + k latents when temporal = 4)."""

    def __init__(self, spatial: int = 8, temporal: int = 1) -> None:
        super().__init__()
        if spatial < 1 or temporal < 1:
            raise ValueError(
                f"PixelTokenizer needs spatial, temporal >= 1; got {spatial}, {temporal}."
            )
        self.spatial_compression = spatial
        self.temporal_compression = temporal
        self.latent_channels = 3 * spatial * spatial * temporal
        self.identity = f"pixel-s{spatial}-t{temporal}"
        self.causal = True  # frame groups after the first never reach back

    @classmethod
    def compression_for(cls, node: Mapping) -> tuple[int, int]:
        return int(argument(cls, node, "spatial")), int(argument(cls, node, "temporal"))

    @torch.no_grad()
    def encode(self, video: Tensor) -> Tensor:
        self._check_video(video)
        x = to_unit_range(video).float()
        t, s = self.temporal_compression, self.spatial_compression
        n = self.pixel_frames(self.latent_frames(x.shape[2]))
        x = torch.cat([x[:, :, :1].expand(-1, -1, t - 1, -1, -1), x[:, :, :n]], dim=2)
        return rearrange(x, "b c (l t) (h p) (w q) -> b (c t p q) l h w", t=t, p=s, q=s)

    @torch.no_grad()
    def decode(self, latent: Tensor) -> Tensor:
        self._check_latent(latent)
        t, s = self.temporal_compression, self.spatial_compression
        x = rearrange(latent.float(), "b (c t p q) l h w -> b c (l t) (h p) (w q)", t=t, p=s, q=s)
        return x[:, :, t - 1 :].clamp(-1, 1)


def argument(fn: Any, node: Mapping, name: str) -> Any:
    """`node[name]`, else the default of `fn`'s parameter `name`: what a build would use."""
    if name in node:
        return node[name]
    return inspect.signature(fn).parameters[name].default


def config_compression(node: Any) -> tuple[int, int] | None:
    """(spatial, temporal) compression of the tokenizer a config node would build, without
    building it (a VAE build reads its weights): what the node's `_target_` says through its
    `compression_for(node)`, or None for a tokenizer that does not say (a user's own class;
    framework/trainer/validate.py then skips the checks that need it)."""
    target = node.get("_target_") if isinstance(node, Mapping) else None
    if not isinstance(target, str):
        return None
    from framework.config.lazy import locate

    try:
        fn = getattr(locate(target), "compression_for", None)
    except Exception:  # noqa: BLE001  (building the model reports an unimportable target)
        return None
    return fn(node) if callable(fn) else None


def _resolve(path: str) -> str:
    """Local path as is; `hf://owner/repo/file` through the Hugging Face cache."""
    if path.startswith("hf://"):
        from huggingface_hub import hf_hub_download

        owner, repo, filename = path[5:].split("/", 2)
        return hf_hub_download(f"{owner}/{repo}", filename)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"Tokenizer weights {path!r} do not exist; download them (e.g. `hf download "
            "nvidia/Cosmos-Predict2-2B-Video2World tokenizer/tokenizer.pth --local-dir "
            "checkpoints/nvidia/Cosmos-Predict2-2B-Video2World`) or set the tokenizer path."
        )
    return path


def _load_file(path: str) -> dict[str, Tensor]:
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path)
    return read_checkpoint(path)


class WanVAETokenizer(_TokenizerBase):
    """The Wan2.1 3D causal VAE (diffusers `AutoencoderKLWan`), frozen, deterministic encode.

    `path`: the official `tokenizer.pth` (original Wan key names, converted with diffusers'
    single-file mapping), a diffusers folder (config.json + safetensors, or one with a `vae/`
    subfolder), a `.safetensors` file in either naming, `hf://owner/repo/file`, or None for random
    weights. `config` overrides the default (= Wan2.1) `AutoencoderKLWan` kwargs for `.pth` files.
    `latents_mean/std` default to the config's (Wan2.1 constants, upstream/cosmos_predict2.md §5).
    `dtype` None means bf16 on CUDA (as upstream) and float32 elsewhere."""

    causal = True  # causal 3D convolutions in time (tests/test_*tokenizer*.py check it)

    def __init__(
        self,
        path: str | None = WAN21_LOCAL_FILE,
        *,
        config: dict | None = None,
        latents_mean: Sequence[float] | None = None,
        latents_std: Sequence[float] | None = None,
        dtype: str | None = None,
        tiling: bool = False,
    ) -> None:
        super().__init__()
        self.vae = self._build(path, dict(config or {}))
        self.vae.requires_grad_(False).eval()
        # One sample at a time: the causal feature cache is per-batch, and slicing bounds memory.
        self.vae.use_slicing = True
        if tiling:
            self.vae.enable_tiling()
        cfg = self.vae.config
        self.latent_channels = int(cfg.z_dim)
        self.spatial_compression = int(cfg.scale_factor_spatial)
        self.temporal_compression = int(cfg.scale_factor_temporal)
        mean = latents_mean if latents_mean is not None else cfg.latents_mean
        std = latents_std if latents_std is not None else cfg.latents_std
        if len(mean) != self.latent_channels or len(std) != self.latent_channels:
            raise ValueError(
                f"latents_mean/latents_std have {len(mean)}/{len(std)} entries but the VAE has "
                f"{self.latent_channels} latent channels; pass matching latents_mean/latents_std."
            )
        shape = (1, self.latent_channels, 1, 1, 1)
        self._mean = torch.tensor(list(mean), dtype=torch.float32, device="cpu").view(shape)
        self._std = torch.tensor(list(std), dtype=torch.float32, device="cpu").view(shape)
        self._dtype_name = dtype
        self.identity = self._identity(path, mean, std)

    @classmethod
    def compression_for(cls, node: Mapping) -> tuple[int, int]:
        """From `config` over AutoencoderKLWan's defaults, as `__init__` reads them (a diffusers
        folder's own config.json is not read: Wan2.1's are the defaults)."""
        from framework.models.meta import import_on_cpu

        vae, config = import_on_cpu("diffusers", "AutoencoderKLWan"), node.get("config") or {}
        return tuple(
            int(argument(vae, config, k)) for k in ("scale_factor_spatial", "scale_factor_temporal")
        )

    @staticmethod
    def _build(path: str | None, config: dict) -> nn.Module:
        from framework.models.meta import import_on_cpu, on_meta

        AutoencoderKLWan = import_on_cpu("diffusers", "AutoencoderKLWan")

        # A dry run builds on the meta device and needs shapes only, not weights.
        if on_meta():
            with torch.device("meta"):
                return AutoencoderKLWan(**config)
        if path is None or torch.get_default_device().type == "meta":
            return AutoencoderKLWan(**config)
        local = _resolve(path)
        if os.path.isdir(local):
            sub = "vae" if os.path.isfile(os.path.join(local, "vae", "config.json")) else None
            return AutoencoderKLWan.from_pretrained(local, subfolder=sub, local_files_only=True)
        sd = _load_file(local)
        if "decoder.middle.0.residual.0.gamma" in sd:  # original Wan naming (tokenizer.pth)
            from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers

            sd = convert_wan_vae_to_diffusers(sd)
        vae = AutoencoderKLWan(**config)
        try:
            vae.load_state_dict(sd, strict=True)
        except RuntimeError as err:
            first = str(err).splitlines()[1].strip() if "\n" in str(err) else str(err)
            raise ValueError(
                f"Tokenizer file {path!r} does not match the Wan VAE config ({first}); "
                "pass the matching `config`."
            ) from err
        return vae

    def _identity(self, path: str | None, mean: Sequence[float], std: Sequence[float]) -> str:
        """Stable across machines: file name and size, config and normalisation constants."""
        size = os.path.getsize(path) if path and os.path.isfile(path) else None
        # Keys starting with "_" hold load-time details such as the local folder name.
        cfg = {k: v for k, v in self.vae.config.items() if not k.startswith("_")}
        blob = json.dumps(
            [os.path.basename(str(path)), size, cfg, list(mean), list(std)],
            sort_keys=True,
            default=str,
        )
        return "wan2.1-vae-" + hashlib.sha1(blob.encode()).hexdigest()[:12]

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

    @torch.no_grad()
    def encode(self, video: Tensor) -> Tensor:
        """Normalised posterior mean (z - mean) / std, float32 (upstream/cosmos_predict2.md §5)."""
        self._check_video(video)
        x = to_unit_range(video)
        self.place(x.device)
        mu = self.vae.encode(x.to(self.vae.dtype)).latent_dist.mean.float()
        return (mu - self._mean.to(mu.device)) / self._std.to(mu.device)

    @torch.no_grad()
    def decode(self, latent: Tensor) -> Tensor:
        """Video in [-1, 1], float32."""
        self._check_latent(latent)
        self.place(latent.device)
        z = latent.float() * self._std.to(latent.device) + self._mean.to(latent.device)
        return self.vae.decode(z.to(self.vae.dtype)).sample.float().clamp(-1, 1)
