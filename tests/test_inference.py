"""`python -m framework.inference.video2world` end to end with a tiny random Predict2 net and a
pixel tokenizer on CPU: playable mp4 + sidecar, batch JSON with a bad item, rank splitting,
conditioning inputs, negative prompt, checkpoint kinds (job, EMA, LoRA, official) and errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from framework.inference import loading, media, prompts
from framework.inference import video2world as v2w
from tests.test_dist import free_port
from tests.test_inference_fixtures import (
    SIZE,
    STATE_T,
    decode,
)


@pytest.fixture(scope="module")
def data(synthetic_data):
    return synthetic_data


@pytest.fixture(scope="module")
def job(tiny_job):
    return tiny_job.cfg, tiny_job.path


def png(path, h=40, w=64):
    img = np.zeros((h, w, 3), np.uint8)
    img[:, : w // 2] = (200, 30, 30)  # red left half, blue right half
    img[:, w // 2 :] = (30, 30, 200)
    Image.fromarray(img).save(path)
    return path


def val_video(data):
    return sorted((data / "val" / "videos").glob("*.mp4"))[0]


def test_single_image_writes_playable_mp4_and_sidecar(job, tmp_path, capsys):
    cfg, ckpt = job
    out = tmp_path / "out" / "video.mp4"
    rc = v2w.main(
        [
            "--checkpoint",
            str(ckpt),
            "--input_path",
            str(png(tmp_path / "in.png")),
            "--prompt",
            "pick up the red cube",
            "--num_steps",
            "2",
            "--save_path",
            str(out),
        ]
    )
    assert rc == 0, capsys.readouterr().err
    assert decode(out) == (STATE_T, SIZE, SIZE, 8.0)  # experiment fps
    side = media.sidecar_path(out).read_text()
    assert side.startswith("[Prompt]\npick up the red cube\n")
    assert f"[Negative Prompt]\n{prompts.DEFAULT_NEGATIVE_PROMPT}" in side
    assert "1 written, 0 failed" in capsys.readouterr().out


def test_batch_json_reports_and_skips_bad_items(job, data, tmp_path, capsys):
    _, ckpt = job
    items = [
        {
            "input_video": str(png(tmp_path / "a.png")),
            "prompt": "a",
            "output_video": str(tmp_path / "a.mp4"),
        },
        {
            "input_video": str(tmp_path / "missing.png"),
            "prompt": "b",
            "output_video": str(tmp_path / "b.mp4"),
        },
        {
            "input_video": str(val_video(data)),
            "prompt": "c",
            "output_video": str(tmp_path / "c.mp4"),
        },
        {"prompt": "no input"},
    ]
    batch = tmp_path / "batch.json"
    batch.write_text(json.dumps(items))
    rc = v2w.main(
        [
            "--checkpoint",
            str(ckpt),
            "--batch_input_json",
            str(batch),
            "--num_steps",
            "1",
            "--negative_prompt",
            "",
        ]
    )
    out = capsys.readouterr().out
    assert rc == v2w.ITEM_FAILED
    assert (tmp_path / "a.mp4").is_file() and (tmp_path / "c.mp4").is_file()
    assert not (tmp_path / "b.mp4").exists()
    assert "summary: 2 written, 2 failed" in out
    assert "missing.png does not exist" in out and "item 3: needs input_video" in out


def test_guidance_on_a_model_trained_without_caption_dropout_warns(job, tmp_path, capsys):
    _, ckpt = job
    args = [
        "--checkpoint",
        str(ckpt),
        "--input_path",
        str(png(tmp_path / "in.png")),
        "--prompt",
        "p",
        "--num_steps",
        "1",
        "--save_path",
        str(tmp_path / "v.mp4"),
    ]
    assert v2w.main([*args, "--guidance", "7", "--", "model.objective.text_dropout=0.0"]) == 0
    assert "warning: --guidance 7 on a model trained with model.objective.text_dropout=0" in (
        capsys.readouterr().err
    )
    assert v2w.main([*args, "--guidance", "0", "--", "model.objective.text_dropout=0.0"]) == 0
    assert v2w.main([*args, "--guidance", "7"]) == 0  # trained with dropout: guidance is fine
    assert "warning" not in capsys.readouterr().err
    # No --guidance: the default fits the model (0 here, as `make generate` relies on).
    assert v2w.main([*args, "--", "model.objective.text_dropout=0.0"]) == 0
    assert "warning" not in capsys.readouterr().err


def test_ranks_split_a_batch(job, tmp_path, monkeypatch, capsys):
    _, ckpt = job
    image = str(png(tmp_path / "a.png"))
    items = [
        {"input_video": image, "prompt": str(i), "output_video": str(tmp_path / f"{i}.mp4")}
        for i in range(3)
    ]
    (tmp_path / "batch.json").write_text(json.dumps(items))
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    rc = v2w.main(
        [
            "--checkpoint",
            str(ckpt),
            "--batch_input_json",
            str(tmp_path / "batch.json"),
            "--num_steps",
            "1",
            "--guidance",
            "0",
        ]
    )
    assert rc == 0, capsys.readouterr().err
    assert [p.name for p in sorted(tmp_path.glob("*.mp4"))] == ["1.mp4"]


@pytest.mark.slow
def test_torchrun_ranks_split_a_batch_and_rank0_sums_up_every_rank(job, tmp_path):
    _, ckpt = job
    image = str(png(tmp_path / "a.png"))
    items = [
        {
            "input_video": image if i != 1 else str(tmp_path / "gone.png"),
            "prompt": str(i),
            "output_video": str(tmp_path / f"{i}.mp4"),
        }
        for i in range(4)
    ]
    (tmp_path / "batch.json").write_text(json.dumps(items))
    root = Path(__file__).resolve().parents[1]
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node=2",
            f"--master_port={free_port()}",
            "-m",
            "framework.inference.video2world",
            "--checkpoint",
            str(ckpt),
            "--batch_input_json",
            str(tmp_path / "batch.json"),
            "--num_steps",
            "1",
            "--guidance",
            "0",
        ],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    # Rank 1 had the missing input, so it exits 1 and torchrun reports the failure.
    assert run.returncode != 0
    assert [p.name for p in sorted(tmp_path.glob("*.mp4"))] == ["0.mp4", "2.mp4", "3.mp4"]
    assert "all 2 ranks: 3 written, 1 failed" in run.stdout, run.stdout + run.stderr[-3000:]
    assert "gone.png does not exist" in run.stdout.split("all 2 ranks")[1]


def test_image_and_video_conditioning_shapes(data, tmp_path):
    image = media.load_conditioning(png(tmp_path / "in.png", 40, 64), (SIZE, SIZE), 1)
    assert image.shape == (1, 3, 1, SIZE, SIZE) and image.dtype == torch.uint8
    # Cover + center crop of a half-red/half-blue image: both halves survive, centred.
    assert image[0, 0, 0, 16, 2] > 150 and image[0, 2, 0, 16, SIZE - 3] > 150
    with pytest.raises(media.InputError, match="exactly one frame"):
        media.load_conditioning(tmp_path / "in.png", (SIZE, SIZE), 5)
    clip = media.load_conditioning(val_video(data), (SIZE, SIZE), 5)
    assert clip.shape == (1, 3, 5, SIZE, SIZE)
    every = media.load_video_frames(val_video(data), (SIZE, SIZE), 9, last=False)
    assert torch.equal(clip[:, :, -5:], every[:, :, -5:])  # the LAST five frames
    with pytest.raises(media.InputError, match="unknown type"):
        (tmp_path / "x.gif").write_bytes(b"GIF")
        media.load_conditioning(tmp_path / "x.gif", (SIZE, SIZE), 1)

    from framework.diffusion.rectified_flow import RectifiedFlowObjective
    from framework.diffusion.samplers import MultistepSampler
    from framework.models.tokenizers import PixelTokenizer
    from framework.models.world_model import WorldModel

    model = WorldModel(
        torch.nn.Linear(1, 1),
        PixelTokenizer(spatial=4),
        RectifiedFlowObjective(),
        MultistepSampler(),
        state_t=9,
        family="cosmos2",
    )
    full = model.condition_video(image, 1)
    assert full.shape == (1, 3, 9, SIZE, SIZE) and bool((full[:, :, 1:] == -1).all())
    padded = model.condition_video(clip, 5)
    assert padded.shape == (1, 3, 9, SIZE, SIZE)
    assert torch.equal(padded[:, :, 5:], padded[:, :, 4:5].expand(-1, -1, 4, -1, -1))


class CountingEncoder:
    def __init__(self):
        self.seen: list[str] = []

    def encode(self, texts):
        self.seen += texts
        emb = torch.stack([torch.full((6, 4), float(len(t))) for t in texts])
        return emb, torch.full((len(texts),), 6)


def test_empty_negative_prompt_is_zeros_not_the_prompt():
    embed = prompts.PromptEmbedder(CountingEncoder())
    pos, neg = embed("pick up"), embed("")
    assert neg.shape == pos.shape and not neg.any() and pos.abs().sum() > 0
    embed.embed_many(["pick up", "other", ""])
    assert embed.encoder.seen.count("pick up") == 1 and "" not in embed.encoder.seen


def test_generate_item_passes_zero_negative_and_prefix(tmp_path):
    calls = {}

    class Spy:
        def generate(self, cond, emb, neg, **kw):
            calls.update(cond=cond, emb=emb, neg=neg, **kw)
            return torch.zeros(1, 3, STATE_T, SIZE, SIZE, dtype=torch.uint8)

    enc = CountingEncoder()
    s = v2w.Settings(
        size=(SIZE, SIZE),
        fps=8.0,
        negative_prompt="",
        prompt_prefix="pre: ",
        num_steps=3,
        guidance=2.0,
    )
    item = v2w.Item(str(png(tmp_path / "i.png")), "go", str(tmp_path / "o.mp4"))
    v2w.generate_item(Spy(), prompts.PromptEmbedder(enc), item, s)
    assert not calls["neg"].any() and enc.seen == ["pre: go", "-"]
    assert calls["cond"].shape == (1, 3, 1, SIZE, SIZE)
    assert (calls["num_steps"], calls["guidance"], calls["seed"]) == (3, 2.0, 0)
    assert "[Prompt]\ngo\n" in (tmp_path / "o.txt").read_text()  # sidecar without the prefix


def test_ema_lora_and_plain_checkpoints_load(job, tmp_path):
    cfg, ckpt = job
    raw = torch.load(ckpt)
    plain = loading.build_model(cfg, ckpt, device="cpu")
    ema = loading.build_model(cfg, ckpt, load_ema=True, device="cpu")
    name = next(k for k in plain.net.state_dict() if k.endswith("weight"))
    assert torch.equal(plain.net.state_dict()[name], raw[f"net.{name}"])
    assert torch.equal(ema.net.state_dict()[name], raw[f"net_ema.{name}"])

    # LoRA: the checkpoint of a LoRA-wrapped net loads merged and gives the same outputs.
    from omegaconf import OmegaConf

    from framework.config import instantiate

    lcfg = cfg.copy()
    OmegaConf.set_struct(lcfg, False)
    lcfg.model.lora = {"rank": 4, "alpha": 8, "targets": "q_proj,v_proj"}
    torch.manual_seed(0)
    with pytest.warns(UserWarning, match="alpha == rank"):  # alpha != rank tests the scale
        lora_model = instantiate(lcfg.model)
    with torch.no_grad():
        for n, p in lora_model.net.named_parameters():
            if "lora_B" in n:
                p.normal_()  # non-zero adapters, so the merge matters
    path = tmp_path / "lora.pt"
    torch.save({f"net.{k}": v for k, v in lora_model.net.state_dict().items()}, path)
    merged = loading.build_model(lcfg, path, device="cpu")
    x = torch.randn(1, 48, STATE_T, 8, 8)
    args = (
        torch.rand(1, STATE_T),
        torch.randn(1, 5, 1024),
        torch.zeros(1, 1, STATE_T, 8, 8),
        torch.zeros(1, 1, 32, 32),
    )
    with torch.no_grad():
        torch.testing.assert_close(
            merged.net(x, *args), lora_model.net(x, *args), rtol=1e-4, atol=1e-4
        )
    with pytest.raises(ValueError, match="LoRA weights but the config has no model.lora"):
        loading.build_model(cfg, path, device="cpu")
    with pytest.raises(ValueError, match="no net_ema.. keys; EMA was off"):
        loading.build_model(lcfg, path, load_ema=True, device="cpu")


def test_errors_name_the_file_and_the_fix(job, tmp_path, monkeypatch, capsys):
    cfg, ckpt = job
    monkeypatch.chdir(tmp_path)
    official = tmp_path / "official.pt"
    shutil.copy(ckpt, official)
    assert v2w.main(["--checkpoint", str(official)]) == v2w.USER_ERROR
    assert "pass --experiment NAME" in capsys.readouterr().err
    assert v2w.main(["--gr00t_variant", "gr1"]) == v2w.USER_ERROR
    err = capsys.readouterr().err
    assert (
        err.count("\n") == 1
        and "hf download nvidia/Cosmos-Predict2-14B-"
        "Sample-GR00T-Dreams-GR1 --local-dir checkpoints/nvidia/Cosmos-Predict2-14B-Sample-"
        "GR00T-Dreams-GR1`"
        in err
    )
    assert (
        v2w.main(
            [
                "--checkpoint",
                str(ckpt),
                "--input_path",
                "x.png",
                "--",
                f"model.text_encoder={tmp_path}/gone/text_encoder",
            ]
        )
        == v2w.USER_ERROR
    )
    assert f"python -m data_prep.synthetic {tmp_path}/gone" in capsys.readouterr().err
    assert (
        "hf download google-t5/t5-11b --local-dir checkpoints/google-t5/t5-11b"
        in loading.download_hint("google-t5/t5-11b")
    )


@pytest.mark.slow
def test_no_arguments_continue_a_heldout_clip_from_the_latest_checkpoint(
    data, tmp_path, monkeypatch, capsys
):
    # What `make generate` runs: the default experiment's job folder and data, found through
    # OUTPUT_ROOT and DATASETS; the tiny_gr1 experiment comes from experiments/tiny.py.
    from framework.config import get, load_all
    from tests.test_inference_fixtures import random_state

    (tmp_path / "datasets").mkdir()
    (tmp_path / "datasets" / "synthetic_gr1").symlink_to(data)
    monkeypatch.setenv("DATASETS", str(tmp_path / "datasets"))
    monkeypatch.setenv("OUTPUT_ROOT", str(tmp_path / "runs"))
    monkeypatch.chdir(tmp_path)
    load_all()
    cfg = get("tiny_gr1")
    model_dir = loading.job_dir(cfg) / "checkpoints" / "model"
    model_dir.mkdir(parents=True)
    torch.save(
        {f"net.{k}": v for k, v in random_state(cfg).items()}, model_dir / "iter_000000300.pt"
    )
    (model_dir.parent / "latest_checkpoint.txt").write_text("iter_000000300.pt\n")
    rc = v2w.main(["--num_steps", "1"])
    assert rc == 0, capsys.readouterr().err
    out = tmp_path / "output" / "generated_video.mp4"
    frames, h, w, fps = decode(out)
    size = tuple(cfg.data.dataset.video_size)
    assert (h, w, fps) == (*size, float(cfg.model.fps))
    assert frames == cfg.model.state_t  # the pixel tokenizer keeps every frame
    caption = (data / "val" / "metas" / f"{val_video(data).stem}.txt").read_text().strip()
    assert f"[Prompt]\n{caption}\n" in media.sidecar_path(out).read_text()


def test_argument_presets_and_upstream_spelling():
    args, overrides = v2w.parse_args(["--", "experiment=groot_gr1_480", "train.seed=3"])
    assert args.experiment == "groot_gr1_480" and overrides == ["train.seed=3"]
    assert args.prompt_prefix == "" and args.checkpoint is None
    args, _ = v2w.parse_args(["--gr00t_variant", "droid"])
    assert args.experiment == prompts.GR00T_EXPERIMENT
    assert args.checkpoint == (
        "checkpoints/nvidia/Cosmos-Predict2-14B-Sample-GR00T-Dreams-DROID/model-480p-16fps.pt"
    )
    assert args.prompt_prefix == "The robot arm is performing a task. "
    args, _ = v2w.parse_args(
        ["--gr00t_variant", "gr1", "--prompt_prefix", "", "--checkpoint", "mine.pt"]
    )
    assert args.prompt_prefix == "" and args.checkpoint == "mine.pt"


def test_no_input_and_no_heldout_data_says_what_to_pass(job, tmp_path, capsys):
    _, ckpt = job
    rc = v2w.main(["--checkpoint", str(ckpt), "--", f"data.dataset.dataset_dir={tmp_path}"])
    assert rc == v2w.USER_ERROR
    assert "no --input_path given and no held-out item" in capsys.readouterr().err


def test_mistyped_override_on_a_job_config_fails(job, capsys):
    _, ckpt = job
    assert v2w.main(["--checkpoint", str(ckpt), "--", "model.stat_t=4"]) == v2w.USER_ERROR
    assert "model.stat_t" in capsys.readouterr().err


def test_fp8_off_the_gpu_is_one_clear_error_and_writes_nothing(job, tmp_path, capsys):
    _, ckpt = job
    out = tmp_path / "v.mp4"
    args = ["--checkpoint", str(ckpt), "--input_path", str(png(tmp_path / "in.png"))]
    args += ["--prompt", "p", "--num_steps", "1", "--save_path", str(out), "--fp8"]
    assert v2w.main(args) != 0
    err = capsys.readouterr().err
    assert "--fp8 needs an NVIDIA GPU" in err and "Drop --fp8" in err
    assert not out.exists()
