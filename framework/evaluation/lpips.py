"""LPIPS (Zhang et al. 2018, "The Unreasonable Effectiveness of Deep Features as a Perceptual
Metric"), AlexNet variant v0.1, as the `lpips` package 0.1.4 computes it (`lpips.LPIPS(net="alex")`,
the default): inputs in [-1, 1] are shifted and scaled per channel (ScalingLayer), the five ReLU
outputs of torchvision's AlexNet trunk (framework/evaluation/alexnet.py) are unit-normalised over
channels (x / (||x|| + 1e-10)), the squared difference of the two images' features goes through a
learned non-negative 1x1 convolution per layer ("lin" heads), is averaged over space, and the five
layers are summed. Lower is more similar; 0 for identical images.

Weights: the trunk is torchvision's ImageNet AlexNet (`alexnet-owt-7be5be79.pth`), the heads are
the package's `lpips/weights/v0.1/alex.pth` (keys `lin0.model.1.weight` ... `lin4.model.1.weight`,
index 1 because a Dropout comes first in training). The `lpips` package itself is not a dependency:
it requires torchvision, which does not import beside this project's torch.

For videos: LPIPS of each generated frame against its ground-truth frame, averaged over the clip;
frames are scored at their own resolution, and frames under `min_size` px on the short side are
first resized bilinearly to it (AlexNet's pools need >= 31 px; the tiny job's are 24x24), which
`settings()` records: numbers at other resolutions are not comparable.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from framework.evaluation import alexnet
from framework.evaluation.metrics import Metric, Videos

HEADS_FILE = "alex.pth"
WHEEL = "lpips-0.1.4-py3-none-any.whl"
HEADS_HINT = (
    f"pip download --no-deps lpips==0.1.4 -d /tmp/lpips && unzip -j -o /tmp/lpips/{WHEEL} "
    "lpips/weights/v0.1/alex.pth -d {dir}"
)
EPS = 1e-10  # lpips.normalize_tensor: added to the norm, not under the square root


class ScalingLayer(nn.Module):
    """lpips' per-channel shift and scale of [-1, 1] RGB (v0.1; buffers as there)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188])[None, :, None, None])
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450])[None, :, None, None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.shift) / self.scale


