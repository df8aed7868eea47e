"""Eval metrics as components: each turns one generated video and its ground truth into
numbers, and names whether higher is better.

Per-item metrics (`Metric.item`) give one value per item and seed; the runner averages seeds and
puts a confidence interval over items. Set metrics (`SetMetric`, FVD) see every video of a
checkpoint and give one number. Built in, by name (`cfg.eval.metrics`):

- psnr, ssim: framework/inference/metrics.py (SSIM of Wang et al. 2004, checked against
  scikit-image in tests) over the generated frames (conditional frames are given, not
  predicted); each also reports `still_*`, the last conditional frame held still, the score a
  model gets for predicting no motion;
- latent_l2: mean squared difference of the tokenizer's latents of the generated latent frames
  (IRASim's latent L2, spec robot_eval.md §3.1);
- lpips, fvd, dreamgen_if, dreamgen_pa (PA-I): framework/evaluation/{lpips,fvd,judges}.py;
  dreamgen_pa2 (VideoCon-Physics), dreamgen_pa_mean(_thr) (DreamGen's mean of PA-I and PA-II):
  framework/evaluation/videophy.py; each with its weights' source; they load from the Hugging
  Face / torch hub cache or $CHECKPOINTS and name the download when missing (lpips: AlexNet
  trunk + lin heads, docs/eval.md).

Another metric joins by import path: `cfg.eval.metrics=[psnr, my_lab.metrics:Sharpness]`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from framework.inference import metrics as M


@dataclass
class Videos:
    """One generated video of one item and seed, with what metrics compare it to. Videos are
    uint8 [1, 3, T, H, W]; `pred`/`truth`/`still` hold the generated frames only."""

    name: str
    prompt: str
    fps: float
    pred: Tensor
    truth: Tensor
    still: Tensor
    full_pred: Tensor
    full_truth: Tensor
    encode: Callable[[Tensor], Tensor] | None = None  # the model tokenizer's encode
    skip_latent: int = 1  # latent frames of the conditional frames
    cache: dict[str, Any] = field(default_factory=dict)

    def latents(self) -> tuple[Tensor, Tensor]:
        """(pred, truth) latents of the generated latent frames, encoded once."""
        if "latents" not in self.cache:
            zp, zt = self.encode(self.full_pred), self.encode(self.full_truth)
            self.cache["latents"] = (zp[:, :, self.skip_latent :], zt[:, :, self.skip_latent :])
        return self.cache["latents"]


class Metric:
    """A per-item metric: `item(videos) -> {key: value}`; `better[key]` is "higher" or
    "lower" ("baseline" for reference values such as still_psnr)."""

    name = "metric"
    better: dict[str, str] = {}
    per_item = True

    def setup(self, device: Any) -> None:
        """Load weights (once per eval, before any video is generated)."""

    def item(self, v: Videos) -> dict[str, float]:
        raise NotImplementedError

    def settings(self) -> dict[str, Any]:
        """What makes two runs' numbers comparable (weights, resolution, ...)."""
        return {}


class SetMetric(Metric):
    """A metric over all videos of one checkpoint: `add` each, then `result`."""

    per_item = False

    def reset(self) -> None:
        raise NotImplementedError

    def add(self, v: Videos) -> None:
        raise NotImplementedError

    def result(self) -> dict[str, float]:
        raise NotImplementedError


class OnDevice(Metric):
    """A pixel metric computed on the eval's device: SSIM of one GR1-shaped video (93 x 432 x
    768) takes 49 s on a CPU and 0.05 s on an H100 (docs/eval.md, "Cost per video")."""

    device: Any = None

    def setup(self, device: Any) -> None:
        self.device = device

    def on(self, *videos: Tensor) -> tuple[Tensor, ...]:
        return tuple(x.to(self.device) if self.device is not None else x for x in videos)


class PSNR(OnDevice):
    name = "psnr"
    better = {"psnr": "higher", "still_psnr": "baseline"}

    def item(self, v: Videos) -> dict[str, float]:
        pred, truth, still = self.on(v.pred, v.truth, v.still)
        return {"psnr": M.psnr(pred, truth), "still_psnr": M.psnr(still, truth)}


class SSIM(OnDevice):
    name = "ssim"
    better = {"ssim": "higher", "still_ssim": "baseline"}

    def item(self, v: Videos) -> dict[str, float]:
        pred, truth, still = self.on(v.pred, v.truth, v.still)
        return {"ssim": M.ssim(pred, truth), "still_ssim": M.ssim(still, truth)}


class LatentL2(Metric):
    name = "latent_l2"
    better = {"latent_l2": "lower"}

    def item(self, v: Videos) -> dict[str, float]:
        zp, zt = v.latents()
        return {"latent_l2": M.latent_l2(zp, zt)}


def _lazy(module: str, cls: str) -> Callable[[], type[Metric]]:
    return lambda: getattr(importlib.import_module(module), cls)


METRICS: dict[str, Callable[[], type[Metric]]] = {
    "psnr": lambda: PSNR,
    "ssim": lambda: SSIM,
    "latent_l2": lambda: LatentL2,
    "lpips": _lazy("framework.evaluation.lpips", "LPIPSMetric"),
    "fvd": _lazy("framework.evaluation.fvd", "FVD"),
    "dreamgen_if": _lazy("framework.evaluation.judges", "InstructionFollowing"),
    "dreamgen_pa": _lazy("framework.evaluation.judges", "PhysicsAlignment"),
    "dreamgen_pa2": _lazy("framework.evaluation.videophy", "PhysicsAlignmentII"),
    "dreamgen_pa_mean": _lazy("framework.evaluation.videophy", "DreamGenPhysics"),
    "dreamgen_pa_mean_thr": _lazy("framework.evaluation.videophy", "DreamGenPhysicsThresholded"),
}


def build_metrics(names: list[str]) -> list[Metric]:
    """Metric objects for registered names or `package.module:Class` paths."""
    out = []
    for name in names:
        if name in METRICS:
            out.append(METRICS[name]()())
            continue
        module, sep, attr = name.partition(":")
        if not sep:
            raise ValueError(
                f"eval metric {name!r} is not one of {', '.join(METRICS)} nor a "
                "package.module:Class path; fix cfg.eval.metrics."
            )
        try:
            cls = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as err:
            raise ValueError(f"eval metric {name!r} cannot be imported ({err}).") from None
        out.append(cls())
    return out
