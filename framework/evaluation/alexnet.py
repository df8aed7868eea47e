"""The convolutional trunk of torchvision's AlexNet ("one weird trick" variant, Krizhevsky 2014),
as LPIPS uses it: the five ReLU outputs relu1..relu5 of `features`.

Layer indices, and so state-dict keys, are torchvision's (`features.0.weight` ...
`features.10.bias`), so the official ImageNet weights `alexnet-owt-7be5be79.pth` (torchvision's
IMAGENET1K_V1, what `tv.alexnet(pretrained=True)` in the `lpips` package loads) load strictly:
the file's features keys must be exactly ours and its only other keys torchvision's classifier,
which LPIPS does not use and is not built. Written here because torchvision (and so the `lpips`
package, which needs it) does not import beside this project's torch.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

WEIGHTS_FILE = "alexnet-owt-7be5be79.pth"
WEIGHTS_URL = f"https://download.pytorch.org/models/{WEIGHTS_FILE}"
# torchvision's AlexNet.classifier (Dropout, Linear, ReLU, Dropout, Linear, ReLU, Linear).
CLASSIFIER_KEYS = {f"classifier.{i}.{p}" for i in (1, 4, 6) for p in ("weight", "bias")}
# The slices of `features` whose last output LPIPS reads (lpips 0.1.4 pretrained_networks.alexnet):
# relu1 = features[0:2], relu2 = [2:5], relu3 = [5:8], relu4 = [8:10], relu5 = [10:12].
SLICE_ENDS = (2, 5, 8, 10, 12)
CHANNELS = (64, 192, 384, 256, 256)


class AlexNetFeatures(nn.Module):
    """torchvision.models.AlexNet's `features`, all 13 layers (LPIPS reads through index 11; the
    final max pool has no parameters and is never run)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(64, 192, kernel_size=5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(192, 384, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(B, 3, H, W), already shifted and scaled -> [relu1, ..., relu5]. H, W >= 31: the two
        3x3 stride-2 pools need 3 positions each."""
        outs, start = [], 0
        for end in SLICE_ENDS:
            for i in range(start, end):
                x = self.features[i](x)
            outs.append(x)
            start = end
        return outs


def default_weights() -> Path:
    """Where torchvision would have cached the file ($TORCH_HOME/hub/checkpoints), if it is
    there, else $CHECKPOINTS/lpips/."""
    hub = Path(torch.hub.get_dir()) / "checkpoints" / WEIGHTS_FILE
    if hub.is_file():
        return hub
    return Path(os.environ.get("CHECKPOINTS", "checkpoints")) / "lpips" / WEIGHTS_FILE


def load_official(model: AlexNetFeatures, path: str | Path) -> AlexNetFeatures:
    """Load torchvision's AlexNet state dict into the trunk; any key that is neither ours nor
    torchvision's classifier, or a missing one, is refused."""
    sd = torch.load(path, map_location="cpu", weights_only=True)
    own = set(model.state_dict())
    unknown = sorted(set(sd) - own - CLASSIFIER_KEYS)
    missing = sorted(own - set(sd))
    if unknown or missing:
        raise ValueError(
            f"{path} is not torchvision's AlexNet state dict (unexpected keys {unknown[:3]}, "
            f"missing {missing[:3]}); use {WEIGHTS_URL}."
        )
    model.load_state_dict({k: v for k, v in sd.items() if k in own}, strict=True)
    return model
