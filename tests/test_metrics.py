"""PSNR, SSIM and latent L2 against values computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from framework.inference.metrics import (
    gaussian_window,
    latent_l2,
    psnr,
    psnr_from_mse,
    ssim,
    video_metrics,
)


def textured(seed: int = 0, shape=(3, 2, 32, 32)) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    smooth = torch.nn.functional.avg_pool2d(
        torch.rand(shape[0] * shape[1], 1, shape[2] + 4, shape[3] + 4, generator=g), 5, stride=1
    )
    return (smooth.reshape(shape) * 255).round().to(torch.uint8)


def test_psnr_of_known_mse():
    a = torch.full((3, 2, 8, 8), 100, dtype=torch.uint8)
    b = a + 10  # MSE exactly 100
    assert psnr(a, b) == pytest.approx(10 * math.log10(255**2 / 100))
    assert psnr(a, b) == pytest.approx(28.1308036, abs=1e-6)
    fa = torch.zeros(3, 2, 8, 8)
    assert psnr(fa, fa + 0.1) == pytest.approx(10 * math.log10(4 / 0.01), rel=1e-6)  # range 2
    assert psnr(a, a) == math.inf
    assert psnr_from_mse(1.0, 1.0) == 0.0


def test_ssim_identical_is_one_and_constant_images_match_the_formula():
    x = textured()
    assert ssim(x, x) == pytest.approx(1.0, abs=1e-12)
    # Constant images: variances and covariance are 0, so
    # SSIM = (2 mx my + C1) / (mx^2 + my^2 + C1) with C1 = (0.01 * 255)^2.
    a = torch.full((3, 1, 16, 16), 100, dtype=torch.uint8)
    b = torch.full((3, 1, 16, 16), 110, dtype=torch.uint8)
    c1 = (0.01 * 255) ** 2
    want = (2 * 100 * 110 + c1) / (100**2 + 110**2 + c1)
    assert ssim(a, b) == pytest.approx(want, rel=1e-12)
    assert want == pytest.approx(0.9954765, abs=1e-7)


def test_ssim_below_one_for_shift_and_noise_symmetric_and_monotone():
    x = textured()
    shifted = torch.roll(x, shifts=2, dims=-1)
    g = torch.Generator().manual_seed(1)
    noise = lambda s: (x.float() + s * torch.randn(x.shape, generator=g)).clamp(0, 255)  # noqa: E731
    light, heavy = noise(5).round().to(torch.uint8), noise(40).round().to(torch.uint8)
    for other in (shifted, light, heavy):
        value = ssim(x, other)
        assert 0 < value < 1
        assert ssim(other, x) == pytest.approx(value, rel=1e-12)
    assert ssim(x, heavy) < ssim(x, light)


def test_ssim_small_frames_and_float_videos():
    x = textured(shape=(3, 1, 6, 6))  # smaller than the 11x11 window
    assert ssim(x, x) == pytest.approx(1.0)
    f = x.float() / 127.5 - 1
    assert ssim(f, f.flip(-1)) == pytest.approx(ssim(x, x.flip(-1)), rel=1e-6)


def test_window_latent_l2_and_errors():
    w = gaussian_window()
    assert w.shape == (11, 11) and float(w.sum()) == pytest.approx(1.0)
    assert torch.equal(w, w.T) and w[5, 5] == w.max()
    assert latent_l2(torch.zeros(1, 4, 2, 3, 3), torch.ones(1, 4, 2, 3, 3)) == 1.0
    assert latent_l2(torch.zeros(2, 2), torch.full((2, 2), 3.0)) == 9.0
    m = video_metrics(textured(), textured(seed=1))
    assert set(m) == {"psnr", "ssim"}
    with pytest.raises(ValueError, match="same size"):
        psnr(torch.zeros(3, 1, 4, 4), torch.zeros(3, 1, 4, 5))
    with pytest.raises(ValueError, match="dtype"):
        ssim(torch.zeros(3, 1, 4, 4), torch.zeros(3, 1, 4, 4, dtype=torch.uint8))