class NetLinLayer(nn.Module):
    """One "lin" head: a bias-free 1x1 conv to one channel, after the training-time Dropout
    (identity in eval; kept so the keys are `model.1.weight` as in alex.pth)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.model = nn.Sequential(nn.Dropout(), nn.Conv2d(channels, 1, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class LPIPS(nn.Module):
    """`lpips.LPIPS(net="alex", version="0.1")` without torchvision; `forward(a, b)` -> (B,)."""

    def __init__(self) -> None:
        super().__init__()
        self.scaling_layer = ScalingLayer()
        self.net = alexnet.AlexNetFeatures()
        for k, c in enumerate(alexnet.CHANNELS):
            self.add_module(f"lin{k}", NetLinLayer(c))
        self.requires_grad_(False)  # a metric: never trained here
        self.eval()

    def heads(self) -> list[NetLinLayer]:
        return [getattr(self, f"lin{k}") for k in range(len(alexnet.CHANNELS))]

    def load_heads(self, path: str | Path) -> None:
        """The package's alex.pth: exactly the five `linK.model.1.weight` keys."""
        sd = torch.load(path, map_location="cpu", weights_only=True)
        want = {f"lin{k}.model.1.weight" for k in range(len(alexnet.CHANNELS))}
        if set(sd) != want:
            raise ValueError(
                f"{path} is not lpips' v0.1 alex.pth (keys {sorted(sd)[:3]}..., want "
                f"{sorted(want)[:2]}...); get it with `{HEADS_HINT.format(dir=Path(path).parent)}`."
            )
        for k, head in enumerate(self.heads()):
            head.model[1].load_state_dict({"weight": sd[f"lin{k}.model.1.weight"]}, strict=True)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Unit-normalised (over channels) relu1..relu5 of (B, 3, H, W) in [-1, 1]."""
        feats = self.net(self.scaling_layer(x))
        return [f / (f.pow(2).sum(1, keepdim=True).sqrt() + EPS) for f in feats]

    def distance(self, f0: list[torch.Tensor], f1: list[torch.Tensor]) -> torch.Tensor:
        """(B,) LPIPS of two feature lists (as `features` returns; B broadcasts)."""
        total = 0.0
        for head, a, b in zip(self.heads(), f0, f1, strict=True):
            total = total + head((a - b) ** 2).mean((2, 3))
        return total[:, 0]

    def forward(self, in0: torch.Tensor, in1: torch.Tensor) -> torch.Tensor:
        return self.distance(self.features(in0), self.features(in1))


def lpips_package_heads() -> Path | None:
    """alex.pth inside an installed `lpips` package, found without importing it (its import
    needs torchvision)."""
    try:
        spec = importlib.util.find_spec("lpips")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "weights" / "v0.1" / HEADS_FILE
    return path if path.is_file() else None


def default_heads() -> Path:
    return lpips_package_heads() or (
        Path(os.environ.get("CHECKPOINTS", "checkpoints")) / "lpips" / HEADS_FILE
    )


def to_frames(video: torch.Tensor, min_size: int) -> torch.Tensor:
    """uint8 (1, 3, T, H, W) -> float (T, 3, H', W') in [-1, 1]; the short side raised to
    `min_size` (bilinear, aspect kept) when below it."""
    frames = video[0].permute(1, 0, 2, 3).float() / 127.5 - 1.0
    h, w = frames.shape[-2:]
    if min(h, w) < min_size:
        s = min_size / min(h, w)
        size = (max(min_size, round(h * s)), max(min_size, round(w * s)))
        frames = F.interpolate(frames, size=size, mode="bilinear", align_corners=False)
    return frames


class LPIPSMetric(Metric):
    """`lpips`: per-frame LPIPS of the generated frames, averaged over the clip; `still_lpips`:
    the same for the last conditional frame held still."""

    name = "lpips"
    better = {"lpips": "lower", "still_lpips": "baseline"}

    def __init__(
        self,
        trunk: str | Path | None = None,
        heads: str | Path | None = None,
        min_size: int = 64,
        batch: int = 16,
    ) -> None:
        self.trunk = Path(trunk) if trunk else alexnet.default_weights()
        self.heads = Path(heads) if heads else default_heads()
        self.min_size, self.batch = int(min_size), int(batch)
        self.model: LPIPS | None = None
        self.device = torch.device("cpu")

    def settings(self) -> dict[str, Any]:
        return {
            "network": "AlexNet trunk (torchvision IMAGENET1K_V1) + lpips v0.1 lin heads",
            "trunk": str(self.trunk),
            "heads": str(self.heads),
            "heads_sha256": _sha256(self.heads) if self.heads.is_file() else None,
            "resolution": f"native; short side < {self.min_size} px upscaled (bilinear) to it",
            "frames": "generated frames, per-frame LPIPS averaged over the clip; input [-1, 1]",
        }

    def setup(self, device: Any) -> None:
        missing = []
        if not self.trunk.is_file():
            missing.append(
                f"the AlexNet trunk {self.trunk} (`mkdir -p {self.trunk.parent} && curl -L -o "
                f"{self.trunk} {alexnet.WEIGHTS_URL}`)"
            )
        if not self.heads.is_file():
            missing.append(
                f"the lin heads {self.heads} (`{HEADS_HINT.format(dir=self.heads.parent)}`)"
            )
        if missing:
            raise FileNotFoundError(f"LPIPS weights are missing: {' and '.join(missing)}.")
        model = LPIPS()
        alexnet.load_official(model.net, self.trunk)
        model.load_heads(self.heads)
        self.device = torch.device(device)
        self.model = model.to(self.device)

    @torch.no_grad()
    def features(self, video: torch.Tensor) -> list[torch.Tensor]:
        frames = to_frames(video, self.min_size)
        chunks = [
            self.model.features(frames[i : i + self.batch].to(self.device))
            for i in range(0, len(frames), self.batch)
        ]
        return [torch.cat(layer) for layer in zip(*chunks, strict=True)]

    @torch.no_grad()
    def item(self, v: Videos) -> dict[str, float]:
        truth = self.features(v.truth)
        pred = self.features(v.pred)
        still = self.features(v.still[:, :, :1])  # one frame, broadcast over the clip
        return {
            "lpips": float(self.model.distance(pred, truth).mean()),
            "still_lpips": float(self.model.distance(still, truth).mean()),
        }


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
