"""Inflated Inception-v1 (I3D, Carreira & Zisserman 2017) as the FVD feature extractor, in the
layout of the TATS PyTorch port that `cd-fvd` loads (`i3d_pretrained_400.pt`, Kinetics-400).

Module names, and so state-dict keys, are that port's (`Conv3d_1a_7x7.conv3d.weight`,
`Mixed_3b.b1b.bn.running_mean`, `logits.conv3d.bias`, ...), so its file loads strictly. As there,
every convolution and max-pool pads like TensorFlow's "SAME" (computed from the input size), batch
norm has eps 1e-5, and the output is the 400 pre-softmax logits averaged over the remaining time
steps. The input is (B, 3, T, 224, 224) in [-1, 1]; T >= 9 (three temporal halvings must leave 2
steps for the final 2x7x7 average pool). Written here because `cd-fvd` and `pytorch-i3d` need
torchvision, which this project does not install.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# (name, in channels, branch widths b0, b1a, b1b, b2a, b2b, b3b); None = a max pool.
MIXED = {
    "Mixed_3b": (192, (64, 96, 128, 16, 32, 32)),
    "Mixed_3c": (256, (128, 128, 192, 32, 96, 64)),
    "Mixed_4b": (480, (192, 96, 208, 16, 48, 64)),
    "Mixed_4c": (512, (160, 112, 224, 24, 64, 64)),
    "Mixed_4d": (512, (128, 128, 256, 24, 64, 64)),
    "Mixed_4e": (512, (112, 144, 288, 32, 64, 64)),
    "Mixed_4f": (528, (256, 160, 320, 32, 128, 128)),
    "Mixed_5b": (832, (256, 160, 320, 32, 128, 128)),
    "Mixed_5c": (832, (384, 192, 384, 48, 128, 128)),
}
POOLS = {
    "MaxPool3d_2a_3x3": ((1, 3, 3), (1, 2, 2)),
    "MaxPool3d_3a_3x3": ((1, 3, 3), (1, 2, 2)),
    "MaxPool3d_4a_3x3": ((3, 3, 3), (2, 2, 2)),
    "MaxPool3d_5a_2x2": ((2, 2, 2), (2, 2, 2)),
}
ORDER = (
    "Conv3d_1a_7x7", "MaxPool3d_2a_3x3", "Conv3d_2b_1x1", "Conv3d_2c_3x3", "MaxPool3d_3a_3x3",
    "Mixed_3b", "Mixed_3c", "MaxPool3d_4a_3x3", "Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e",
    "Mixed_4f", "MaxPool3d_5a_2x2", "Mixed_5b", "Mixed_5c",
)  # fmt: skip


def same_pad(x: torch.Tensor, kernel: tuple[int, ...], stride: tuple[int, ...], value=0.0):
    """TensorFlow "SAME" padding of (B, C, T, H, W): total k - s (k - size % s when the size is
    not a multiple of s), the smaller half first."""
    pads = []
    for size, k, s in zip(reversed(x.shape[2:]), reversed(kernel), reversed(stride), strict=True):
        total = max(k - (s if size % s == 0 else size % s), 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads, value=value)


class Unit3D(nn.Module):
    """Conv3d (no bias) + BatchNorm3d + ReLU, or a plain biased conv for the logits."""

    def __init__(self, cin: int, cout: int, kernel=(1, 1, 1), stride=(1, 1, 1), logits=False):
        super().__init__()
        self.kernel, self.stride, self.logits = tuple(kernel), tuple(stride), logits
        self.conv3d = nn.Conv3d(cin, cout, self.kernel, self.stride, padding=0, bias=logits)
        if not logits:
            self.bn = nn.BatchNorm3d(cout, eps=1e-5, momentum=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv3d(same_pad(x, self.kernel, self.stride))
        return x if self.logits else F.relu(self.bn(x))


class MaxPoolSame(nn.Module):
    def __init__(self, kernel, stride) -> None:
        super().__init__()
        self.kernel, self.stride = tuple(kernel), tuple(stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Zero padding, as the port pads before nn.MaxPool3d (inputs are post-ReLU, >= 0).
        return F.max_pool3d(same_pad(x, self.kernel, self.stride), self.kernel, self.stride)


class Mixed(nn.Module):
    def __init__(self, cin: int, w: tuple[int, ...]) -> None:
        super().__init__()
        self.b0 = Unit3D(cin, w[0])
        self.b1a, self.b1b = Unit3D(cin, w[1]), Unit3D(w[1], w[2], (3, 3, 3))
        self.b2a, self.b2b = Unit3D(cin, w[3]), Unit3D(w[3], w[4], (3, 3, 3))
        self.b3a, self.b3b = MaxPoolSame((3, 3, 3), (1, 1, 1)), Unit3D(cin, w[5])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(
            [self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))], 1
        )


class InceptionI3d(nn.Module):
    def __init__(self, num_classes: int = 400) -> None:
        super().__init__()
        for name in ORDER:
            if name in MIXED:
                layer: nn.Module = Mixed(*MIXED[name])
            elif name in POOLS:
                layer = MaxPoolSame(*POOLS[name])
            else:
                layer = {
                    "Conv3d_1a_7x7": lambda: Unit3D(3, 64, (7, 7, 7), (2, 2, 2)),
                    "Conv3d_2b_1x1": lambda: Unit3D(64, 64),
                    "Conv3d_2c_3x3": lambda: Unit3D(64, 192, (3, 3, 3)),
                }[name]()
            self.add_module(name, layer)
        self.logits = Unit3D(1024, num_classes, logits=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, 224, 224) in [-1, 1] -> (B, num_classes) logits averaged over time."""
        for name in ORDER:
            x = self._modules[name](x)
        x = F.avg_pool3d(x, (2, 7, 7), stride=1)
        return self.logits(x).squeeze(4).squeeze(3).mean(dim=2)


def preprocess(videos: torch.Tensor, size: int = 224) -> torch.Tensor:
    """uint8 (B, 3, T, H, W) -> float (B, 3, T, size, size) in [-1, 1], each frame resized
    bilinearly (align_corners False, no antialiasing), as cd-fvd's preprocess_i3d."""
    b, c, t, h, w = videos.shape
    frames = videos.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w).float()
    frames = F.interpolate(frames, size=(size, size), mode="bilinear", align_corners=False)
    frames = frames.reshape(b, t, c, size, size).permute(0, 2, 1, 3, 4)
    return 2.0 * frames / 255.0 - 1.0
