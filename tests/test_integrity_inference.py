"""Fault injection for issue #26 on the commands that read a job folder (docs/reliability.md):
a config.yaml that names code to run, exports over existing files and a job's own files, NaN
guidance, output paths that cannot be written. On the tiny random Predict2 job of
tests/test_inference_fixtures.py; nothing here generates more than one 1-step video."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from framework import export
from framework.inference import best_of_n as bon
from framework.inference import video2world as v2w
from tests.test_inference import png
from tests.test_inference_fixtures import tiny_config, write_job


@pytest.fixture(scope="module")
def data(synthetic_data):
    return synthetic_data


@pytest.fixture
def job(data, tmp_path):
    """A fresh job per test (some tests edit its config.yaml)."""
    cfg = tiny_config(data, tmp_path / "runs")
    return write_job(cfg)


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def gen_args(ckpt: Path, tmp_path: Path, out: Path, *extra: str) -> list[str]:
    args = ["--checkpoint", str(ckpt), "--input_path", str(png(tmp_path / "in.png"))]
    return [*args, "--prompt", "p", "--num_steps", "1", "--save_path", str(out), *extra]


# ---- item 6: a job's config.yaml runs no code outside the allowlist ------------------------------


def poison(ckpt: Path, target: str, key: str = "model.tokenizer") -> Path:
    from omegaconf import OmegaConf

    config = ckpt.parents[2] / "config.yaml"
    cfg = OmegaConf.load(config)
    node = OmegaConf.select(cfg, key)
    node._target_ = target
    config.write_text(OmegaConf.to_yaml(cfg))
    return config


@pytest.mark.parametrize(
    "command", ["video2world", "export", "eval"], ids=["video2world", "export", "eval"]
)
def test_a_config_naming_os_system_is_refused_by_every_command(job, tmp_path, capsys, command):
    from framework import eval as eval_mod

    pwned = tmp_path / "pwned"
    config = poison(job, "os.system")
    # os.system(**kwargs) would fail on the tokenizer's keywords; give it a command instead.
    text = config.read_text().replace("spatial: 4", f"command: touch {pwned}")
    config.write_text(text)
    out = tmp_path / "o.mp4"
    rc = {
        "video2world": lambda: v2w.main(gen_args(job, tmp_path, out)),
        "export": lambda: export.main([str(job), "--to", "pt", str(tmp_path / "x.pt")]),
        "eval": lambda: eval_mod.main(["--checkpoint", str(job), "--num_steps", "1"]),
    }[command]()
    assert rc == 2
    err = one_line_error(capsys)
    assert "model.tokenizer names 'os.system'" in err and "--trust_config" in err
    assert str(config) in err
    assert not pwned.exists() and not out.exists()


def test_a_stored_callable_and_code_loading_keys_are_refused_too(tmp_path):
    from framework.config import ConfigError
    from framework.config.trust import check_targets

    cfg = {"data": {"collate": {"_target_": "framework.config.lazy.locate", "path": "os.system"}}}
    with pytest.raises(ConfigError, match="data.collate names 'os.system'"):
        check_targets(cfg, "job/config.yaml")
    hub = {"model": {"_target_": "torch.hub.load", "repo_or_dir": "/tmp/x", "source": "local"}}
    with pytest.raises(ConfigError, match="names 'torch.hub.load'"):
        check_targets(hub, "job/config.yaml")
    remote = {"m": {"_target_": "transformers.AutoModel.from_pretrained", "trust_remote_code": 1}}
    with pytest.raises(ConfigError, match="sets trust_remote_code=1"):
        check_targets(remote, "job/config.yaml")
    # the user's own packages: named with --module
    mine = {"model": {"_target_": "mylab.nets.Net"}}
    with pytest.raises(ConfigError, match="names 'mylab.nets.Net'"):
        check_targets(mine, "job/config.yaml")
    check_targets(mine, "job/config.yaml", modules=["mylab.experiments"])


def test_trust_config_lets_the_user_vouch_for_a_folder(job, tmp_path, capsys):
    # A target outside the allowlist that builds the same tokenizer: refused, then accepted.
    poison(job, "tests.test_integrity_inference.pixel_tokenizer")
    out = tmp_path / "o.pt"
    assert export.main([str(job), "--to", "pt", str(out)]) == 2
    assert "names 'tests.test_integrity_inference.pixel_tokenizer'" in one_line_error(capsys)
    assert export.main([str(job), "--to", "pt", str(out), "--trust_config"]) == 0
    assert out.is_file()


def pixel_tokenizer(**kwargs):
    from framework.models.tokenizers import PixelTokenizer

    return PixelTokenizer(**kwargs)


# ---- item 7: export never destroys an existing target or a job's own files -----------------------


def test_export_refuses_an_existing_target_without_overwrite(job, tmp_path, capsys):
    folder = tmp_path / "diffusers_out"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    assert export.main([str(job), "--to", "diffusers", str(folder)]) == 2
    assert "is not empty; pass --overwrite" in one_line_error(capsys)
    assert (folder / "notes.txt").read_text() == "mine"
    target = tmp_path / "model.pt"
    target.write_bytes(b"an older export")
    assert export.main([str(job), "--to", "pt", str(target)]) == 2
    assert "exists; pass --overwrite" in one_line_error(capsys)
    assert target.read_bytes() == b"an older export"
    assert export.main([str(job), "--to", "pt", str(target), "--overwrite"]) == 0
    assert target.read_bytes() != b"an older export"


def test_export_never_writes_over_a_jobs_own_files(job, tmp_path, capsys):
    job_dir = job.parents[2]
    config = job_dir / "config.yaml"
    before = config.read_bytes()
    for out, fmt in [
        (config, "pt"),
        (job, "pt"),
        (job_dir / "checkpoints" / "merged.safetensors", "safetensors"),
        (job_dir, "diffusers"),
        (job_dir.parent, "diffusers"),  # a folder holding a job
    ]:
        assert export.main([str(job), "--to", fmt, str(out), "--overwrite"]) == 2, out
        assert "a training job's own files" in one_line_error(capsys)
    assert config.read_bytes() == before and job.is_file()
    assert (job_dir / "checkpoints" / "latest_checkpoint.txt").is_file()
    # a new folder of the job's own, outside its record and checkpoints, is fine
    assert export.main([str(job), "--to", "pt", str(job_dir / "export" / "m.pt")]) == 0


# ---- item 4: NaN guidance is refused -------------------------------------------------------------


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_nonfinite_guidance_is_refused_before_any_work(job, tmp_path, capsys, value):
    out = tmp_path / "v.mp4"
    assert v2w.main(gen_args(job, tmp_path, out, f"--guidance={value}")) == 2
    assert f"--guidance {float(value)} is not a finite number" in one_line_error(capsys)
    assert not out.exists()


# ---- item 12: output paths are checked before work -----------------------------------------------


def test_batch_outputs_with_a_bad_suffix_fail_up_front(job, tmp_path, capsys):
    good = png(tmp_path / "a.png")
    entries = [
        {"input_video": str(good), "prompt": "x", "output_video": str(tmp_path / "o" / "v.avi")},
        {"input_video": str(good), "prompt": "x", "output_video": str(tmp_path / "o" / "v")},
        {"input_video": str(good), "prompt": "x", "output_video": str(good) + "/under/file.mp4"},
    ]
    batch = tmp_path / "batch.json"
    batch.write_text(json.dumps(entries))
    items, rejected = v2w.read_batch(batch, tmp_path / "o")
    assert items == []
    reasons = dict(rejected)
    assert "must end in .mp4" in reasons["item 0"] and "must end in .mp4" in reasons["item 1"]
    assert "is a file, so the folder" in reasons["item 2"]


def test_a_single_output_that_cannot_be_written_fails_before_generation(
    job, tmp_path, capsys, monkeypatch
):
    calls = []
    monkeypatch.setattr(v2w.loading, "build_model", lambda *a, **k: calls.append(a))
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a folder should be")
    assert v2w.main(gen_args(job, tmp_path, blocker / "v.mp4")) == 2
    assert "is a file, so the folder" in one_line_error(capsys)
    assert v2w.main(gen_args(job, tmp_path, tmp_path / "v.webm")) == 2
    assert "must end in .mp4" in one_line_error(capsys)
    assert calls == []  # the model was never built


def test_best_of_n_refuses_an_unwritable_folder_before_loading_anything(job, tmp_path, capsys):
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    argv = ["--checkpoint", str(job), "--num_steps", "1", "--save_path", str(blocker / "runs")]
    argv += ["--input_path", str(png(tmp_path / "in.png")), "--prompt", "p"]
    argv += ["--critic", "tests.test_best_of_n:SeedCritic"]
    assert bon.main(argv) == 2
    assert "is a file, so the folder" in one_line_error(capsys)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_best_of_n_refuses_a_read_only_folder(job, tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    argv = ["--checkpoint", str(job), "--num_steps", "1", "--save_path", str(ro / "runs")]
    argv += ["--input_path", str(png(tmp_path / "in.png")), "--prompt", "p"]
    argv += ["--critic", "tests.test_best_of_n:SeedCritic"]
    try:
        assert bon.main(argv) == 2
        assert "is not writable" in one_line_error(capsys)
    finally:
        ro.chmod(0o755)
