"""FVD: the Fréchet distance against the formula of the published implementations (cd-fvd's
compute_fvd_from_stats, pytorch-fid, StyleGAN-V: scipy.linalg.sqrtm of S_r S_g, real part) on the
same features, and against the closed form for diagonal covariances; the I3D port's layout."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from framework.evaluation import fvd
from framework.evaluation.i3d import InceptionI3d, preprocess, same_pad


def published_fvd(real: np.ndarray, fake: np.ndarray) -> float:
    """cd-fvd 0.1.1 (cdfvd/fvd.py compute_fvd_from_stats, FeatureStats.get_mean_cov): mean and
    1/N covariance per set, then m + Tr(S_f + S_r - 2 sqrtm(S_r S_f)), real part."""
    import scipy.linalg

    def stats(f):
        mu = f.mean(0)
        return mu, f.T @ f / len(f) - np.outer(mu, mu)

    mu_r, s_r = stats(real.astype(np.float64))
    mu_f, s_f = stats(fake.astype(np.float64))
    m = np.square(mu_r - mu_f).sum()
    s = scipy.linalg.sqrtm(np.dot(s_r, s_f))  # disp=False in cd-fvd: the same matrix
    return float(np.real(m + np.trace(s_f + s_r - s * 2)))


@pytest.mark.parametrize("n, d", [(300, 16), (40, 64)])  # full-rank and rank-deficient
def test_frechet_distance_matches_the_published_formula(n, d):
    rng = np.random.default_rng(n)
    mix = rng.normal(size=(d, d)) / np.sqrt(d)
    real = rng.normal(size=(n, d)) @ mix
    fake = 0.8 * rng.normal(size=(n, d)) @ mix + 0.3
    ours = fvd.frechet_distance(*fvd.feature_stats(torch.tensor(real)),
                                *fvd.feature_stats(torch.tensor(fake)))  # fmt: skip
    assert ours == pytest.approx(published_fvd(real, fake), rel=1e-6, abs=1e-6)
    same = fvd.feature_stats(torch.tensor(real))
    assert abs(fvd.frechet_distance(*same, *same)) < 1e-5  # sqrt of ~0 eigenvalues


def test_frechet_distance_closed_form_for_diagonal_covariances():
    mu1, mu2 = torch.tensor([0.0, 1.0, 2.0]), torch.tensor([1.0, 1.0, 0.0])
    v1, v2 = torch.tensor([1.0, 4.0, 9.0]), torch.tensor([4.0, 1.0, 9.0])
    want = float(((mu1 - mu2) ** 2).sum() + ((v1.sqrt() - v2.sqrt()) ** 2).sum())  # 5 + 2
    got = fvd.frechet_distance(mu1, torch.diag(v1), mu2, torch.diag(v2))
    assert got == pytest.approx(want) and want == 7.0


def test_i3d_keys_same_padding_and_output():
    """The TATS port's key names (spot checks of each module kind), TF
    "SAME" padding sizes, and 400 logits for a minimal 9-frame 224x224 clip."""
    net = InceptionI3d().eval()
    sd = net.state_dict()
    for key, shape in [
        ("Conv3d_1a_7x7.conv3d.weight", (64, 3, 7, 7, 7)),
        ("Conv3d_1a_7x7.bn.running_var", (64,)),
        ("Mixed_3b.b1b.conv3d.weight", (128, 96, 3, 3, 3)),
        ("Mixed_5c.b3b.bn.weight", (128,)),
        ("logits.conv3d.weight", (400, 1024, 1, 1, 1)),
        ("logits.conv3d.bias", (400,)),
    ]:
        assert tuple(sd[key].shape) == shape, key
    assert not any(k.startswith("end_points") for k in sd)
    # SAME: size 9, kernel 7, stride 2 -> total pad 6 (3 + 3); size 224, kernel 3, stride 2 ->
    # 1 (0 before, 1 after); kernel 3 stride 1 -> 2.
    x = torch.zeros(1, 1, 9, 224, 10)
    assert same_pad(x, (7, 3, 3), (2, 2, 1)).shape[2:] == (15, 225, 12)
    clip = torch.randint(0, 256, (1, 3, 9, 48, 64), dtype=torch.uint8)
    inp = preprocess(clip)
    assert inp.shape == (1, 3, 9, 224, 224) and inp.min() >= -1 and inp.max() <= 1
    with torch.no_grad():
        assert net(inp).shape == (1, 400)


def test_fvd_metric_names_the_download_when_weights_are_missing(tmp_path):
    metric = fvd.FVD(weights=tmp_path / "i3d" / "i3d_pretrained_400.pt")
    with pytest.raises(FileNotFoundError) as err:
        metric.setup("cpu")
    msg = str(err.value)
    assert "\n" not in msg and fvd.WEIGHTS_URL in msg and "curl -L -o" in msg
