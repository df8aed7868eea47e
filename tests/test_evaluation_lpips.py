"""LPIPS against the `lpips` package's own code: its 0.1.4 wheel from PyPI (unmodified, in
tests/reference/) is imported with a stand-in `torchvision.models` whose `alexnet()` hands it our
AlexNet trunk with seeded random weights (the ImageNet file is 233 MB and not in the repository),
so the ScalingLayer, slicing, channel normalisation, heads, spatial mean and layer sum that run on
the reference side are upstream's, with upstream's real v0.1 `alex.pth` heads on both sides."""

from __future__ import annotations

import hashlib
import json
import sys
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from framework.evaluation import alexnet
from framework.evaluation import lpips as L
from framework.evaluation.metrics import Videos, build_metrics

WHEEL = Path(__file__).parent / "reference" / "lpips-0.1.4-py3-none-any.whl"
# sha256 of the file pip downloaded from pypi.org (`pip download --no-deps lpips==0.1.4`).
WHEEL_SHA256 = "fd537af5828b69d2e6ffc0a397bd506dbc28ca183543617690844c08e102ec5e"
# torchvision.models.AlexNet().features: (index, weight shape), all convolutions biased.
TORCHVISION_CONVS = [
    (0, (64, 3, 11, 11)),
    (3, (192, 64, 5, 5)),
    (6, (384, 192, 3, 3)),
    (8, (256, 384, 3, 3)),
    (10, (256, 256, 3, 3)),
]


@pytest.fixture(scope="module")
def trunk() -> alexnet.AlexNetFeatures:
    torch.manual_seed(0)
    return alexnet.AlexNetFeatures().eval()


@pytest.fixture(scope="module")
def upstream(trunk, tmp_path_factory):
    """(lpips package module, its folder) imported from the wheel with torchvision stubbed. The
    stub and the package leave sys.modules and sys.path right after the import (the package keeps
    its bound `tv`), so no other code sees a fake torchvision or an installed `lpips`."""
    assert hashlib.sha256(WHEEL.read_bytes()).hexdigest() == WHEEL_SHA256
    root = tmp_path_factory.mktemp("lpips_wheel")
    zipfile.ZipFile(WHEEL).extractall(root)
    models = types.ModuleType("torchvision.models")
    models.alexnet = lambda pretrained=False, **kw: types.SimpleNamespace(features=trunk.features)
    tv = types.ModuleType("torchvision")
    tv.models = models
    ours = lambda k: k.split(".")[0] in ("lpips", "torchvision")  # noqa: E731
    saved = {k: v for k, v in sys.modules.items() if ours(k)}
    sys.modules.update({"torchvision": tv, "torchvision.models": models})
    sys.path.insert(0, str(root))
    try:
        import lpips
    finally:
        sys.path.remove(str(root))
        for k in [k for k in sys.modules if ours(k)]:
            del sys.modules[k]
        sys.modules.update(saved)
    assert Path(lpips.__file__).parent == root / "lpips"
    return lpips, root / "lpips"


@pytest.fixture(scope="module")
def ours(trunk, upstream) -> L.LPIPS:
    net = L.LPIPS()
    net.net.load_state_dict(trunk.state_dict())
    net.load_heads(upstream[1] / "weights" / "v0.1" / "alex.pth")
    return net


def test_lpips_matches_the_lpips_package(upstream, ours):
    lpips, _ = upstream
    ref = lpips.LPIPS(net="alex", version="0.1", verbose=False)
    g = torch.Generator().manual_seed(1)
    for shape in [(3, 3, 64, 64), (2, 3, 72, 100)]:
        a = torch.rand(shape, generator=g) * 2 - 1
        b = (a + 0.3 * torch.randn(shape, generator=g)).clamp(-1, 1)
        with torch.no_grad():
            want = ref(a, b).flatten()
            got, same = ours(a, b), ours(a, a)
        assert got.shape == want.shape and float(want.min()) > 1e-3  # a non-trivial distance
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)
        assert float(same.abs().max()) == 0.0


def test_video_metric_is_the_mean_of_the_packages_per_frame_lpips(upstream, ours):
    """Per-frame LPIPS of uint8 frames converted by the package's own `im2tensor`
    (image / 127.5 - 1), averaged over the clip; still_lpips against the held frame."""
    lpips, _ = upstream
    ref = lpips.LPIPS(net="alex", version="0.1", verbose=False)
    rng = np.random.default_rng(2)
    truth = rng.integers(0, 256, (1, 3, 4, 64, 80), dtype=np.uint8)
    pred = np.clip(truth + rng.normal(0, 40, truth.shape), 0, 255).astype(np.uint8)
    still = np.repeat(truth[:, :, :1], 4, axis=2)
    hwc = lambda v, t: v[0, :, t].transpose(1, 2, 0)  # noqa: E731

    def package(x):
        return float(
            np.mean([ref(lpips.im2tensor(hwc(x, t)), lpips.im2tensor(hwc(truth, t))).item()
                     for t in range(4)])
        )  # fmt: skip

    metric = L.LPIPSMetric()
    metric.model = ours
    t = lambda x: torch.from_numpy(x)  # noqa: E731
    v = Videos("a", "", 16.0, t(pred), t(truth), t(still), t(pred), t(truth))
    with torch.no_grad():
        got = metric.item(v)
    assert got["lpips"] == pytest.approx(package(pred), rel=1e-5)
    assert got["still_lpips"] == pytest.approx(package(still), rel=1e-5)
    assert got["lpips"] != pytest.approx(got["still_lpips"], rel=1e-2)


