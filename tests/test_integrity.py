"""Fault injection for issue #26 (docs/reliability.md): damaged bytes of the same size, a corrupt
manifest, a real full disk (RLIMIT_FSIZE, so the failure comes from the kernel through torch's
writer). In-process on the toy model: seconds."""

from __future__ import annotations

import json
import logging
import resource
import signal
from pathlib import Path

import pytest
import torch

import tests.toy_experiments  # noqa: F401  (registers toy_regression)
from framework import manifest
from framework.config import apply_overrides, get
from framework.trainer import EXIT_OK, Trainer, run
from framework.trainer.checkpoint import Checkpointer
from framework.trainer.entry import EXIT_WRITE
from launch import train as launch_train

STEPS = ["train.max_steps=6", "checkpoint.save_iter=2", "model.input_noise=0.1"]


def cfg(tmp_path: Path, *overrides: str):
    return apply_overrides(
        get("toy_regression"), [f"job.output_root={tmp_path}", *STEPS, *overrides]
    )


def ckpt_root(tmp_path: Path) -> Path:
    return tmp_path / "worldtune_tests" / "toy" / "toy_regression" / "checkpoints"


def flip_middle(path: Path) -> None:
    """Invert 16 bytes in the middle of the file: same size, other content."""
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 16] = bytes(b ^ 0xFF for b in data[mid : mid + 16])
    path.write_bytes(bytes(data))


# ---- item 2: damaged bytes of the same size are found, the run falls back ----------------------


def _dcp_shard(root: Path) -> Path:
    folder = root / "optim" / "iter_000000006"
    return max(
        (p for p in folder.iterdir() if p.suffix == ".distcp"), key=lambda p: p.stat().st_size
    )


DAMAGE = {
    "model": ([], lambda r: r / "model" / "iter_000000006.pt"),
    "optim": ([], lambda r: r / "optim" / "iter_000000006.pt"),
    "trainer": ([], lambda r: r / "trainer" / "iter_000000006.pt"),
    "dcp_shard": (["+checkpoint.format=dcp"], _dcp_shard),
}


@pytest.mark.parametrize("part", DAMAGE)
def test_flipped_bytes_fall_back_to_the_newest_intact_step(tmp_path, caplog, part):
    extra, victim = DAMAGE[part]
    Trainer(cfg(tmp_path, *extra)).fit()
    path = victim(ckpt_root(tmp_path))
    size = path.stat().st_size
    flip_middle(path)
    assert path.stat().st_size == size
    caplog.clear()  # the first run's lines (a slow save may say it waited) are not the resume's
    with caplog.at_level(logging.WARNING):
        resumed = Trainer(cfg(tmp_path, *extra))
    assert resumed.step == 4
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and str(path) in warnings[0], warnings
    assert "has other bytes than were written" in warnings[0]
    assert "resuming from iter_000000004.pt" in warnings[0]


def test_a_corrupt_manifest_falls_back_too(tmp_path, caplog):
    Trainer(cfg(tmp_path)).fit()
    man = ckpt_root(tmp_path) / "manifest" / "iter_000000006.json"
    man.write_text(man.read_text()[:20])  # cut mid-way
    with caplog.at_level(logging.WARNING):
        resumed = Trainer(cfg(tmp_path))
    assert resumed.step == 4
    assert f"{man} is not valid JSON" in caplog.text


def test_the_manifest_records_what_was_written(tmp_path):
    Trainer(cfg(tmp_path, "train.max_steps=2")).fit()
    root = ckpt_root(tmp_path)
    parts = manifest.read(root / "manifest" / "iter_000000002.json")
    assert set(parts) == {"model", "optim", "scheduler", "trainer"}
    for part, rec in parts.items():
        # the hash taken while writing equals a fresh read of the file
        assert rec == manifest.record_file(root / part / "iter_000000002.pt")


