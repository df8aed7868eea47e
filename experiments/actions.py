"""Action-conditioned Video2World on Bridge: upstream's Predict2.5 and Predict2 recipes, and tiny
CPU members that show what the actions buy.

Data: the IRASim Bridge archive laid out by `python -m data_prep.bridge --archive ... --skip_t5`
(docs/data.md, "Bridge with actions"): 13 frames, 12 actions x 7 (x20 as upstream).
Weights: Predict2.5 starts from the 2B pre-trained file (`hf download nvidia/Cosmos-Predict2.5-2B
--local-dir checkpoints/nvidia/Cosmos-Predict2.5-2B`), its action embedders from their init
(upstream starts them uninitialised; docs/upstream/cosmos_predict2_5.md §6.2, §8 item 3);
Predict2 from its released action-conditioned file (`hf download
nvidia/Cosmos-Predict2-2B-Sample-Action-Conditioned --local-dir
checkpoints/nvidia/Cosmos-Predict2-2B-Sample-Action-Conditioned`). Values: §6.1-§6.6.

Generation defaults (the sampler node's, framework/inference/settings.py): 35 steps and guidance
0, as upstream generates from these models. Predict2.5: the documented benchmark command of
cosmos-transfer2.5's `_src/predict2/action/inference/inference.py` (L20-26 at 2ff49d0) passes
`--guidance 0` (its argparse default, L67, is 7), and its teacher path calls
`generate_samples_from_batch` without `num_steps` (35, `text2world_model_rectified_flow.py`
L501). Predict2: `documentations/post-training_video2world_action.md` (L85-95 at 661da47) runs
`examples/video2world_action.py --guidance 0`, whose pipeline samples `num_sampling_step` 35
with `negative_prompt` "" (`pipelines/video2world_action.py` L229-232). Neither passes a negative
prompt (2.5: `inference_pipeline.py` L289-295, `use_neg_prompt=False`), and in 2.5 the
unconditional branch then gets the same empty text, actions and frames as the conditional one
(`_src/predict2/conditioner.py` L531-555; the action conditioner's `edit_for_inference`
L126-139), so guidance changes nothing there: guidance 0 gives that video in half the net calls.
"""

from __future__ import annotations

from experiments import blocks
from experiments.predict2_5 import predict2_5_checkpoint
from experiments.tiny import tiny_gr1
from framework.config import L, experiment

P25_ACTION_NET = "framework.models.cosmos2_5.action.ActionChunkConditionedDiT"
P2_ACTION_NET = "framework.models.cosmos2.action.ActionConditionedDiT"
P2_ACTION_HUB = "nvidia/Cosmos-Predict2-2B-Sample-Action-Conditioned"


def predict2_5_action_net(size: str = "2B", **overrides):
    from framework.models.cosmos2_5.net import net_config

    return L(P25_ACTION_NET)(
        **{**net_config(size), "action_dim": 7, "temporal_compression_ratio": 4, **overrides}
    )


def predict2_action_net(size: str = "2B", **overrides):
    from framework.models.cosmos2.net import net_config

    return L(P2_ACTION_NET)(**{**net_config(size), "action_dim": 7 * 12, **overrides})


