"""Generation defaults come from the experiment's sampler node (framework/inference/settings.py):
the action recipes generate as upstream does, 35 steps and guidance 0 (cosmos-transfer2.5's
action inference command and cosmos-predict2's action doc pass `--guidance 0`;
experiments/actions.py cites them), with no flag given, in video2world (single and batch JSON)
and best-of-N; a Predict2 GR1 job keeps guidance 7, 35 steps and worldtune's negative prompt;
flags given win. Checked on what the net is run on: guidance > 0 runs the conditional and
unconditional halves as one batch of 2, guidance 0 the conditional half alone."""

from __future__ import annotations

import json

import numpy as np
import pytest

from data_prep.small_t5 import make_small_t5
from experiments.actions import predict2_5_bridge_action_256x320, tiny_lerobot_action
from framework.config import get, load_all
from framework.inference import best_of_n as bon
from framework.inference import loading, media, prompts, settings
from framework.inference import video2world as v2w
from framework.models.cosmos2_5.family import NEGATIVE_PROMPT
from tests.test_best_of_n import SeedCritic  # noqa: F401  (named by --critic below)
from tests.test_inference import png
from tests.test_inference_fixtures import write_job

load_all()

ACTION_RECIPES = {
    "predict2_5_bridge_action_256x320": NEGATIVE_PROMPT,
    "predict2_bridge_action_480x640": "",
    "tiny_lerobot_action": prompts.DEFAULT_NEGATIVE_PROMPT,
    "tiny_lerobot_action_folder": prompts.DEFAULT_NEGATIVE_PROMPT,
}


def defaults(cfg, argv=()) -> tuple[float, int, str]:
    args, _ = v2w.parse_args(list(argv))
    settings.fill_sampler_defaults(args, cfg)
    s = settings.settings_of(args, cfg)
    assert (args.guidance, args.num_steps) == (s.guidance, s.num_steps)
    return s.guidance, s.num_steps, s.negative_prompt


@pytest.mark.parametrize("name", sorted(ACTION_RECIPES))
def test_action_recipes_default_to_upstreams_generation(name):
    cfg = get(name)
    assert defaults(cfg) == (0.0, 35, ACTION_RECIPES[name])
    given = ["--guidance", "3", "--num_steps", "4", "--negative_prompt", "x"]
    assert defaults(cfg, given) == (3.0, 4, "x")


def test_the_bridge_action_guidance_is_the_recipes_not_the_dropout_rule():
    """Both Bridge recipes train with caption dropout, so without their sampler node's guidance
    the commands' rule would give 7."""
    for name in ("predict2_5_bridge_action_256x320", "predict2_bridge_action_480x640"):
        cfg = get(name)
        assert float(cfg.model.objective.text_dropout) > 0
        cfg.model.sampler.guidance = None
        assert defaults(cfg)[0] == 7.0


def test_gr1_jobs_keep_their_defaults():
    assert defaults(get("groot_gr1_480")) == (7.0, 35, prompts.DEFAULT_NEGATIVE_PROMPT)
    assert defaults(get("predict2_5_groot_gr1_480")) == (7.0, 35, NEGATIVE_PROMPT)


# ---- through the commands: what the net is run on ---------------------------------------------


@pytest.fixture(scope="module")
def action_job(tmp_path_factory):
    """A job of the Predict2.5 Bridge action recipe (caption dropout 0.2, its sampler node
    untouched) with the tiny action net, the pixel tokenizer and a small T5 for Reason1."""
    tmp = tmp_path_factory.mktemp("action")
    cfg = predict2_5_bridge_action_256x320()
    tiny = tiny_lerobot_action().model
    cfg.model.net, cfg.model.tokenizer = tiny.net, tiny.tokenizer
    cfg.model.net.action_dim = 7
    cfg.model.state_t, cfg.model.max_text_tokens = 5, 4
    cfg.model.text_encoder = str(make_small_t5(["pick up the cup"], tmp / "t5"))
    cfg.data.dataset.video_size = [24, 24]
    cfg.job.output_root = str(tmp / "runs")
    cfg.checkpoint.load_path = None
    actions = tmp / "actions.npy"
    np.save(actions, np.random.default_rng(0).normal(size=(4, 7)).astype(np.float32))
    return write_job(cfg, ema=False), actions


def spy_net_batches(monkeypatch) -> list[int]:
    """The batch size of every net call of the models the commands build."""
    sizes: list[int] = []
    build = loading.build_model

    def spied(*args, **kwargs):
        model = build(*args, **kwargs)
        model.net.register_forward_pre_hook(lambda m, a: sizes.append(a[0].shape[0]))
        return model

    monkeypatch.setattr(loading, "build_model", spied)
    return sizes