def test_version_1_manifests_still_check_sizes(tmp_path):
    import json

    Trainer(cfg(tmp_path, "train.max_steps=2")).fit()
    root = ckpt_root(tmp_path)
    sizes = {p: (root / p / "iter_000000002.pt").stat().st_size for p in ("model", "optim")}
    sizes |= {p: (root / p / "iter_000000002.pt").stat().st_size for p in ("scheduler", "trainer")}
    (root / "manifest" / "iter_000000002.json").write_text(json.dumps(sizes))
    ck = Checkpointer(root, Trainer(cfg(tmp_path, "train.max_steps=2")).env)
    assert ck.problem("iter_000000002.pt") == ""
    sizes["model"] += 1
    (root / "manifest" / "iter_000000002.json").write_text(json.dumps(sizes))
    assert "bytes," in ck.problem("iter_000000002.pt")


# ---- item 8: a real full disk on the pt path ----------------------------------------------------


def test_a_file_size_limit_while_saving_is_exit_5_with_no_orphan_part(
    tmp_path, monkeypatch, caplog
):
    """The kernel refuses the write (EFBIG under RLIMIT_FSIZE, as ENOSPC on a full disk); torch's
    zip writer turns that into a RuntimeError without the errno. The run must still say exit 5,
    leave no part of the failed step, and resume."""
    real = Checkpointer._write
    limits = resource.getrlimit(resource.RLIMIT_FSIZE)

    def small_disk(self, step, parts):
        if step != 6:
            return real(self, step, parts)
        old = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        size = (self.root / "model" / "iter_000000004.pt").stat().st_size
        # room for the model file, not for the optimizer's (twice as large: two moments)
        resource.setrlimit(resource.RLIMIT_FSIZE, (size + 64, limits[1]))
        try:
            return real(self, step, parts)
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, limits)
            signal.signal(signal.SIGXFSZ, old)

    monkeypatch.setattr(Checkpointer, "_write", small_disk)
    big = "model.hidden=1024"  # tensors over the file buffer: torch's writer meets the error
    with caplog.at_level(logging.ERROR):
        assert run(cfg(tmp_path, big), []) == EXIT_WRITE
    monkeypatch.undo()
    assert "saving checkpoint iter_000000006.pt failed at" in caplog.text
    assert "File too large" in caplog.text and "optim" in caplog.text
    root = ckpt_root(tmp_path)
    assert not list(root.rglob("*iter_000000006*")), list(root.rglob("*iter_000000006*"))
    assert not list(root.rglob("*.tmp"))
    assert (root / "latest_checkpoint.txt").read_text().strip() == "iter_000000004.pt"
    assert run(cfg(tmp_path, big), []) == EXIT_OK
    assert torch.load(root / "trainer" / "iter_000000006.pt", weights_only=True)["step"] == 6


# ---- item 3: the EMA's rate is checked from its own formula; NaN EMA weights are never saved --


@pytest.mark.parametrize("rate", ["0.5", "5", "0.999", "0.29", "0", "-0.1"])
def test_an_ema_rate_outside_the_power_emas_domain_is_refused(tmp_path, capsys, rate):
    argv = ["toy_regression", "--module", "tests.toy_experiments", f"job.output_root={tmp_path}"]
    assert launch_train.main([*argv, "train.ema.enabled=true", f"train.ema.rate={rate}"]) == 2
    err = capsys.readouterr().err.strip()
    assert f"train.ema.rate={rate}" in err and "(0, 0.2887]" in err
    assert len(err.splitlines()) == 1 and not list(tmp_path.iterdir())


def test_the_domain_is_the_formulas():
    from framework.trainer.ema import MAX_RATE, power_ema_gamma, relative_std

    assert MAX_RATE == pytest.approx(12**-0.5)
    for rate in (0.05, 0.1, 0.2, MAX_RATE):  # the exponent found gives back the rate asked
        gamma = power_ema_gamma(rate)
        assert gamma >= -1e-9 and relative_std(gamma) == pytest.approx(rate)
    assert power_ema_gamma(0.1) == pytest.approx(6.9372, abs=1e-4)  # upstream's value


