"""Evaluation (function, hook, command), the sampling hook and the loss-curve plot, on a tiny
random Predict2 net with a pixel tokenizer."""

from __future__ import annotations

import json
import math
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from framework import eval as ev
from framework.data.heldout import build_dataset
from framework.hooks.evaluation import EvalHook
from framework.hooks.loss_curve import LossCurveHook
from framework.hooks.samples import SampleVideos
from framework.inference import loading
from framework.inference.metrics import psnr, ssim
from framework.inference.plots import main as plots_main
from framework.inference.plots import plot_loss_curve, smooth
from tests.test_inference_fixtures import (
    SIZE,
    STATE_T,
    decode,
)


@pytest.fixture(scope="module")
def job(tiny_job):
    return tiny_job.cfg, tiny_job.path, tiny_job.data


def heldout(job, n: int):
    return build_dataset(job[0].data.dataset).heldout_items(n, STATE_T)


@pytest.fixture(scope="module")
def model(job):
    return loading.build_model(job[0], job[1], device="cpu")


class FakeTrainer:
    """The trainer surface the hooks use (cfg, model, job_dir, step, is_main, world_size, log,
    ema_weights, batches.dataset)."""

    def __init__(self, cfg, model, job_dir: Path):
        self.cfg, self.model, self.job_dir = cfg, model, job_dir
        self.batches = SimpleNamespace(dataset=build_dataset(cfg.data.dataset))
        self.step, self.is_main, self.world_size = 0, True, 1
        self.logged: list[dict] = []
        self.ema_uses = 0

    def log(self, values: dict) -> None:
        self.logged.append(dict(values))

    @contextmanager
    def ema_weights(self):
        self.ema_uses += 1
        yield


def test_evaluate_reports_finite_deterministic_metrics(job, model):
    _, _, data = job
    result = ev.evaluate(model, heldout(job, 2), num_steps=2, seed=0)
    assert result["num_items"] == 2 and [r["name"] for r in result["items"]] == [
        p.stem for p in sorted((data / "val" / "videos").glob("*.mp4"))
    ]
    for key in ev.METRICS:
        assert math.isfinite(result[key])
        assert result[key] == pytest.approx(sum(r[key] for r in result["items"]) / 2)
    assert 0 < result["ssim"] < 1 and result["latent_l2"] > 0
    again = ev.evaluate(model, heldout(job, 2), num_steps=2, seed=0)
    assert again["items"] == result["items"]
    table = ev.format_table(result)
    assert "psnr" in table and "mean" in table.splitlines()[-1]
    ci = result["intervals"]["psnr"]
    assert ci["n"] == 2 and ci["lo"] < result["psnr"] < ci["hi"]


def test_evaluate_sets_its_metrics_up_before_generating(job, model, monkeypatch, tmp_path):
    """The hook's `evaluate` loads a metric's weights (or says they are missing) before any video
    is generated, as the command does: LPIPS without its files fails naming them."""
    monkeypatch.setenv("CHECKPOINTS", str(tmp_path / "none"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "none"))
    calls = []
    monkeypatch.setattr(model, "generate", lambda *a, **k: calls.append(1))
    with pytest.raises(FileNotFoundError, match="LPIPS weights are missing"):
        ev.evaluate(model, heldout(job, 1), num_steps=1, metrics=["psnr", "lpips"])
    assert calls == []


def test_evaluate_compares_only_generated_frames(job):
    """A model that repeats the conditioning frame: the metrics equal those computed by hand on
    frames 1.. of each clip, and the latent L2 on latent frames 1.."""
    from framework.models.tokenizers import PixelTokenizer

    class Still:
        expected_pixel_frames = STATE_T
        tokenizer = PixelTokenizer(spatial=4)

        def _device(self):
            return torch.device("cpu")

        def generate(self, cond, emb, neg, num_conditional_frames, **kw):
            assert cond.shape[2] == num_conditional_frames == 1 and neg is None
            return cond.expand(-1, -1, STATE_T, -1, -1).clone()

    items = heldout(job, 1)
    result = ev.evaluate(Still(), items, num_steps=1)
    truth = items[0].video
    still = truth[:, :, :1].expand(-1, -1, STATE_T, -1, -1)
    assert result["psnr"] == pytest.approx(psnr(still[:, :, 1:], truth[:, :, 1:]))
    assert result["ssim"] == pytest.approx(ssim(still[:, :, 1:], truth[:, :, 1:]))
    tok = PixelTokenizer(spatial=4)
    want = float(((tok.encode(still) - tok.encode(truth))[:, :, 1:] ** 2).mean())
    assert result["latent_l2"] == pytest.approx(want)
    # A model that holds the frame still scores exactly the still baseline.
    assert result["still_psnr"] == pytest.approx(result["psnr"])
    assert result["still_ssim"] == pytest.approx(result["ssim"])


def test_eval_hook_writes_before_and_after(job, model, tmp_path):
    cfg, _, _ = job
    trainer = FakeTrainer(cfg, model, tmp_path)
    hook = EvalHook(num_items=1, num_steps=1)
    hook.before_train(trainer)
    trainer.step = 5
    hook.after_train(trainer)
    before = json.loads((tmp_path / "eval_before.json").read_text())
    after = json.loads((tmp_path / "eval_after.json").read_text())
    assert before["step"] == 0 and after["step"] == 5 and before["num_items"] == 1
    assert set(trainer.logged[0]) == {
        "eval_before/psnr",
        "eval_before/ssim",
        "eval_before/latent_l2",
        "eval_before/still_psnr",
        "eval_before/still_ssim",
    }
    assert set(trainer.logged[1]) == {f"eval_after/{k}" for k in ev.METRICS}
    assert trainer.ema_uses == 2
    trainer.is_main = False  # other ranks neither generate nor write (no FSDP here)
    (tmp_path / "eval_after.json").unlink()
    hook.after_train(trainer)
    assert not (tmp_path / "eval_after.json").exists()


