"""Generation with a Predict2.5 job through the stock commands (video2world single and batch
JSON, best-of-N, the GR00T preset) with the family's defaults: 35 UniPC steps, guidance 7 and
upstream's negative prompt (docs/upstream/cosmos_predict2_5.md §1.6), while Predict2 jobs keep
theirs. A tiny random Predict2.5 net and a pixel tokenizer on the CPU."""

from __future__ import annotations

import json

import pytest

from experiments import blocks
from experiments.predict2_5 import predict2_5_model, predict2_5_net
from framework.config import L, get, load_all
from framework.inference import best_of_n as bon
from framework.inference import media, prompts
from framework.inference import video2world as v2w
from framework.models.cosmos2_5.family import NEGATIVE_PROMPT
from tests.test_best_of_n import SeedCritic  # noqa: F401  (named by --critic below)
from tests.test_inference import png
from tests.test_inference_fixtures import SIZE, SPATIAL, STATE_T, decode, make_dataset, write_job

load_all()


def tiny_p25_config(tmp_path_factory):
    """A tiny Predict2.5 job config on a synthetic GR1 folder (tests/test_predict2_5_export.py
    uses it too)."""
    data = make_dataset(tmp_path_factory.mktemp("data") / "synthetic")
    channels = 3 * SPATIAL * SPATIAL
    net = predict2_5_net(
        model_channels=64,
        num_blocks=2,
        num_heads=2,
        in_channels=channels,
        out_channels=channels,
        adaln_lora_dim=16,
        crossattn_emb_channels=64,
        crossattn_proj_in_channels=1024,  # the synthetic set's small T5
    )
    tok = L("framework.models.tokenizers.PixelTokenizer")(spatial=SPATIAL)
    model = predict2_5_model(net, tok, state_t=STATE_T, text_encoder=str(data / "text_encoder"))
    model.fps = 8.0
    dataset = L("framework.data.dataset.VideoDataset")(
        dataset_dir=str(data), num_frames=STATE_T, video_size=[SIZE, SIZE]
    )
    cfg = blocks.base(model, blocks.loader(dataset, num_workers=0), group="test")
    cfg.job.name = "tiny_p25"
    cfg.job.output_root = str(tmp_path_factory.mktemp("runs"))
    return cfg


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    return write_job(tiny_p25_config(tmp_path_factory), ema=False)


def test_defaults_come_from_the_family():
    """Predict2.5's recipe: upstream's negative prompt, 35 steps, guidance 7; Predict2's
    recipe keeps worldtune's negative prompt; a flag given by the user wins."""
    for name, negative in (
        ("predict2_5_groot_gr1_480", NEGATIVE_PROMPT),
        ("groot_gr1_480", prompts.DEFAULT_NEGATIVE_PROMPT),
    ):
        cfg = get(name)
        args, _ = v2w.parse_args([])
        v2w.fill_sampler_defaults(args, cfg)
        assert (args.negative_prompt, args.num_steps) == (negative, 35), name
        assert args.guidance == 7.0
    args, _ = v2w.parse_args(["--negative_prompt", "", "--num_steps", "4"])
    v2w.fill_sampler_defaults(args, get("predict2_5_groot_gr1_480"))
    assert (args.negative_prompt, args.num_steps) == ("", 4)
    assert NEGATIVE_PROMPT != prompts.DEFAULT_NEGATIVE_PROMPT


def spy_settings(monkeypatch) -> list:
    seen = []
    original = v2w.run_items

    def run_items(model, embed, items, s, *a, **k):
        seen.append(s)
        return original(model, embed, items, s, *a, **k)

    monkeypatch.setattr(v2w, "run_items", run_items)
    return seen


def test_video2world_with_the_family_defaults(job, tmp_path, monkeypatch, capsys):
    seen = spy_settings(monkeypatch)
    out = tmp_path / "v.mp4"
    argv = ["--checkpoint", str(job), "--input_path", str(png(tmp_path / "in.png"))]
    rc = v2w.main([*argv, "--prompt", "pick up the cube", "--save_path", str(out)])
    assert rc == 0, capsys.readouterr().err
    (s,) = seen
    assert (s.num_steps, s.guidance, s.negative_prompt) == (35, 7.0, NEGATIVE_PROMPT)
    assert decode(out) == (STATE_T, SIZE, SIZE, 8.0)
    assert f"[Negative Prompt]\n{NEGATIVE_PROMPT}" in media.sidecar_path(out).read_text()


def test_batch_json_and_gr00t_preset(job, tmp_path, monkeypatch, capsys):
    """The preset adds its prompt prefix and 16 fps and keeps the job's own checkpoint (the
    GR00T-Dreams files are Predict2 14B)."""
    seen = spy_settings(monkeypatch)
    image = png(tmp_path / "in.png")
    outs = [tmp_path / "out" / f"{i}.mp4" for i in range(2)]
    batch = [
        {"input_video": str(image), "prompt": f"task {i}", "output_video": str(o)}
        for i, o in enumerate(outs)
    ]
    (tmp_path / "batch.json").write_text(json.dumps(batch))
    args, _ = v2w.parse_args(["--checkpoint", str(job), "--gr00t_variant", "gr1"])
    assert args.checkpoint == str(job) and args.prompt_prefix == prompts.GR00T_PROMPT_PREFIX
    argv = ["--checkpoint", str(job), "--batch_input_json", str(tmp_path / "batch.json")]
    argv += ["--num_steps", "3", "--gr00t_variant", "gr1", "--save_path", str(outs[0])]
    assert v2w.main(argv) == 0, capsys.readouterr().err
    (s,) = seen
    assert (s.num_steps, s.negative_prompt, s.fps) == (3, NEGATIVE_PROMPT, 16.0)
    assert s.prompt_prefix == prompts.GR00T_PROMPT_PREFIX
    assert [decode(o)[3] for o in outs] == [16.0, 16.0]


def test_best_of_n_records_the_family_defaults(job, tmp_path):
    save = tmp_path / "bon"
    argv = ["--checkpoint", str(job), "--input_path", str(png(tmp_path / "f.png"))]
    argv += ["--prompt", "go", "--num_generations", "2", "--num_steps", "2"]
    argv += ["--critic", "tests.test_best_of_n:SeedCritic", "--save_path", str(save)]
    assert bon.main(argv) == 0
    summary = json.loads((save / "summary.json").read_text())
    settings = summary["settings"]
    assert (settings["guidance"], settings["num_steps"]) == (7.0, 2)
    assert settings["negative_prompt"] == NEGATIVE_PROMPT
    side = media.sidecar_path(save / "f_seed0.mp4").read_text()
    assert f"[Negative Prompt]\n{NEGATIVE_PROMPT}" in side
