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


def adamw_every_param(
    params, lr: float, weight_decay: float, betas=(0.9, 0.99), eps=1e-8, master_weights=False
):
    """The trainer's AdamW with weight decay on every parameter, norm gains included: upstream's
    one parameter group (§1.4, §9 item 7). framework.trainer.optim.adamw exempts 1-D tensors."""
    from framework.trainer.optim import adamw

    optimizer = adamw(params, lr, weight_decay, betas, eps, master_weights=master_weights)
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
    cfg.optim = L(adamw_every_param)(
        lr=2**-14.3, weight_decay=0.1, betas=[0.9, 0.99], eps=1e-10, master_weights=False
    )
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
    cfg.checkpoint.format = "dcp"  # sharded, in the background (docs/training.md, Checkpoints)
    cfg.checkpoint.load_path = blocks.predict1_checkpoint("7B")
    return cfg


@experiment(job_name="video2world_instruction_bridge_57frames_1gpu")
def bridge_57frames_1gpu():
    """bridge_57frames on one H200 (141 GB): upstream's precision (bf16 weights and gradients,
    fp32 master weights and moments in the optimizer, §6.3) with nothing sharded, and no EMA
    (its fp32 copy, 27 GiB, does not fit beside the step's 117 GiB). 0.37 s per step on an H200
    (docs/performance.md)."""
    cfg = bridge_57frames()
    cfg.parallel.strategy = "none"
    cfg.optim.master_weights = True
    cfg.train.ema.enabled = False
    return cfg


@experiment(job_name="video2world_instruction_bridge_57frames_lora")
def bridge_57frames_lora():
    """Predict1 7B LoRA (rank 16, alpha 16) on Bridge; fits far fewer GPUs than full tuning."""
    cfg = bridge_57frames()
    cfg.model.lora = {"rank": 16, "alpha": 16, "targets": None}  # the family's lora_targets
    cfg.optim.lr = 2**-10  # upstream has no Predict1 LoRA; Predict2's rank-16 guideline
    return cfg


# --- tiny_bridge: the same family at CPU size --------------------------------------------------

SYNTHETIC_BRIDGE = f"{blocks.DATASETS}/synthetic_bridge"
TEXT_TOKENS = 32  # the instructions are ~10 T5 tokens (tiny.py's reason for 32)
# Per-colour mean and std of the synthetic set's pixels in [-1, 1] (R, G, B; 48 episodes, 5
# frames 8 apart, 24x32).
PIXEL_MEAN = (-0.11, -0.25, -0.39)
PIXEL_STD = (0.15, 0.13, 0.12)


def pixel_normalisation(spatial: int) -> dict:
    """Scale and shift per pixel-tokenizer channel (colour-major, spatial^2 each) that give the
    latents mean 0 and std 0.5: what CV8x8x8's mean_std and x sigma_data give upstream's."""
    n = spatial * spatial
    return {
        "scale": [0.5 / s for s in PIXEL_STD for _ in range(n)],
        "shift": [m for m in PIXEL_MEAN for _ in range(n)],
    }


def tiny_predict1_model(state_t: int, spatial: int = 2, width: int = 128, depth: int = 4):
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
    tokenizer = blocks.scaled_tokenizer(pixels, **pixel_normalisation(spatial))
    model = blocks.predict1_model(
        net, tokenizer, state_t, text_encoder=f"{SYNTHETIC_BRIDGE}/text_encoder"
    )
    model.max_text_tokens = TEXT_TOKENS
    return model


@experiment
def tiny_bridge():
    """CPU: tiny Predict1 DiT (EDM, logvar), pixel tokenizer, synthetic Bridge-layout arm clips."""
    # Each of the 48 tasks (block, start, target) once; 5 frames 8 apart cover a whole 33-frame
    # episode, so an episode is one window. 24x32 keeps 256x320's aspect near enough with whole
    # 2x2 patches of the 2x2 pixel tokenizer (6x8 tokens per frame); width, depth, batch and lr
    # are tiny_gr1's. ~0.22 s per step on 2 cores.
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
    # Generation conditions on one frame; train on exactly that case (upstream: 0 or 1 frames).
    obj.min_num_conditional_frames = obj.max_num_conditional_frames = 1
    # Scored and sampled unguided, so the steps upstream spends on guidance (frames or caption
    # dropped, 20% each) only slow it down; set both to 0.2 to train for --guidance > 0.
    obj.video_cond_dropout = 0.0
    obj.text_dropout = 0.0
    # The given frame carries the inference-time noise (0.001, fixed), not upstream's
    # 4 exp(N(0, 1)), which hides the frame the tiny model must continue: 26.5 vs 24.7 dB
    # PSNR after 1000 steps (performance.md). Upstream's noise levels (ln sigma ~ N(0, 1)) stay:
    # with the latents at std 0.5 they beat N(-1.2, 1.2) by 4.7 dB.
    obj.augment_multiplier = 0.001
    obj.augment_p_std = 0.0
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
