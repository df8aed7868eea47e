"""Eval sets frozen to a manifest (and refused when the data changes), intervals against scipy,
SSIM against scikit-image, and the eval report of two checkpoints in headless Chromium."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from framework import eval as ev
from framework.evaluation import evalset as ES
from framework.evaluation import stats
from framework.inference.metrics import ssim
from tests.test_html_report import dump_dom, screenshot
from tests.test_inference_fixtures import STATE_T, tiny_config, write_job


def test_t_quantiles_and_intervals_match_scipy():
    from scipy import stats as sps

    for df in (1, 2, 3, 5, 10, 29, 30, 31, 45, 100, 1000):
        assert stats.t975(df) == pytest.approx(sps.t.ppf(0.975, df), abs=2e-4)
    vals = [20.1, 22.4, 19.8, 23.0, 21.7]
    got = stats.interval(vals)
    lo, hi = sps.t.interval(0.95, len(vals) - 1, loc=np.mean(vals), scale=sps.sem(vals))
    assert (got["lo"], got["hi"]) == (pytest.approx(lo, abs=1e-3), pytest.approx(hi, abs=1e-3))
    assert stats.interval([1.0])["lo"] is None and stats.interval([1.0, float("inf")])["hi"] is None
    assert stats.separated({"lo": 0, "hi": 1}, {"lo": 2, "hi": 3})
    assert not stats.separated({"lo": 0, "hi": 2.5}, {"lo": 2, "hi": 3})


def test_ssim_matches_scikit_image():
    """Wang et al.'s settings in scikit-image: gaussian window sigma 1.5 (11 taps at its default
    truncate 3.5), population covariance, data range 255, channels averaged; it filters with
    reflected borders and then crops them, which is our valid region."""
    from skimage.metrics import structural_similarity

    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)
    noise = rng.normal(0, 25, a.shape)
    b = np.clip(a.astype(float) * 0.8 + 30 + noise, 0, 255).astype(np.uint8)
    want = structural_similarity(
        a,
        b,
        channel_axis=-1,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        data_range=255,
    )
    video = lambda x: torch.from_numpy(x).permute(2, 0, 1)[:, None]  # noqa: E731  [3,1,H,W]
    assert ssim(video(a), video(b)) == pytest.approx(want, abs=1e-6)
    assert 0.2 < want < 0.95  # a non-trivial pair


@pytest.fixture(scope="module")
def job(synthetic_data, tmp_path_factory):
    data = synthetic_data
    cfg = tiny_config(data, tmp_path_factory.mktemp("runs"))
    cfg.eval = {"name": "val2", "num_items": 2, "seeds": [0, 1], "num_steps": 1, "guidance": 0.0}
    return cfg, write_job(cfg), data


def test_manifest_is_frozen_then_refused_when_data_or_settings_change(job, tmp_path):
    cfg, _, data = job
    spec = ES.spec_of(cfg, manifest=str(tmp_path / "m.json"))
    first = ES.load_eval_set(cfg, STATE_T, spec)
    assert first.created and [it.name for it in first.items] == [
        p.stem for p in sorted((data / "val" / "videos").glob("*.mp4"))
    ]
    manifest = json.loads((tmp_path / "m.json").read_text())
    assert manifest["settings"]["seeds"] == [0, 1] and len(manifest["items"]) == 2
    assert all(len(m["video_sha256"]) == 64 for m in manifest["items"])
    again = ES.load_eval_set(cfg, STATE_T, spec)
    assert not again.created and [it.name for it in again.items] == [it.name for it in first.items]

    changed = ES.spec_of(cfg, manifest=str(tmp_path / "m.json"), num_steps=2)
    with pytest.raises(ES.EvalSetChanged, match="cfg.eval settings"):
        ES.load_eval_set(cfg, STATE_T, changed)

    # Same item ids, different caption embedding: refused, naming the item and the fix.
    pickle = data / "val" / "t5_xxl" / f"{first.items[0].name}.pickle"
    saved = pickle.read_bytes()
    import pickle as pk

    emb = pk.loads(saved)
    emb[0] = emb[0] + np.float16(0.5)
    pickle.write_bytes(pk.dumps(emb))
    try:
        with pytest.raises(ES.EvalSetChanged) as err:
            ES.load_eval_set(cfg, STATE_T, spec)
        msg = str(err.value)
        assert "\n" not in msg and "caption embedding" in msg and first.items[0].name in msg
        assert "new eval.name" in msg
    finally:
        pickle.write_bytes(saved)
    ES.load_eval_set(cfg, STATE_T, spec)  # restored: accepted again


@pytest.mark.slow
def test_two_checkpoints_json_intervals_and_report_in_chromium(job, tmp_path):
    cfg, ckpt, _ = job
    out = tmp_path / "eval" / "val2.json"
    argv = ["--checkpoint", str(ckpt), "--checkpoint", f"{ckpt}@ema", "--output", str(out)]
    assert ev.main([*argv, "--label", "plain", "--label", "ema"]) == 0
    summary = json.loads(out.read_text())
    assert [r["label"] for r in summary["runs"]] == ["plain", "ema"]
    assert [r["ema"] for r in summary["runs"]] == [False, True]
    plain, ema = (r["result"] for r in summary["runs"])
    assert plain["psnr"] != ema["psnr"]  # different weights (the fixture's EMA copy)
    for res in (plain, ema):
        assert res["seeds"] == [0, 1] and res["num_items"] == 2
        for key in ("psnr", "ssim", "latent_l2", "still_psnr"):
            ci = res["intervals"][key]
            vals = [it[key] for it in res["items"]]
            assert ci["mean"] == pytest.approx(np.mean(vals)) and ci["lo"] <= ci["mean"] <= ci["hi"]
        for it in res["items"]:  # item value = mean over its seeds
            assert it["psnr"] == pytest.approx(np.mean([s["psnr"] for s in it["seeds"]]))
    assert summary["eval_set"]["name"] == "val2" and summary["eval_set"]["num_items"] == 2

    page = out.with_suffix(".html")
    dom = dump_dom(page)
    figures = re.findall(r"<figure [^>]*>", dom)
    videos = [f for f in figures if 'data-kind="video"' in f]
    assert len(videos) == 2 * 3  # per item: ground truth + 2 checkpoints
    assert all('data-loaded="1"' in f and 'data-playing="1"' in f for f in videos), videos
    assert len(re.findall(r'<img src="val2_media/[^"]+/input.png"', dom)) == 2
    rows = re.findall(r'<tr data-label="([^"]+)">', dom)
    assert rows == ["plain", "ema"]
    assert dom.count('class="best"') >= 3  # psnr, ssim, latent_l2 each mark one checkpoint
    assert "95% interval" in dom
    pixels = screenshot(page, tmp_path / "shot.png")
    assert pixels.std() > 10


def test_base_is_the_untrained_net_and_labels_must_differ(job, tmp_path, capsys):
    cfg, ckpt, _ = job
    argv = ["--experiment", "tiny_gr1", "--checkpoint", str(ckpt), "--checkpoint", str(ckpt)]
    assert ev.main(argv) == 2
    assert "labels repeat" in capsys.readouterr().err
    args = ev.build_parser().parse_args(["--experiment", "tiny_gr1"])
    cfg_b, path, ema, label = ev.resolve_checkpoint("base", args, [])
    assert path is None and label == "base" and not ema
    m1 = ev.build(cfg_b, None, False)
    m2 = ev.build(cfg_b, None, False)
    p1, p2 = next(m1.net.parameters()), next(m2.net.parameters())
    assert torch.equal(p1, p2)  # seeded with train.seed: the same untrained net each time


def test_verdict_lines_compare_last_with_first():
    def run(label, psnr, lo, hi, l2):
        ci = {"psnr": {"mean": psnr, "lo": lo, "hi": hi}, "latent_l2": {"mean": l2, "lo": l2 - 1,
              "hi": l2 + 1}}  # fmt: skip
        better = {"psnr": "higher", "latent_l2": "lower", "still_psnr": "baseline"}
        return {"label": label, "result": {"psnr": psnr, "latent_l2": l2, "intervals": ci,
                                           "better": better}}  # fmt: skip

    lines = ev.verdict_lines([run("base", 8.0, 7.0, 9.0, 5.0), run("tuned", 20.0, 18.0, 22.0, 4.5)])
    assert lines == [
        "psnr: tuned beats base (8 -> 20, higher is better); intervals do not overlap",
        "latent_l2: tuned beats base (5 -> 4.5, lower is better); intervals overlap",
    ]


def test_pixel_metrics_run_on_the_eval_device(monkeypatch):
    # SSIM of a GR1-shaped video costs 49 s on a CPU and 0.05 s on an H100: the eval's device
    # (given to setup) is where PSNR and SSIM compute, not where the decoded frames sit.
    from framework.evaluation import metrics as EM

    seen = []
    monkeypatch.setattr(EM.M, "ssim", lambda p, t: seen.append((p.device, t.device)) or 0.5)
    monkeypatch.setattr(EM.M, "psnr", lambda p, t: seen.append((p.device, t.device)) or 20.0)
    x = torch.zeros(1, 3, 2, 4, 4, dtype=torch.uint8)
    v = EM.Videos("a", "p", 16.0, x, x, x, x, x)
    for metric in (EM.SSIM(), EM.PSNR()):
        metric.setup(torch.device("meta"))
        assert set(metric.item(v).values()) <= {0.5, 20.0}
    assert seen and all(d == (torch.device("meta"),) * 2 for d in seen)
