"""Cosmos-Predict1 7B Video2World instruction post-training on Bridge (robot arm), and its CPU
miniature.

Data: `python -m data_prep.bridge` lays out the IRASim Bridge archive under
`${DATASETS:-datasets}/bridge` and writes T5-11B embeddings of the instructions. Weights:
`hf download nvidia/Cosmos-Predict1-7B-Video2World --local-dir
checkpoints/nvidia/Cosmos-Predict1-7B-Video2World` and `hf download
nvidia/Cosmos-Tokenize1-CV8x8x8-720p --local-dir checkpoints/nvidia/Cosmos-Tokenize1-CV8x8x8-720p`.
Values are upstream's `video2world_instruction_bridge_57frames` (docs/upstream/cosmos_predict1.md
§1.4); the job folder is upstream's: posttraining/diffusion_video2world_instruction/<name>.
"""

from __future__ import annotations

from experiments import blocks
from framework.config import L, experiment

GROUP = "diffusion_video2world_instruction"


def adamw_every_param(params, lr: float, weight_decay: float, betas=(0.9, 0.99), eps=1e-8):
    """The trainer's AdamW with weight decay on every parameter, norm gains included: upstream's
    one parameter group (§1.4, §9 item 7). framework.trainer.optim.adamw exempts 1-D tensors."""
    from framework.trainer.optim import adamw

    optimizer = adamw(params, lr, weight_decay, betas, eps)
    for group in optimizer.param_groups:
        group["weight_decay"] = weight_decay
    return optimizer


@experiment(
    aliases=["video2world_instruction_bridge_57frames"],
    job_name="video2world_instruction_bridge_57frames",
)
def bridge_57frames():
    """Predict1 7B Video2World instruction post-training on Bridge, 57 frames at 256x320."""
    # 57 frames -> 8 latent frames of 32x40 (2,560 tokens); fps 4 from the dataset (§9 item 5).
    model = blocks.predict1_model(blocks.predict1_net("7B"), blocks.cv8x8x8(), state_t=8)
    data = blocks.loader(blocks.bridge_dataset(num_frames=57, video_size=(256, 320)))
    cfg = blocks.base(model, data, "posttraining", GROUP)
    cfg.optim = L(adamw_every_param)(lr=2**-14.3, weight_decay=0.1, betas=[0.9, 0.99], eps=1e-10)
    # Warm-up 2500 > 2000 steps: the LR ends at 0.8x its peak, as upstream (§9 item 6).
    cfg.sched = blocks.lambda_linear(
        warm_up=2500, cycle=10_000_000_000_000, f_start=1e-6, f_max=1.0, f_min=1.0
    )
    cfg.train.max_steps = 2000
    cfg.train.ema.enabled = True  # power EMA, rate 0.1 (§6.5)
    # HSDP: shard groups of up to 32 processes, replicated beyond (§6.4); upstream keeps every
    # activation (fsdp.checkpoint False).
    cfg.parallel.shard_size = 32
    cfg.checkpoint.save_iter = 500
    cfg.checkpoint.load_path = blocks.predict1_checkpoint("7B")
    return cfg


@experiment(job_name="video2world_instruction_bridge_57frames_lora")
def bridge_57frames_lora():
    """Predict1 7B LoRA (rank 16, alpha 16) on Bridge; fits far fewer GPUs than full tuning."""
    cfg = bridge_57frames()
    cfg.model.lora = {"rank": 16, "alpha": 16, "targets": blocks.PREDICT1_LORA_TARGETS}
    cfg.optim.lr = 2**-10  # upstream has no Predict1 LoRA; Predict2's rank-16 guideline
    return cfg


# --- tiny_bridge: the same family at CPU size --------------------------------------------------

SYNTHETIC_BRIDGE = f"{blocks.DATASETS}/synthetic_bridge"
TEXT_TOKENS = 32  # the instructions are ~10 T5 tokens (tiny.py's reason for 32)


def tiny_predict1_model(
    state_t: int, spatial: int = 2, width: int = 128, depth: int = 4, scale: float = 1.0
):
    channels = 3 * spatial * spatial
    net = blocks.predict1_net(
        "7B",
        model_channels=width,
        num_blocks=depth,
        num_heads=width // 64,
        in_channels=channels,
        out_channels=channels,
        max_img_h=64,
        max_img_w=64,
        max_frames=16,
    )
    pixels = L("framework.models.tokenizers.PixelTokenizer")(spatial=spatial)
    tokenizer = blocks.scaled_tokenizer(pixels, scale)
    model = blocks.predict1_model(
        net, tokenizer, state_t, text_encoder=f"{SYNTHETIC_BRIDGE}/text_encoder"
    )
    model.max_text_tokens = TEXT_TOKENS
    return model


@experiment
def tiny_bridge():
    """CPU: tiny Predict1 DiT (EDM, logvar), pixel tokenizer, synthetic Bridge-layout arm clips."""
    dataset = L("data_prep.synthetic_bridge.synthetic_bridge_dataset")(
        dataset_dir=SYNTHETIC_BRIDGE,
        num_videos=48,
        source_frames=33,
        size=[64, 80],
        num_val=4,
        num_frames=5,
        frame_stride=8,
        video_size=[24, 32],
        max_text_tokens=TEXT_TOKENS,
        keep_in_memory=True,
    )
    data = blocks.loader(dataset, batch_size=8, num_workers=0)
    data.pin_memory = False
    model = tiny_predict1_model(state_t=5)
    obj = model.objective
    obj.min_num_conditional_frames = obj.max_num_conditional_frames = 1
    obj.video_cond_dropout = 0.0
    obj.text_dropout = 0.0
    cfg = blocks.base(model, data, project="worldtune", group="tiny")
    cfg.optim.lr = 2e-3
    cfg.optim.weight_decay = 0.0
    cfg.sched = blocks.lambda_linear(warm_up=20, cycle=1000, f_start=0.1, f_max=1.0, f_min=0.1)
    cfg.train.max_steps = 1000
    cfg.train.precision = "fp32"
    cfg.parallel.strategy = "none"
    cfg.checkpoint.save_iter = 250
    cfg.checkpoint.keep_last = 2
    cfg.hooks.eval = L("framework.hooks.evaluation.EvalHook")(
        num_items=4, num_steps=15, guidance=0.0
    )
    cfg.hooks.sample = L("framework.hooks.samples.SampleVideos")(
        every=500, num_items=2, num_steps=15, guidance=0.0
    )
    cfg.hooks.loss_curve = L("framework.hooks.loss_curve.LossCurveHook")()
    return cfg