def test_video2world_action_job_runs_unguided_without_flags(
    action_job, tmp_path, monkeypatch, capsys
):
    ckpt, actions = action_job
    sizes = spy_net_batches(monkeypatch)
    argv = ["--checkpoint", str(ckpt), "--input_path", str(png(tmp_path / "in.png"))]
    argv += ["--actions", str(actions)]
    assert v2w.main([*argv, "--save_path", str(tmp_path / "a.mp4")]) == 0, capsys.readouterr()
    assert sizes == [1] * 35  # one chunk of 4 actions, 35 steps, no unconditional half
    sizes.clear()
    assert v2w.main([*argv, "--guidance", "7", "--save_path", str(tmp_path / "b.mp4")]) == 0
    assert sizes == [2] * 35  # the flag wins: both halves in every call
    # A batch JSON item takes the same defaults.
    sizes.clear()
    entry = {
        "input_video": argv[3],
        "actions": str(actions),
        "output_video": str(tmp_path / "c.mp4"),
    }
    (tmp_path / "batch.json").write_text(json.dumps([entry]))
    argv = ["--checkpoint", str(ckpt), "--batch_input_json", str(tmp_path / "batch.json")]
    assert v2w.main([*argv, "--num_steps", "3"]) == 0
    assert sizes == [1] * 3


def test_predict2_gr1_job_keeps_guidance_7(tiny_job, tmp_path, monkeypatch, capsys):
    sizes = spy_net_batches(monkeypatch)
    argv = ["--checkpoint", str(tiny_job.path), "--input_path", str(png(tmp_path / "in.png"))]
    argv += ["--prompt", "pick", "--save_path", str(tmp_path / "g.mp4")]
    assert v2w.main(argv) == 0, capsys.readouterr()
    assert sizes == [2] * 36  # 35 steps and the last denoise at sigma_min, both halves each
    side = media.sidecar_path(tmp_path / "g.mp4").read_text()
    assert f"[Negative Prompt]\n{prompts.DEFAULT_NEGATIVE_PROMPT}" in side


def test_best_of_n_action_job_records_and_uses_guidance_0(action_job, tmp_path, monkeypatch):
    ckpt, actions = action_job
    sizes = spy_net_batches(monkeypatch)
    save = tmp_path / "bon"
    argv = ["--checkpoint", str(ckpt), "--input_path", str(png(tmp_path / "f.png"))]
    argv += ["--actions", str(actions), "--num_generations", "2", "--num_steps", "2"]
    argv += ["--critic", "tests.test_best_of_n:SeedCritic", "--save_path", str(save)]
    assert bon.main(argv) == 0
    summary = json.loads((save / "summary.json").read_text())["settings"]
    assert (summary["guidance"], summary["num_steps"]) == (0.0, 2)
    assert summary["negative_prompt"] == NEGATIVE_PROMPT
    assert sizes == [1] * 4  # 2 candidates x 2 steps, unguided


def test_eval_set_and_training_hooks_generate_as_the_model_does(monkeypatch):
    # The eval set (no `eval` node) and the eval/sample hooks (guidance not given) of the Bridge
    # action recipe generate unguided, as its video2world does; a Predict2 GR1 job keeps 7, a
    # value given keeps winning.
    from types import SimpleNamespace

    from framework.evaluation.evalset import spec_of
    from framework.hooks import evaluation as EH
    from framework.hooks import samples as SH

    load_all()
    action, gr1 = predict2_5_bridge_action_256x320(), get("groot_gr1_480")
    assert "eval" not in action
    assert (spec_of(action).guidance, spec_of(action).num_steps) == (0.0, 35)
    assert spec_of(action, guidance=3.0).guidance == 3.0
    assert spec_of(gr1).guidance == 7.0

    asked = []
    monkeypatch.setattr(EH, "evaluate", lambda model, items, **kw: asked.append(kw) or {})
    monkeypatch.setattr(EH, "runs_here", lambda trainer: True)
    monkeypatch.setattr(EH, "with_progress", lambda trainer, items, tag: items)
    for cfg, given, want in ((action, None, 0.0), (gr1, None, 7.0), (action, 2.0, 2.0)):
        hook = EH.EvalHook(guidance=given)
        monkeypatch.setattr(hook, "items", lambda trainer: [])
        trainer = SimpleNamespace(cfg=cfg, model=None, ema=None, is_main=False, step=0)
        hook._run(trainer, "before")
        assert asked[-1]["guidance"] == want

    calls = []
    model = SimpleNamespace(fps=16.0, generate=lambda *a, **kw: calls.append(kw) or None)
    item = SimpleNamespace(video=np.zeros((1, 3, 1, 2, 2)), text="t", fps=16.0, conditions={})
    sample = SH.SampleVideos(every=1, num_items=1)
    monkeypatch.setattr(sample, "_load", lambda trainer: [item])
    monkeypatch.setattr(SH, "save_video", lambda *a, **kw: None)
    monkeypatch.setattr(SH, "write_sidecar", lambda *a, **kw: None)
    trainer = SimpleNamespace(cfg=action, model=model, ema=None, is_main=False, job_dir="/tmp")
    monkeypatch.setattr(SH, "runs_here", lambda trainer: True)
    monkeypatch.setattr(SH, "with_progress", lambda trainer, items, tag: items)
    sample.sample(trainer, 1)
    assert [c["guidance"] for c in calls] == [0.0]