def test_sample_hook_writes_videos_on_schedule(job, model, tmp_path):
    cfg, _, _ = job
    trainer = FakeTrainer(cfg, model, tmp_path)
    hook = SampleVideos(every=2, num_items=2, num_steps=1)
    hook.before_train(trainer)
    for step in (1, 2, 3):
        trainer.step = step
        hook.after_step(trainer, step, 0.0, {})
    hook.after_train(trainer)
    dirs = sorted(p.name for p in (tmp_path / "samples").iterdir())
    assert dirs == ["iter_000000002", "iter_000000003"]
    videos = sorted((tmp_path / "samples" / "iter_000000002").glob("*.mp4"))
    assert len(videos) == 2 and decode(videos[0]) == (STATE_T, SIZE, SIZE, 8.0)
    assert trainer.ema_uses == 2 and all("sample_time" in r for r in trainer.logged)
    assert hook.state_dict() == {"last_step": 3}
    hook.after_train(trainer)  # the final step was sampled already
    assert trainer.ema_uses == 2


def test_eval_command_writes_json_and_report(job, capsys):
    cfg, ckpt, _ = job
    out_dir = loading.job_dir(cfg).parent.parent / "eval"
    argv = ["--checkpoint", str(ckpt), "--num_items", "1", "--num_steps", "1", "--guidance", "0"]
    rc = ev.main([*argv, "--name", "cmd"])
    out = capsys.readouterr().out
    assert rc == 0, out
    summary = json.loads((out_dir / "cmd.json").read_text())
    (run,) = summary["runs"]
    assert run["checkpoint"] == str(ckpt) and run["result"]["num_items"] == 1
    assert run["label"] == f"{cfg.job.name}/{ckpt.stem}"
    assert (out_dir / "cmd.html").is_file() and (out_dir / "cmd.manifest.json").is_file()
    assert "froze eval set cmd" in out and str(out_dir / "cmd.json") in out
    assert ev.main([*argv, "--name", "other", "--dataset_dir", "/nonexistent"]) == 2
    assert "/nonexistent (videos/*.mp4 + t5_xxl/*.pickle) has no readable held-out clip" in (
        capsys.readouterr().err
    )


def test_loss_curve_png(tmp_path, capsys):
    lines = [json.dumps({"step": s, "loss": 1.0 / s, "edm_loss": 0.1 / s}) for s in range(1, 30)]
    lines += [json.dumps({"step": 30, "eval_after/psnr": 20.0}), '{"step": 31, "lo']  # torn
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    out = plot_loss_curve(tmp_path)
    assert out == tmp_path / "loss_curve.png"
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 5000
    out.unlink()
    LossCurveHook().after_train(SimpleNamespace(is_main=True, job_dir=tmp_path))
    assert out.is_file()
    assert plots_main([str(tmp_path)]) == 0
    assert plots_main([str(tmp_path / "nope")]) == 2
    assert "metrics.jsonl does not exist" in capsys.readouterr().err


def test_smoothing_is_centred_and_follows_falling_losses():
    falling = [10.0 * 0.9**i for i in range(100)]  # straight on the log axis
    smoothed = smooth(falling)
    # Centred in log space: exact on the straight part, no lag behind the falling values.
    assert smoothed[10:90] == pytest.approx(falling[10:90])
    noisy = [2.0 if i % 2 else 0.5 for i in range(100)]  # a factor 2 either side of 1
    assert max(abs(math.log2(v)) for v in smooth(noisy)) <= 0.34  # a 5-point window: 1/3 of it
    assert smooth([]) == [] and smooth([-1.0, 1.0]) == [0.0, 0.0]


def test_sample_hook_sends_videos_through_the_trainer_log_when_wandb_runs(job, model, tmp_path):
    import wandb

    cfg, _, _ = job
    trainer = FakeTrainer(cfg, model, tmp_path)
    trainer.sink = SimpleNamespace(wandb_run=object())  # a live run, as MetricsSink holds it
    SampleVideos(every=1, num_items=1, num_steps=1).sample(trainer, 1)
    ((key, video),) = [(k, v) for k, v in trainer.logged[0].items() if k != "sample_time"]
    assert key.startswith("samples/val_") and isinstance(video, wandb.Video)


def test_eval_hook_scores_the_frozen_set_every_n_steps(job, model, tmp_path):
    from omegaconf import OmegaConf

    cfg = OmegaConf.create(OmegaConf.to_container(job[0]))
    cfg.job.output_root = str(tmp_path / "runs")
    cfg.train.max_steps = 5
    cfg.eval = {"name": "hookset", "num_items": 2, "seeds": [0, 1], "num_steps": 1}
    trainer = FakeTrainer(cfg, model, tmp_path)
    hook = EvalHook(before=False, after=False, every=2, num_items=1, num_steps=1, guidance=0.0)
    for step in range(1, 6):
        trainer.step = step
        hook.after_step(trainer, step, 0.0, {})
    assert len(trainer.logged) == 2 and set(trainer.logged[0]) == {f"eval/{k}" for k in ev.METRICS}
    assert sorted(p.name for p in (tmp_path / "eval").iterdir()) == [
        "step_000000002.json",
        "step_000000004.json",
    ]
    manifest = tmp_path / "runs" / cfg.job.project / "eval" / "hookset.manifest.json"
    frozen = json.loads(manifest.read_text())
    assert len(frozen["items"]) == 2  # the set as declared; the hook scores its first item
    step2 = json.loads((tmp_path / "eval" / "step_000000002.json").read_text())
    assert [r["name"] for r in step2["items"]] == [frozen["items"][0]["name"]]
