"""Video quality metrics against ground truth: PSNR, SSIM and latent L2.

Videos are [3,T,H,W] or [B,3,T,H,W] tensors, uint8 (range 255) or float in [-1, 1] (range 2).
Both arguments of a metric must share dtype and shape.

SSIM follows Wang et al. 2004 ("Image quality assessment: from error visibility to structural
similarity"): an 11x11 gaussian window with sigma 1.5, K1 = 0.01, K2 = 0.03, computed per RGB
channel over the "valid" region (no padding, as the authors' MATLAB code), averaged over channels,
pixels and frames. Frames smaller than the window use a window of the frame's smaller side.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def data_range(video: Tensor) -> float:
    """255 for uint8 videos, 2 for [-1, 1] float videos."""
    return 255.0 if video.dtype == torch.uint8 else 2.0


def _pair(pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor, float]:
    if pred.shape != target.shape:
        raise ValueError(
            f"Metric inputs differ in shape: {tuple(pred.shape)} vs {tuple(target.shape)}; "
            "compare videos of the same size and length."
        )
    if pred.dtype != target.dtype:
        raise ValueError(
            f"Metric inputs differ in dtype: {pred.dtype} vs {target.dtype}; "
            "convert both to uint8 or both to float."
        )
    # float64: the sums in SSIM lose digits in float32 on near-identical images.
    return pred.double(), target.double(), data_range(pred)


def mse(pred: Tensor, target: Tensor) -> float:
    p, t, _ = _pair(pred, target)
    return float(((p - t) ** 2).mean())


def psnr_from_mse(err: float, range_: float = 255.0) -> float:
    """10 log10(range^2 / MSE); infinite for identical inputs."""
    return math.inf if err == 0 else 10.0 * math.log10(range_**2 / err)


def psnr(pred: Tensor, target: Tensor) -> float:
    """PSNR in dB over all pixels of the two videos (one MSE, not a mean of per-frame PSNRs)."""
    return psnr_from_mse(mse(pred, target), data_range(pred))


def gaussian_window(size: int = 11, sigma: float = 1.5) -> Tensor:
    """Normalised 2-D gaussian [size, size] in float64."""
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return g[:, None] * g[None, :]


def _frames(video: Tensor) -> Tensor:
    """[..., 3, T, H, W] -> [N*T, 3, H, W] (frames as a batch of images)."""
    if video.ndim == 4:
        video = video[None]
    if video.ndim != 5:
        raise ValueError(f"Videos must be [3,T,H,W] or [B,3,T,H,W]; got {tuple(video.shape)}.")
    b, c, t, h, w = video.shape
    return video.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)


def ssim_map(
    pred: Tensor, target: Tensor, range_: float, window: int = 11, sigma: float = 1.5
) -> Tensor:
    """Per-pixel SSIM of image batches [N,C,H,W] (float64), valid region only."""
    c = pred.shape[1]
    size = min(window, pred.shape[-2], pred.shape[-1])
    kernel = gaussian_window(size, sigma).to(pred.device)[None, None].expand(c, 1, size, size)

    def blur(x: Tensor) -> Tensor:
        return F.conv2d(x, kernel, groups=c)

    c1, c2 = (0.01 * range_) ** 2, (0.03 * range_) ** 2
    mu_p, mu_t = blur(pred), blur(target)
    var_p = blur(pred * pred) - mu_p**2
    var_t = blur(target * target) - mu_t**2
    cov = blur(pred * target) - mu_p * mu_t
    num = (2 * mu_p * mu_t + c1) * (2 * cov + c2)
    den = (mu_p**2 + mu_t**2 + c1) * (var_p + var_t + c2)
    return num / den


def ssim(pred: Tensor, target: Tensor) -> float:
    """Mean SSIM over channels, pixels and frames (see the module docstring)."""
    p, t, range_ = _pair(pred, target)
    return float(ssim_map(_frames(p), _frames(t), range_).mean())


def latent_l2(pred_latent: Tensor, target_latent: Tensor) -> float:
    """Mean squared difference per latent element (the tokenizer's normalised space)."""
    p, t, _ = _pair(pred_latent.float(), target_latent.float())
    return float(((p - t) ** 2).mean())


def video_metrics(pred: Tensor, target: Tensor) -> dict[str, float]:
    """PSNR and SSIM of two videos in one dict."""
    return {"psnr": psnr(pred, target), "ssim": ssim(pred, target)}
