"""bridge_57frames (Predict1 7B on Bridge), its LoRA variant and tiny_bridge: recipe values of
docs/upstream/cosmos_predict1.md §1.4, the 7B count of §4.5 in --dryrun, the latent scale,
official-layout checkpoints (net.* + logvar.*), and tiny_bridge end to end through the stock
command lines (train, checkpoint, resume, generate from an image, a clip and a batch JSON)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from framework.config import get, instantiate, load_all
from framework.inference import video2world as v2w
from framework.trainer.validate import validate

ROOT = Path(__file__).resolve().parents[1]
load_all()


def test_bridge_recipe_values():
    cfg = get("bridge_57frames")
    assert cfg == get("video2world_instruction_bridge_57frames")
    assert (cfg.job.project, cfg.job.group, cfg.job.name) == (
        "posttraining",
        "diffusion_video2world_instruction",
        "video2world_instruction_bridge_57frames",
    )
    assert cfg.optim._target_ == "experiments.bridge.adamw_every_param"
    assert cfg.optim.lr == pytest.approx(2**-14.3) and cfg.optim.weight_decay == 0.1
    assert list(cfg.optim.betas) == [0.9, 0.99] and cfg.optim.eps == 1e-10
    assert list(cfg.sched.warm_up_steps) == [2500] and list(cfg.sched.f_start) == [1e-6]
    assert list(cfg.sched.f_max) == [1.0] and list(cfg.sched.f_min) == [1.0]
    assert cfg.train.max_steps == 2000 and cfg.train.grad_clip == 1.0
    assert cfg.train.ema.enabled and cfg.train.ema.rate == 0.1 and cfg.train.precision == "bf16"
    assert cfg.checkpoint.save_iter == 500
    assert cfg.checkpoint.load_path.endswith("nvidia/Cosmos-Predict1-7B-Video2World/model.pt")
    assert cfg.parallel.strategy == "fsdp" and cfg.parallel.shard_size == 32
    assert cfg.data.batch_size == 1 and cfg.data.dataset.num_frames == 57
    assert list(cfg.data.dataset.video_size) == [256, 320]
    assert cfg.model.state_t == 8 and cfg.model.max_text_tokens == 512 and cfg.model.fps == 4.0
    assert cfg.model.tokenizer.path.endswith("nvidia/Cosmos-Tokenize1-CV8x8x8-720p")
    assert cfg.model.tokenizer.scale == 0.5  # sigma_data (§3.2)
    assert cfg.model.objective._target_ == "framework.diffusion.edm.EDMObjective"
    assert cfg.model.objective.augment_multiplier == 4.0 and cfg.model.objective.text_dropout == 0.2
    assert cfg.model.sampler._target_ == "framework.diffusion.samplers.EulerEDMSampler"
    assert cfg.model.sampler.sigma_min == 0.0002 and cfg.model.sampler.num_steps == 35
    lora = get("bridge_57frames_lora")
    assert lora.model.lora.rank == 16 and lora.job.name.endswith("_lora")
    assert cfg.optim.master_weights is False  # FSDP keeps its own fp32 shards
    one = get("bridge_57frames_1gpu")
    assert one.parallel.strategy == "none" and one.optim.master_weights is True
    assert not one.train.ema.enabled and one.optim.lr == cfg.optim.lr
    validate(one)  # master weights with strategy none and bf16 pass the cross-key checks


def test_dryrun_prints_the_7b_count(capsys):
    from launch.train import main

    assert main(["bridge_57frames", "--dryrun"]) == 0
    out = capsys.readouterr().out
    # §4.5: 7,236,208,768 with the learnable extra position embedding, logvar's 128 included.
    rows = dict(line.split()[:2] for line in out.splitlines()[-4:])
    assert rows == {
        "net": "7,236,208,640",
        "logvar": "128",
        "total": "7,236,208,768",
        "trainable": "7,236,208,768",
    }


def test_adamw_every_param_decays_norm_gains_too():
    from experiments.bridge import adamw_every_param

    params = [torch.nn.Parameter(torch.ones(3, 3)), torch.nn.Parameter(torch.ones(3))]
    opt = adamw_every_param(params, lr=1.0, weight_decay=0.1, eps=1e-10)
    assert all(g["weight_decay"] == 0.1 for g in opt.param_groups)
    assert {id(p) for g in opt.param_groups for p in g["params"]} == {id(p) for p in params}


def test_scaled_tokenizer_multiplies_by_sigma_data():
    from framework.models.cosmos1.latent_scale import ScaledTokenizer
    from framework.models.tokenizers import PixelTokenizer

    inner = PixelTokenizer(spatial=2)
    tok = ScaledTokenizer(inner, 0.5)
    video = torch.randint(0, 256, (1, 3, 2, 4, 6), dtype=torch.uint8)
    torch.testing.assert_close(tok.encode(video), 0.5 * inner.encode(video))
    torch.testing.assert_close(tok.decode(tok.encode(video)), inner.decode(inner.encode(video)))
    assert tok.identity != inner.identity and tok.latent_channels == 12
    # Per-channel normalisation (tiny_bridge's pixels): (z - shift) * scale, inverted exactly.
    scale, shift = torch.linspace(1, 4, 12), torch.linspace(-0.5, 0.5, 12)
    norm = ScaledTokenizer(inner, scale.tolist(), shift.tolist())
    want = (inner.encode(video) - shift.view(1, -1, 1, 1, 1)) * scale.view(1, -1, 1, 1, 1)
    torch.testing.assert_close(norm.encode(video), want)
    torch.testing.assert_close(norm.decode(want), inner.decode(inner.encode(video)))
    with pytest.raises(ValueError, match="positive"):
        ScaledTokenizer(inner, 0.0)
    with pytest.raises(ValueError, match="one per latent channel"):
        ScaledTokenizer(inner, [1.0, 2.0])


def tiny_model():
    cfg = get("tiny_bridge")
    cfg.model.text_encoder = None
    return instantiate(cfg.model)


def test_official_layout_checkpoint_loads_strictly():
    """A file as upstream writes it (net.* and logvar.0.freqs/phases, logvar.1.weight) loads
    into the Predict1 world model; a foreign key fails naming it."""
    torch.manual_seed(0)
    src = tiny_model()
    sd = src.state_dict()
    assert {"logvar.0.freqs", "logvar.0.phases", "logvar.1.weight"} <= set(sd)
    assert {k.partition(".")[0] for k in sd} == {"net", "logvar"}
    torch.manual_seed(1)
    dst = tiny_model()
    dst.load_weights(sd)
    for key, value in dst.state_dict().items():
        torch.testing.assert_close(value, sd[key])
    with pytest.raises(ValueError, match="belong to no part"):
        dst.load_weights({**sd, "conditioner.foo": torch.zeros(1)})


def run_train(env: dict, *overrides: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "launch.train", "tiny_bridge", *overrides]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def losses(job: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (job / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


def h264_frames(path: Path) -> int:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        return sum(1 for _ in container.decode(stream))


@pytest.mark.slow
def test_tiny_bridge_trains_resumes_and_generates(tmp_path, monkeypatch):
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "DATASETS": str(tmp_path / "datasets"),
        "OUTPUT_ROOT": str(tmp_path / "runs"),
        "OMP_NUM_THREADS": "1",
    }
    small = [
        "data.dataset.num_videos=4",
        "data.dataset.source_frames=9",
        "data.dataset.num_val=1",
        "data.dataset.size=[32,40]",
        "data.dataset.frame_stride=2",
        "data.dataset.video_size=[16,20]",
        "data.batch_size=2",
        "train.max_steps=4",
        "checkpoint.save_iter=2",
        "train.ema.enabled=true",
        "logging.every=1",
        "~hooks.progress",
        "~hooks.loss_curve",
    ]
    quiet = ["~hooks.eval", "~hooks.sample"]
    hooks = ["hooks.eval.num_items=1", "hooks.eval.num_steps=2", "hooks.sample.every=4"]
    hooks += ["hooks.sample.num_items=1", "hooks.sample.num_steps=2"]
    full = run_train(env, *small, *hooks, "job.name=full")
    job = tmp_path / "runs" / "worldtune" / "tiny" / "full"
    assert "generate     python -m framework.inference.video2world" in full.stdout
    assert (job / "eval_after.json").is_file()
    assert len(list((job / "samples" / "iter_000000004").glob("*.mp4"))) == 1
    ckpt = job / "checkpoints" / "model" / "iter_000000004.pt"
    sd = torch.load(ckpt, weights_only=True)
    assert {k.partition(".")[0] for k in sd} == {"net", "logvar", "net_ema", "logvar_ema"}
    assert {"logvar.0.freqs", "logvar.0.phases", "logvar.1.weight"} <= set(sd)

    # Stopped at step 2 and resumed to 4: the same losses as the run never stopped.
    run_train(env, *small, *quiet, "job.name=resumed", "train.max_steps=2")
    run_train(env, *small, *quiet, "job.name=resumed")
    assert losses(tmp_path / "runs" / "worldtune" / "tiny" / "resumed") == losses(job)

    # The stock CLI from the job folder: an image, a clip and a batch JSON, H.264 out.
    monkeypatch.setenv("DATASETS", env["DATASETS"])  # the config's small T5 is under DATASETS
    frame = tmp_path / "frame.png"
    Image.fromarray(np.full((40, 32, 3), 90, dtype=np.uint8)).save(frame)
    clip = next((tmp_path / "datasets" / "synthetic_bridge" / "videos" / "val").glob("*/rgb.mp4"))
    common = ["--checkpoint", str(ckpt), "--guidance", "0", "--num_steps", "2"]
    outputs = []
    for i, source in enumerate((frame, clip)):
        out = tmp_path / f"gen_{i}.mp4"
        args = [*common, "--input_path", str(source), "--prompt", "move the red block to the left"]
        assert v2w.main([*args, "--save_path", str(out)]) == 0
        outputs.append(out)
    batch = tmp_path / "batch.json"
    out = tmp_path / "batch" / "b.mp4"
    entry = {"input_video": str(clip), "prompt": "move the blue block", "output_video": str(out)}
    batch.write_text(json.dumps([entry]))
    assert v2w.main([*common, "--batch_input_json", str(batch), "--load_ema"]) == 0
    for path in (*outputs, out):
        assert h264_frames(path) == 5  # state_t 5 with the pixel tokenizer


def test_bridge_57frames_cli_with_an_official_layout_checkpoint(tmp_path):
    """`--experiment bridge_57frames --checkpoint model.pt` with the net, the CV8x8x8 tokenizer
    and the frame count made small by overrides: the Predict1 path of the generic CLI."""
    from framework.diffusion.edm import logvar_head
    from framework.models.cosmos1 import GeneralDIT, net_config

    torch.manual_seed(0)
    net = GeneralDIT(**{**net_config("7B"), "model_channels": 64, "num_blocks": 1, "num_heads": 1})
    sd = {f"net.{k}": v for k, v in net.state_dict().items()}
    sd.update({f"logvar.{k}": v for k, v in logvar_head().state_dict().items()})
    ckpt = tmp_path / "model.pt"
    torch.save(sd, ckpt)
    frame = tmp_path / "frame.png"
    Image.fromarray(np.full((64, 80, 3), 120, dtype=np.uint8)).save(frame)
    from data_prep.small_t5 import make_small_t5

    t5 = make_small_t5(["move the red block to the left"], tmp_path / "t5")  # width 1024
    out = tmp_path / "out.mp4"
    vae = "{encoder_block_out_channels:[8,16,16,16],decode_block_out_channels:[16,16,16,16]}"
    overrides = [
        "model.net.model_channels=64",
        "model.net.num_blocks=1",
        "model.net.num_heads=1",
        "model.tokenizer.path=null",
        f"+model.tokenizer.config={vae}",
        "model.state_t=2",
        "data.dataset.video_size=[32,48]",
        f"model.text_encoder={t5}",
    ]
    args = ["--experiment", "bridge_57frames", "--checkpoint", str(ckpt), "--num_steps", "2"]
    args += ["--input_path", str(frame), "--save_path", str(out)]
    assert v2w.main([*args, "--prompt", "move the red block to the left", "--", *overrides]) == 0
    assert h264_frames(out) == 9  # 2 latent frames of the 8x temporal tokenizer
