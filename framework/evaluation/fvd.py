"""Fréchet Video Distance between a checkpoint's generated clips and the ground-truth clips.

FVD = |mu_r - mu_g|^2 + Tr(S_r + S_g - 2 (S_r S_g)^(1/2)) over I3D features of whole clips
(Unterthiner et al. 2018), with the conventions of `cd-fvd` 0.1.1, the package the Cosmos cookbook
uses (spec robot_eval.md §2.2): features = the 400 Kinetics logits of the TATS I3D port
(framework/evaluation/i3d.py), weights `i3d_pretrained_400.pt` from the TATS repository
(github.com/songweige/TATS, tats/fvd/), every frame resized bilinearly to 224x224 and scaled to
[-1, 1], the whole clip as generated (conditional frames included, >= 9 frames; GR1: 93 frames),
covariances with 1/N (cd-fvd's FeatureStats). Numbers from other FVD implementations (StyleGAN-V's
TorchScript I3D, 16-frame clips at 256) are not comparable. The covariance of 400-d features needs
hundreds of clips to settle; on a few dozen items prefer the paired metrics.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from framework.evaluation.metrics import SetMetric, Videos

WEIGHTS_URL = "https://github.com/songweige/TATS/raw/main/tats/fvd/i3d_pretrained_400.pt"
MIN_FRAMES = 9


def default_weights() -> Path:
    return Path(os.environ.get("CHECKPOINTS", "checkpoints")) / "i3d" / "i3d_pretrained_400.pt"


def feature_stats(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and covariance (1/N, as cd-fvd) of [N, D] features, in float64."""
    f = features.double()
    mu = f.mean(0)
    return mu, f.T @ f / len(f) - torch.outer(mu, mu)


def _sqrt_psd(m: torch.Tensor) -> torch.Tensor:
    vals, vecs = torch.linalg.eigh((m + m.T) / 2)
    return (vecs * vals.clamp(min=0).sqrt()) @ vecs.T


def frechet_distance(
    mu1: torch.Tensor, s1: torch.Tensor, mu2: torch.Tensor, s2: torch.Tensor
) -> float:
    """Fréchet distance of two Gaussians. Tr((S1 S2)^(1/2)) is computed as the trace of the
    square root of the symmetric S1^(1/2) S2 S1^(1/2) (same eigenvalues), which stays real
    where scipy's sqrtm of the non-symmetric product needs its imaginary part dropped."""
    mu1, s1, mu2, s2 = (x.double() for x in (mu1, s1, mu2, s2))
    r1 = _sqrt_psd(s1)
    cross = _sqrt_psd(r1 @ s2 @ r1).trace()
    return float(((mu1 - mu2) ** 2).sum() + s1.trace() + s2.trace() - 2 * cross)


class FVD(SetMetric):
    name = "fvd"
    better = {"fvd": "lower"}

    def __init__(self, weights: str | Path | None = None, batch: int = 4) -> None:
        self.weights = Path(weights) if weights else default_weights()
        self.batch = batch
        self.model = None
        self.reset()

    def settings(self) -> dict[str, Any]:
        return {
            "features": "I3D Kinetics-400 logits (TATS port, cd-fvd 0.1.1 conventions)",
            "weights": str(self.weights),
            "resolution": 224,
            "frames": "whole clip",
        }

    def setup(self, device: Any) -> None:
        from framework.evaluation.i3d import InceptionI3d

        if not self.weights.is_file():
            raise FileNotFoundError(
                f"FVD's I3D weights {self.weights} are missing; download them with "
                f"`mkdir -p {self.weights.parent} && curl -L -o {self.weights} {WEIGHTS_URL}`."
            )
        self.device = torch.device(device)
        model = InceptionI3d()
        model.load_state_dict(torch.load(self.weights, map_location="cpu", weights_only=True))
        self.model = model.eval().to(self.device)

    def reset(self) -> None:
        self.fake: list[torch.Tensor] = []
        self.real: list[torch.Tensor] = []

    @torch.no_grad()
    def features(self, videos: torch.Tensor) -> torch.Tensor:
        """[B, 400] I3D logits of uint8 (B, 3, T, H, W) clips."""
        from framework.evaluation.i3d import preprocess

        if videos.shape[2] < MIN_FRAMES:
            raise ValueError(
                f"FVD needs clips of at least {MIN_FRAMES} frames, these have {videos.shape[2]}; "
                "drop fvd from cfg.eval.metrics for short clips."
            )
        out = []
        for i in range(0, len(videos), self.batch):
            x = preprocess(videos[i : i + self.batch]).to(self.device)
            out.append(self.model(x).float().cpu())
        return torch.cat(out)

    def add(self, v: Videos) -> None:
        self.fake.append(self.features(v.full_pred))
        self.real.append(self.features(v.full_truth))

    def result(self) -> dict[str, float]:
        fake, real = torch.cat(self.fake), torch.cat(self.real)
        return {"fvd": frechet_distance(*feature_stats(real), *feature_stats(fake))}
