"""The fit loop on the toy model, in process: learning, accumulation, faults, files, logging."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from omegaconf import DictConfig

import tests.toy_experiments as toy
from framework.config import ConfigError, apply_overrides, get
from framework.trainer import EXIT_NONFINITE, EXIT_OK, EXIT_OOM, Trainer, run
from framework.trainer.checkpoint import Checkpointer
from framework.trainer.ema import ema_key


def toy_cfg(tmp_path, *overrides: str) -> DictConfig:
    return apply_overrides(get("toy_regression"), [f"job.output_root={tmp_path}", *overrides])


def metrics(trainer_or_dir) -> list[dict]:
    job_dir = getattr(trainer_or_dir, "job_dir", trainer_or_dir)
    return [json.loads(line) for line in (job_dir / "metrics.jsonl").read_text().splitlines()]


def full_mse(trainer: Trainer) -> float:
    ds = trainer.batches.dataset
    with torch.no_grad():
        return float(torch.nn.functional.mse_loss(trainer.model.net(ds.x), ds.y))


def test_loss_falls_and_run_files_are_written(tmp_path):
    t = Trainer(
        toy_cfg(tmp_path, "train.max_steps=40", "optim.lr=0.02", "data.batch_size=8"),
        overrides=["optim.lr=0.02"],
    )
    before = full_mse(t)
    assert t.fit() is True
    assert full_mse(t) < 0.2 * before
    rows = metrics(t)
    assert [r["step"] for r in rows] == list(range(1, 41))
    for key in (
        "loss",
        "lr",
        "grad_norm",
        "step_time",
        "data_wait",
        "samples_per_s",
        "mse",
        "nonfinite_steps",
        "bad_samples",
    ):
        assert key in rows[-1], key
    assert "mfu" not in rows[-1]  # no known device peak on a CPU
    assert rows[0]["lr"] == pytest.approx(0.02 * 0.1)  # f_start of the toy schedule
    assert (t.job_dir / "config.yaml").read_text().count("ToyModel") == 1
    assert "optim.lr=0.02" in (t.job_dir / "overrides.txt").read_text()
    marker = t.job_dir / "checkpoints" / "latest_checkpoint.txt"
    assert marker.read_text() == "iter_000000040.pt\n"


def test_grad_accum_matches_one_big_batch(tmp_path):
    """4 micro-batches of 2 give the same update as one batch of 8 (same samples, fp32)."""
    runs = {}
    for name, bs, k in (("accum", 2, 4), ("big", 8, 1)):
        t = Trainer(
            toy_cfg(
                tmp_path,
                f"job.name={name}",
                f"data.batch_size={bs}",
                f"train.grad_accum={k}",
                "train.max_steps=3",
            )
        )
        t.fit()
        runs[name] = t
    a, b = runs["accum"], runs["big"]
    assert torch.equal(torch.cat(a.model.seen), torch.cat(b.model.seen))
    for pa, pb in zip(a.model.net.parameters(), b.model.net.parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-5, atol=1e-6)
    la, lb = [r["loss"] for r in metrics(a)], [r["loss"] for r in metrics(b)]
    assert la == pytest.approx(lb, rel=1e-5)
    # Without accumulation the update differs: the comparison above can fail.
    c = Trainer(toy_cfg(tmp_path, "job.name=small", "data.batch_size=2", "train.max_steps=3"))
    c.fit()
    assert not torch.allclose(c.model.net[0].weight, b.model.net[0].weight)


def test_nonfinite_loss_skips_the_step_and_counts(tmp_path):
    t = Trainer(toy_cfg(tmp_path, "train.max_steps=6", "model.nan_calls=[2]"))
    before = {k: v.clone() for k, v in t.model.net.state_dict().items()}
    t.fit()
    rows = metrics(t)
    assert [r["step"] for r in rows] == list(range(1, 7))  # the skipped try is not a step
    assert rows[1]["nonfinite_steps"] == 0 and rows[2]["nonfinite_steps"] == 1
    assert rows[-1]["nonfinite_in_a_row"] == 0
    assert all(r["loss"] == r["loss"] for r in rows)  # no NaN reached the log
    assert len(t.model.seen) == 7  # one batch more than steps: the skipped one used data
    assert t.scheduler.last_epoch == 6  # the schedule did not advance on the skipped try
    assert not torch.equal(before["0.weight"], t.model.net.state_dict()["0.weight"])


def test_nonfinite_in_a_row_stops_and_keeps_last_good_checkpoint(tmp_path, caplog):
    cfg = toy_cfg(
        tmp_path,
        "train.max_steps=20",
        "model.nan_from=5",
        "checkpoint.save_iter=4",
        "train.max_nonfinite_steps=3",
    )
    with caplog.at_level(logging.ERROR):
        assert run(cfg, []) == EXIT_NONFINITE
    assert "3 steps in a row" in caplog.text and "iter_000000004.pt" in caplog.text
    ckpt = tmp_path / "worldtune_tests/toy/toy_regression/checkpoints"
    assert (ckpt / "latest_checkpoint.txt").read_text().strip() == "iter_000000004.pt"
    assert sorted(p.name for p in (ckpt / "model").iterdir()) == ["iter_000000004.pt"]
    # The kept checkpoint resumes and continues from step 4 (with the same model settings: a
    # model change is refused on resume; NaNs come from this process's 5th call, past step 6).
    t = Trainer(toy_cfg(tmp_path, "train.max_steps=6", "model.nan_from=5"))
    assert t.step == 4
    t.fit()
    assert t.step == 6


def test_model_file_holds_net_and_ema_keys(tmp_path):
    t = Trainer(toy_cfg(tmp_path, "train.max_steps=4", "train.ema.enabled=true"))
    t.fit()
    sd = torch.load(t.checkpointer.path("model", 4), weights_only=True)
    net_keys = {f"net.{k}" for k in t.model.net.state_dict()}
    ema_keys = {f"net_ema.{k}" for k in t.model.net.state_dict()}
    assert set(sd) == net_keys | ema_keys
    for name, shadow in zip(t.ema.names, t.ema.shadow):
        assert name.startswith("net.")  # model-level names: net.* (and any extra module)
        assert sd[ema_key(name)].dtype == torch.float32
        assert torch.equal(sd[ema_key(name)], shadow)
        assert not torch.equal(sd[ema_key(name)], sd[name])
    with t.ema_weights():
        torch.testing.assert_close(t.model.net[0].weight, t.ema.shadow[0])
    assert torch.equal(t.model.net[0].weight, sd["net.0.weight"])
    # Without EMA the file holds net. keys only.
    t2 = Trainer(toy_cfg(tmp_path, "job.name=no_ema", "train.max_steps=2"))
    t2.fit()
    assert set(torch.load(t2.checkpointer.path("model", 2), weights_only=True)) == net_keys


def test_load_path_initialises_the_net(tmp_path):
    t = Trainer(toy_cfg(tmp_path, "job.name=src", "train.max_steps=4", "train.ema.enabled=true"))
    t.fit()
    src = t.checkpointer.path("model", 4)
    sd = torch.load(src, weights_only=True)
    sd["net.extra_buffer"] = torch.zeros(1)  # what ignore_keys is for
    official = tmp_path / "official.pt"
    torch.save(sd, official)
    for name, load_ema, prefix in (("dst", False, "net."), ("dst_ema", True, "net_ema.")):
        d = Trainer(
            toy_cfg(
                tmp_path,
                f"job.name={name}",
                f"checkpoint.load_path={official}",
                "checkpoint.ignore_keys=[extra_*]",
                f"checkpoint.load_ema={load_ema}",
            )
        )
        for k, v in d.model.net.state_dict().items():
            assert torch.equal(v, sd[prefix + k]), k
    with pytest.raises(ConfigError, match="unexpected: net.extra_buffer"):  # strict
        Trainer(toy_cfg(tmp_path, "job.name=strict", f"checkpoint.load_path={official}"))
    with pytest.raises(ConfigError, match="model.pt does not exist; check the path"):
        Trainer(toy_cfg(tmp_path, "job.name=missing", "checkpoint.load_path=/nope/model.pt"))


def test_out_of_memory_names_the_knobs(tmp_path, monkeypatch, caplog):
    def oom(self, batch, step):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 80 GiB")

    monkeypatch.setattr(toy.ToyModel, "training_step", oom)
    with caplog.at_level(logging.ERROR):
        assert run(toy_cfg(tmp_path), []) == EXIT_OOM
    for knob in (
        "data.batch_size",
        "parallel.activation_checkpointing=selective",
        "parallel.shard_size",
    ):
        assert knob in caplog.text


def test_keep_last_and_stray_temp_files(tmp_path):
    t = Trainer(
        toy_cfg(tmp_path, "train.max_steps=8", "checkpoint.save_iter=2", "checkpoint.keep_last=2")
    )
    (t.checkpointer.root / "model").mkdir(parents=True)
    (t.checkpointer.root / "model" / "iter_000000099.pt.tmp").write_bytes(b"half a file")
    assert run(t.cfg, []) == EXIT_OK
    for part in ("model", "optim", "scheduler", "trainer"):
        names = sorted(p.name for p in (t.checkpointer.root / part).iterdir())
        assert names == ["iter_000000006.pt", "iter_000000008.pt"], part


def test_scrub_secrets_masks_credentials_not_settings():
    from framework.trainer.metrics import scrub_secrets

    tree = {
        "api_key": "k",
        "hf_token": "t",
        "password": "p",
        "model": {"max_text_tokens": 32, "tokenizer": "x", "num_tokens": [1, 2]},
        "client_secret": "s",
        "token": None,
    }
    assert scrub_secrets(tree) == {
        "api_key": "***",
        "hf_token": "***",
        "password": "***",
        "model": {"max_text_tokens": 32, "tokenizer": "x", "num_tokens": [1, 2]},
        "client_secret": "***",
        "token": None,
    }


def test_wandb_offline_and_secrets_stay_out_of_config(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = toy_cfg(
        tmp_path,
        "train.max_steps=2",
        "logging.wandb.mode=offline",
        "+logging.wandb.api_key=SECRET123",
    )
    assert run(cfg, []) == EXIT_OK
    job = tmp_path / "worldtune_tests/toy/toy_regression"
    assert "SECRET123" not in (job / "config.yaml").read_text()
    assert list((job / "wandb").glob("offline-run-*")), "wandb wrote no offline run"
    assert len(metrics(job)) == 2


def test_wandb_failure_does_not_stop_training(tmp_path, monkeypatch, caplog):
    import wandb

    def unreachable(**kwargs):
        raise ConnectionError("api.wandb.ai unreachable")

    monkeypatch.setattr(wandb, "init", unreachable)
    with caplog.at_level(logging.WARNING):
        assert run(toy_cfg(tmp_path, "train.max_steps=2", "logging.wandb.mode=online"), []) == 0
    assert "wandb is off for this run" in caplog.text


def test_profile_and_progress_hooks(tmp_path, capsys):
    cfg = toy_cfg(
        tmp_path,
        "train.max_steps=4",
        "+hooks.profile={_target_:framework.hooks.ProfileHook,start:1,end:3}",
        "hooks.progress={_target_:framework.hooks.ProgressHook}",
    )
    assert run(cfg, []) == EXIT_OK
    assert "4/4" in capsys.readouterr().err  # the tqdm bar reached the end
    traces = list((tmp_path / "worldtune_tests/toy/toy_regression/profile").glob("*.json"))
    assert [p.name for p in traces] == ["trace_rank0_steps2-3.json"]
    assert "ProfilerStep" in traces[0].read_text() or traces[0].stat().st_size > 1000


def test_corrupt_latest_marker_is_a_clear_error(tmp_path):
    t = Trainer(toy_cfg(tmp_path, "train.max_steps=2"))
    t.fit()
    t.checkpointer.path("optim", 2).unlink()
    with pytest.raises(ConfigError, match="optim/iter_000000002.pt is missing"):
        Checkpointer(t.checkpointer.root, t.env).latest()
    (t.checkpointer.root / "latest_checkpoint.txt").write_text("garbage\n")
    with pytest.raises(ConfigError, match="not iter_NNNNNNNNN.pt"):
        Trainer(toy_cfg(tmp_path, "train.max_steps=2"))


def test_zero_nonfinite_grads_counts_and_zeroes_only_bad_values():
    from framework.trainer.state import zero_nonfinite_grads_

    a, b, c = (torch.nn.Parameter(torch.zeros(4)) for _ in range(3))
    a.grad = torch.tensor([1.0, float("nan"), 2.0, float("-inf")])
    b.grad = torch.tensor([3.0, 4.0, 5.0, 6.0])
    count = zero_nonfinite_grads_([a, b, c], torch.device("cpu"))  # c has no grad
    assert int(count) == 2
    assert a.grad.tolist() == [1.0, 0.0, 2.0, 0.0] and b.grad.tolist() == [3.0, 4.0, 5.0, 6.0]
    # Finite values whose norm overflows fp32 are left alone.
    b.grad = torch.full((4,), 1e30)
    assert int(zero_nonfinite_grads_([a, b], torch.device("cpu"))) == 0
    assert torch.equal(b.grad, torch.full((4,), 1e30))