@experiment(
    aliases=[
        "cosmos_predict2p5_2B_reason_embeddings_action_conditioned_rectified_flow_bridge_13frame_256x320",
        "ac_reason_embeddings_rectified_flow_2b_256_320",
    ],
    job_name="2b_bridge_action_conditioned",
)
def predict2_5_bridge_action_256x320():
    """Predict2.5 2B action-conditioned on Bridge: 13 frames at 256x320, 12 actions 4 per latent
    frame, no instruction (Reason1 embeds the empty caption); 8 per GPU, FSDP 8."""
    import framework.models.cosmos2_5.action  # noqa: F401  (registers the family)
    from framework.models.cosmos2_5.family import NEGATIVE_PROMPT

    vae = L("framework.models.tokenizers.WanVAETokenizer")(
        path=predict2_5_checkpoint("tokenizer.pth")
    )
    model = blocks.world_model(predict2_5_action_net(), vae, "cosmos2_5_action", state_t=4)
    model.text_encoder = L("framework.models.text.reason1.Reason1TextEncoder")(
        path_or_hub_id=f"{blocks.CHECKPOINTS}/nvidia/Cosmos-Reason1-7B", max_length=512
    )
    # Upstream embeds the empty caption with Reason1 in training and at generation (§2.4, §6.5).
    model.empty_prompt = "encode"
    # Generation as upstream's action inference: 35 steps, guidance 0; the negative prompt is
    # its CLI's (upstream's 2.5 one), used only with --guidance > 0.
    model.sampler.update(guidance=0.0, negative_prompt=NEGATIVE_PROMPT)
    model.fps = 4.0
    model.objective.conditional_frames_probs = [0.0, 1.0]  # exactly one given latent frame
    data = L("framework.data.bridge_actions.BridgeActionDataset")(
        dataset_dir=f"{blocks.DATASETS}/bridge", num_frames=13, video_size=[256, 320], text="online"
    )
    cfg = blocks.base(model, blocks.loader(data, batch_size=8, num_workers=4))
    cfg.job.project, cfg.job.group = "cosmos_predict2_action_conditioned", "cosmos_predict_v2p5"
    cfg.optim = blocks.optim(lr=3.2e-4, weight_decay=0.1, betas=(0.9, 0.999))
    cfg.sched = blocks.lambda_linear(warm_up=100, cycle=400_000, f_max=0.99, f_min=0.4)
    cfg.train.max_steps = 150_000  # inherited from the 2B RF config [I]; released: iter 16000
    cfg.train.grad_clip = 0.1
    cfg.train.ema.enabled = True
    cfg.parallel.shard_size = 8
    cfg.checkpoint.save_iter = 2000
    cfg.checkpoint.format = "dcp"
    cfg.checkpoint.load_path = predict2_5_checkpoint()  # plain Video2World: embedders keep init
    return cfg


@experiment(
    aliases=["predict2_video2world_2b_action_conditioned_training"],
    job_name="predict2_2b_bridge_action_conditioned",
)
def predict2_bridge_action_480x640():
    """Predict2 2B action-conditioned on Bridge: 13 frames at 480x640, the 12 actions as one
    84-dim vector, zero T5 embeddings (no instruction); 2 per GPU, FSDP over all GPUs."""
    import framework.models.cosmos2.action  # noqa: F401  (registers the family)

    model = blocks.world_model(
        predict2_action_net(), blocks.wan_vae("2B"), "cosmos2_action", state_t=4
    )
    model.fps = 4.0
    model.objective.min_num_conditional_frames = model.objective.max_num_conditional_frames = 1
    # Generation as upstream's: 35 steps, guidance 0, no negative prompt ("": zeros, as its
    # positive; the pipeline's default), `ACTION_GENERATION` in the module docstring.
    model.sampler.update(guidance=0.0, negative_prompt="")
    data = blocks.bridge_action_dataset(num_frames=13, video_size=(480, 640))
    data.text = "none"  # zero T5 embeddings: upstream gives this net no instruction
    cfg = blocks.base(
        model, blocks.loader(data, batch_size=2), "posttraining", "action_conditioned"
    )
    cfg.optim = blocks.optim(lr=1e-4, weight_decay=0.1, betas=(0.9, 0.99))
    cfg.parallel.shard_size = -1  # upstream's fsdp_shard_size -1: every GPU
    cfg.checkpoint.load_path = f"{blocks.CHECKPOINTS}/{P2_ACTION_HUB}/model-480p-4fps.pt"
    return cfg


# ---- tiny CPU members: the same small Predict2.5 model with and without actions -------------

SYNTHETIC_LEROBOT = f"{blocks.DATASETS}/synthetic_lerobot_actions"