def test_nonfinite_ema_weights_stop_the_run_before_they_are_saved(tmp_path, monkeypatch):
    from framework.trainer.ema import PowerEMA
    from framework.trainer.entry import EXIT_NONFINITE

    real = PowerEMA.update

    def poisoned(self, step):
        real(self, step)
        if step >= 4:  # after the save of step 4
            self.shadow[0].fill_(float("nan"))

    monkeypatch.setattr(PowerEMA, "update", poisoned)
    assert run(cfg(tmp_path, "train.ema.enabled=true"), []) == EXIT_NONFINITE
    root = ckpt_root(tmp_path)
    assert (root / "latest_checkpoint.txt").read_text().strip() == "iter_000000004.pt"
    assert not (root / "model" / "iter_000000006.pt").exists()
    saved = torch.load(root / "model" / "iter_000000004.pt", weights_only=True)
    assert all(v.isfinite().all() for v in saved.values())


# ---- item 4: an empty experiment name is refused -----------------------------------------------


@pytest.mark.parametrize("argv", [[""], ["experiment="], ["--", "experiment= "]])
def test_an_empty_experiment_name_is_refused(tmp_path, capsys, argv):
    assert launch_train.main([*argv, f"job.output_root={tmp_path}", "train.max_steps=1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "the experiment name is empty" in err and len(err.splitlines()) == 1
    assert not list(tmp_path.iterdir())


# ---- item 1: a resume applies what it records, or refuses before writing anything --------------


def job_files(tmp_path: Path) -> dict[str, str]:
    job = ckpt_root(tmp_path).parent
    return {n: (job / n).read_text() for n in ("config.yaml", "overrides.txt")}


def test_a_changed_lr_on_resume_is_the_lr_trained_with(tmp_path):
    Trainer(cfg(tmp_path, "train.max_steps=4")).fit()
    resumed = Trainer(cfg(tmp_path, "train.max_steps=6", "optim.lr=0.5"))
    assert resumed.step == 4
    fn = resumed.scheduler.lr_lambdas[0]
    assert resumed.optimizer.param_groups[0]["lr"] == pytest.approx(0.5 * fn(4))
    assert resumed.scheduler.base_lrs == [0.5, 0.5]  # decay and no-decay groups
    resumed.fit()
    job = ckpt_root(tmp_path).parent
    rows = [json.loads(line) for line in (job / "metrics.jsonl").read_text().splitlines()]
    assert rows[4]["step"] == 5 and rows[4]["lr"] == pytest.approx(0.5 * fn(4))
    assert "lr: 0.5" in (job / "config.yaml").read_text()  # says what ran


def test_a_model_change_on_resume_is_refused_before_anything_is_written(tmp_path, caplog):
    Trainer(cfg(tmp_path, "train.max_steps=2")).fit()
    before = job_files(tmp_path)
    with caplog.at_level(logging.ERROR):
        assert run(cfg(tmp_path, "train.max_steps=4", "model.hidden=32"), []) == 2
    (err,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert "with model.hidden=32: its checkpoints were trained with model.hidden=16" in err
    assert "model.* cannot change on resume" in err and len(err.splitlines()) == 1
    assert job_files(tmp_path) == before


def test_a_run_failing_before_its_first_step_leaves_the_record_as_it_was(tmp_path, monkeypatch):
    Trainer(cfg(tmp_path, "train.max_steps=2")).fit()
    before = job_files(tmp_path)

    def broken(self):
        raise RuntimeError("the first step fails")

    monkeypatch.setattr(Trainer, "train_step", broken)
    with pytest.raises(RuntimeError, match="first step fails"):
        Trainer(cfg(tmp_path, "train.max_steps=4", "optim.lr=0.5")).fit()
    assert job_files(tmp_path) == before
    monkeypatch.undo()
    assert run(cfg(tmp_path, "train.max_steps=4", "optim.lr=0.5"), ["optim.lr=0.5"]) == 0
    after = job_files(tmp_path)
    assert "lr: 0.5" in after["config.yaml"]
    assert after["overrides.txt"].startswith(before["overrides.txt"])
    assert after["overrides.txt"].endswith("optim.lr=0.5\n")


def test_turning_master_weights_off_on_resume_is_refused(tmp_path):
    from framework.config import ConfigError

    on = ["+optim.master_weights=true", "train.precision=bf16", "train.max_steps=2"]
    Trainer(cfg(tmp_path, *on)).fit()
    with pytest.raises(ConfigError, match="optim.master_weights=False: .* cannot change"):
        Trainer(cfg(tmp_path, "+optim.master_weights=false", "train.precision=bf16"))


# ---- item 5: Predict1's condition augmentation noise follows the generation seed ----------------


def test_predict1_augmentation_noise_comes_from_the_generation_seed_over_the_batch():
    """Upstream: `_augment_noise_with_latent(..., seed=seed)` draws arch_invariant_rand over
    the whole latent [B,C,T,H,W] with the generation seed; both guidance halves see it."""
    import math

    import numpy as np

    from framework.diffusion.conditioning import Condition
    from framework.diffusion.edm import EDMObjective
    from tests.test_edm import RecordingNet

    gt = torch.randn(2, 3, 4, 2, 2)
    text = torch.ones(2, 5, 8)
    cond = Condition(gt, torch.tensor([1, 1]), text, None, torch.tensor([4.0, 4.0]))
    sigma = torch.full((2, 1), 3.0)
    c_in_aug = 1 / math.sqrt(0.001**2 + 0.25)

    def given_input(seed: int) -> torch.Tensor:
        net, obj = RecordingNet(k=0.5), EDMObjective()
        obj.seed_generation(seed, 2)
        obj.x0(net, torch.randn_like(gt), sigma, cond)
        return net.calls[-1]["x"][:, :, :1]

    n = torch.from_numpy(np.random.RandomState(5).standard_normal(gt.shape)).float()
    torch.testing.assert_close(given_input(5), c_in_aug * (gt[:, :, :1] + 0.001 * n[:, :, :1]))
    assert not torch.allclose(given_input(5), given_input(6))  # another seed, other noise
    # A guided batch (both halves) uses the same noise for the two halves.
    net, obj = RecordingNet(k=0.5), EDMObjective()
    obj.seed_generation(5, 2)
    doubled = Condition(torch.cat([gt, gt]), torch.tensor([1] * 4), torch.cat([text, text]))
    doubled.padding_mask, doubled.fps = None, torch.full((4,), 4.0)
    obj.x0(net, torch.randn(4, *gt.shape[1:]), torch.full((4, 1), 3.0), doubled)
    x = net.calls[-1]["x"][:, :, :1]
    torch.testing.assert_close(x[:2], x[2:])
    torch.testing.assert_close(x[:2], c_in_aug * (gt[:, :, :1] + 0.001 * n[:, :, :1]))


def test_world_model_generate_seeds_the_objective():
    """The seed of `generate` and the batch size reach the objective before sampling."""
    from framework.diffusion.rectified_flow import RectifiedFlowObjective
    from framework.diffusion.samplers import MultistepSampler
    from framework.models.tokenizers import PixelTokenizer
    from framework.models.world_model import WorldModel
    from tests.test_world_model import TEXT_LEN, make_batch, tiny_dit

    class Spy(RectifiedFlowObjective):
        def seed_generation(self, seed: int, batch: int) -> None:
            self.seen = (seed, batch)

    tok = PixelTokenizer(spatial=2)
    objective = Spy()
    model = WorldModel(
        tiny_dit(tok.latent_channels),
        tok,
        objective,
        MultistepSampler(),
        3,
        family="cosmos2",
        max_text_tokens=TEXT_LEN,
    )
    batch = make_batch(b=2)
    model.generate(batch["video"][:, :, :1], batch["t5_text_embeddings"], num_steps=1, seed=9)
    assert objective.seen == (9, 2)