def test_small_frames_are_raised_to_min_size():
    frames = L.to_frames(torch.zeros(1, 3, 2, 24, 36, dtype=torch.uint8), 64)
    assert frames.shape == (2, 3, 64, 96) and float(frames.max()) == -1.0
    assert L.to_frames(torch.zeros(1, 3, 1, 70, 90, dtype=torch.uint8), 64).shape[-2:] == (70, 90)


def test_trunk_has_torchvisions_keys_and_loads_its_file_strictly(tmp_path, trunk):
    sd = trunk.state_dict()
    want = {f"features.{i}.weight": s for i, s in TORCHVISION_CONVS}
    want.update({f"features.{i}.bias": (s[0],) for i, s in TORCHVISION_CONVS})
    assert {k: tuple(v.shape) for k, v in sd.items()} == want
    # The official file also holds the classifier (tiny stand-ins here: only names are checked).
    official = {**{k: torch.randn(v.shape) for k, v in sd.items()},
                **{k: torch.zeros(1) for k in alexnet.CLASSIFIER_KEYS}}  # fmt: skip
    torch.save(official, tmp_path / "alexnet.pth")
    net = alexnet.load_official(alexnet.AlexNetFeatures(), tmp_path / "alexnet.pth")
    assert torch.equal(net.features[10].bias, official["features.10.bias"])
    # lpips' own module names (net.slice1.0.weight) are not torchvision's file: refused.
    torch.save({k.replace("features.", "slice1."): v for k, v in sd.items()}, tmp_path / "x.pth")
    with pytest.raises(ValueError, match="not torchvision's AlexNet state dict") as err:
        alexnet.load_official(alexnet.AlexNetFeatures(), tmp_path / "x.pth")
    assert "\n" not in str(err.value) and alexnet.WEIGHTS_URL in str(err.value)


def test_heads_load_the_real_alex_pth_and_refuse_another_file(upstream, tmp_path):
    path = upstream[1] / "weights" / "v0.1" / "alex.pth"
    net = L.LPIPS()
    net.load_heads(path)
    real = torch.load(path, map_location="cpu", weights_only=True)
    assert torch.equal(net.lin4.model[1].weight, real["lin4.model.1.weight"])
    assert all(float(h.model[1].weight.min()) >= 0 for h in net.heads())  # learned, non-negative
    torch.save({"lin0.model.1.weight": real["lin0.model.1.weight"]}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="not lpips' v0.1 alex.pth"):
        net.load_heads(tmp_path / "bad.pth")


def test_missing_weights_name_both_downloads_in_one_line(tmp_path):
    (metric,) = build_metrics(["lpips"])
    assert isinstance(metric, L.LPIPSMetric) and metric.better["lpips"] == "lower"
    metric = L.LPIPSMetric(trunk=tmp_path / "a.pth", heads=tmp_path / "h" / "alex.pth")
    with pytest.raises(FileNotFoundError) as err:
        metric.setup("cpu")
    msg = str(err.value)
    assert "\n" not in msg and msg.endswith(".")
    assert alexnet.WEIGHTS_URL in msg and "pip download --no-deps lpips==0.1.4" in msg
    assert f"-d {tmp_path / 'h'}" in msg


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    from tests.test_inference_fixtures import make_dataset, tiny_config, write_job

    data = make_dataset(tmp_path_factory.mktemp("data") / "synthetic")
    cfg = tiny_config(data, tmp_path_factory.mktemp("runs"))
    return cfg, write_job(cfg)


def test_eval_command_scores_lpips_from_the_weights_folder(job, upstream, tmp_path, monkeypatch,
                                                           capsys):  # fmt: skip
    """`--metrics psnr,lpips` on the tiny job (32x32 frames, raised to 64): weights found under
    $CHECKPOINTS/lpips/, numbers and settings in the JSON, a column in the report; without the
    files the command stops before generating, in one line naming the downloads."""
    from framework import eval as ev

    cfg, ckpt = job
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # no hub copy of the trunk
    monkeypatch.setenv("CHECKPOINTS", str(tmp_path / "ckpt"))
    argv = ["--checkpoint", str(ckpt), "--num_items", "1", "--num_steps", "1", "--guidance", "0",
            "--metrics", "psnr,lpips", "--output", str(tmp_path / "e" / "lp.json")]  # fmt: skip
    assert ev.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: LPIPS weights are missing") and "\n" not in err
    assert not (tmp_path / "e" / "lp.json").exists()

    folder = tmp_path / "ckpt" / "lpips"
    folder.mkdir(parents=True)
    torch.manual_seed(3)
    official = {**alexnet.AlexNetFeatures().state_dict(),
                **{k: torch.zeros(1) for k in alexnet.CLASSIFIER_KEYS}}  # fmt: skip
    torch.save(official, folder / alexnet.WEIGHTS_FILE)
    (folder / "alex.pth").write_bytes((upstream[1] / "weights" / "v0.1" / "alex.pth").read_bytes())
    assert ev.main(argv) == 0, capsys.readouterr().err
    summary = json.loads((tmp_path / "e" / "lp.json").read_text())
    settings = summary["metric_settings"]["lpips"]
    # The RECORD of the wheel lists alex.pth as sha256=33MoXjWy... (base64 of this digest).
    assert settings["heads_sha256"] == (
        "df73285e35b22355a2df87cdb6b70b343713b667eddbda73e1977e0c860835c0"
    )
    assert settings["trunk"] == str(folder / alexnet.WEIGHTS_FILE)
    assert settings["heads"] == str(folder / "alex.pth")
    result = summary["runs"][0]["result"]
    assert result["lpips"] > 0 and result["better"]["lpips"] == "lower"
    assert result["intervals"]["still_lpips"]["n"] == 1
    assert "<th>lpips &darr;</th>" in (tmp_path / "e" / "lp.html").read_text()  # a column