def _tiny(action: bool):
    """tiny_predict2_5_gr1's net and training on the synthetic LeRobot pick-and-place episodes
    (data_prep/synthetic_lerobot.py): 5-frame episodes (the whole task, as tiny_gr1's 5 frames 8
    apart), the top camera at 24x24, actions = the gripper's (dy, dx, dopening) per frame,
    min-max normalized; 48 training and 4 val episodes; no instruction, so only the first frame
    and (with `action`) the actions tell where the gripper goes."""
    import framework.models.cosmos2_5.action  # noqa: F401

    cfg = tiny_gr1()
    old = cfg.model.net
    kw = dict(
        model_channels=old.model_channels,
        num_blocks=old.num_blocks,
        num_heads=old.num_heads,
        in_channels=old.in_channels,
        out_channels=old.out_channels,
        crossattn_emb_channels=old.model_channels,
        crossattn_proj_in_channels=1024,  # the zero T5-sized embeddings of text="none"
    )
    if action:  # the pixel tokenizer keeps every frame: one 3-dim action per latent frame
        net = predict2_5_action_net(**kw, action_dim=3, temporal_compression_ratio=1)
    else:
        net = L("framework.models.cosmos2_5.net.Predict25DiT")(**kw)
    family = "cosmos2_5_action" if action else "cosmos2_5"
    # Trained on zero text: generation gives the empty prompt zeros of the net's text width
    # without building an encoder; this small T5 embeds only a prompt given on the command line.
    encoder = f"{SYNTHETIC_LEROBOT}/text_encoder"
    model = blocks.world_model(net, cfg.model.tokenizer, family, state_t=5, text_encoder=encoder)
    model.max_text_tokens, model.fps = 1, 16.0
    model.objective.conditional_frames_probs = [0.0, 1.0]  # generation gives one frame
    model.objective.text_dropout = 0.0  # scored unguided
    model.sampler.guidance = 0.0  # as the Bridge action recipes (and no caption dropout)
    cfg.model = model
    cfg.data.dataset = L("data_prep.synthetic_lerobot.synthetic_lerobot_dataset")(
        dataset_dir=SYNTHETIC_LEROBOT,
        num_episodes=52,
        source_frames=5,
        size=64,
        num_val=4,
        split="train",
        camera="top",
        num_frames=5,
        video_size=[24, 24],
        action_norm="min_max",
        text="none",  # both read the actions; only the action net's family takes them
        max_text_tokens=1,
        keep_in_memory=True,
    )
    cfg.job.group = "tiny_action"
    # The 4 val episodes with their actions, 2 seeds each (`python -m framework.eval`).
    cfg.eval = blocks.eval_set(
        "synthetic_lerobot_action_val", num_items=4, seeds=(0, 1), guidance=0.0, num_steps=15
    )
    return cfg


@experiment
def tiny_lerobot_action():
    """CPU: tiny Predict2.5 action net on synthetic LeRobot pick-and-place episodes."""
    return _tiny(action=True)


@experiment
def tiny_lerobot_no_action():
    """CPU: tiny_lerobot_action's model without actions (the baseline of the PSNR gap)."""
    return _tiny(action=False)


@experiment
def tiny_lerobot_action_folder():
    """CPU: tiny_lerobot_action's model on a LeRobot folder you name (v2.x or v3.0):
    data.dataset.dataset_dir, data.dataset.camera, and model.net.action_dim = its action width."""
    cfg = _tiny(action=True)
    data = blocks.lerobot_dataset(
        f"{blocks.DATASETS}/lerobot", num_frames=5, video_size=(24, 24), action_norm="min_max"
    )
    data.max_text_tokens, data.keep_in_memory = 1, True
    cfg.data.dataset = data
    # Trained on zero text: held-out items carry zeros, generation makes them (no encoder).
    cfg.model.text_encoder = None
    del cfg["eval"]  # no frozen set: the eval hook scores the folder's own held-out episodes
    return cfg
