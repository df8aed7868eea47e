"""The CPU default job (`make train`): a tiny Predict2-family model on synthetic robot clips.

Data: `data_prep/synthetic.py` writes it on first use to `${DATASETS:-datasets}/synthetic_gr1`
(coloured cubes carried to plates by a gripper, captions embedded by a small random T5). The model
is the real Predict2 DiT code at a small width and depth with a pixel (space-to-depth) tokenizer,
trained with the real objective and trainer.
"""

from __future__ import annotations

import time
from pathlib import Path

from omegaconf import DictConfig

from experiments import blocks
from framework.config import L, experiment

SYNTHETIC = f"{blocks.DATASETS}/synthetic_gr1"


def synthetic_dataset(
    dataset_dir: str,
    num_videos: int = 24,
    source_frames: int = 33,
    size: int = 64,
    texture: float = 0.0,
    **dataset_kw,
):
    """Read `dataset_dir` like any GR1-layout folder; write the synthetic set there first when
    the folder is missing or holds an earlier synthetic set (synthetic.json). A folder of your
    own (videos/ without synthetic.json) is used as it is: `data.dataset.dataset_dir=DIR`."""
    from data_prep.synthetic import ensure_synthetic_dataset
    from framework.data.dataset import VideoDataset
    from framework.trainer.dist import local_rank

    root = Path(dataset_dir)
    marker = root / "synthetic.json"
    if (root / "videos").is_dir() and not marker.is_file():
        return VideoDataset(dataset_dir, **dataset_kw)
    params = dict(num_videos=num_videos, num_frames=source_frames, size=size, texture=texture)
    if local_rank() != 0:
        # One writer per node: two ranks generating at once hung a 2-GPU run (performance.md).
        deadline = time.monotonic() + 900
        while not marker.is_file() and time.monotonic() < deadline:
            time.sleep(1)
    ensure_synthetic_dataset(dataset_dir, **params)
    return VideoDataset(dataset_dir, **dataset_kw)


# The captions are ~14 T5 tokens; 512 zero-padded slots (upstream) would spend most of the
# tiny net's cross-attention on padding.
TEXT_TOKENS = 32


def tiny_model(state_t: int, spatial: int = 2, width: int = 128, depth: int = 4) -> DictConfig:
    channels = 3 * spatial * spatial
    net = blocks.predict2_net(
        "2B",
        model_channels=width,
        num_blocks=depth,
        num_heads=width // 64,
        in_channels=channels,
        out_channels=channels,
    )
    tokenizer = L("framework.models.tokenizers.PixelTokenizer")(spatial=spatial)
    model = blocks.predict2_model(
        net, tokenizer, state_t=state_t, text_encoder=f"{SYNTHETIC}/text_encoder"
    )
    model.max_text_tokens = TEXT_TOKENS
    # Pixel space: the data std is ~0.27, so the sqrt(state_t) noise boost of latent video
    # (tuned for the Wan VAE) leaves too few low-noise draws; 5% high-sigma draws remain.
    model.objective.adjust_video_noise = False
    # Generation conditions on one frame; train on exactly that case.
    model.objective.max_num_conditional_frames = 1
    # The job generates and scores with guidance 0, so the 20% caption-free steps upstream spends
    # on classifier-free guidance only slow it down (+1.3 dB PSNR over 3 seeds without them).
    # Set model.objective.text_dropout=0.2 to train for --guidance > 0.
    model.objective.text_dropout = 0.0
    return model


@experiment
def tiny_gr1():
    """CPU default: tiny Predict2 DiT, pixel tokenizer, synthetic GR1-layout clips (~4 min)."""
    # 5 frames 8 apart cover the whole 33-frame episode. 24x24 pixels, a 2x2 space-to-depth and
    # the net's 2x2 patches give 6x6 tokens of 4*(12+2)=56 values per frame. At 32x32 a step
    # costs ~1.5x more and 1000 steps no longer fit in 5 minutes; the cube still spans ~4 pixels
    # at 24x24 (performance.md has the sweep).
    dataset = L(synthetic_dataset)(
        dataset_dir=SYNTHETIC,
        num_videos=48,
        num_frames=5,
        frame_stride=8,
        video_size=[24, 24],
        max_text_tokens=TEXT_TOKENS,
        texture=0.0,
        keep_in_memory=True,
    )
    # 48 clips, each of the 24 tasks twice with its own jitter: the model finds the cube in more
    # of its generated frames than with 24 (90% vs 75% over 3 seeds), for 2 s more preparation.
    # The 52 clips (3 MB decoded) are decoded once and kept; no loader worker, so both cores of
    # a 2-core machine go to the step.
    data = blocks.loader(dataset, batch_size=8, num_workers=0)
    data.pin_memory = False
    cfg = blocks.base(tiny_model(state_t=5), data, project="worldtune", group="tiny")
    cfg.optim.lr = 2e-3
    cfg.optim.weight_decay = 0.0
    cfg.sched = blocks.lambda_linear(warm_up=20, cycle=1000, f_start=0.1, f_max=1.0, f_min=0.1)
    cfg.train.max_steps = 1000
    cfg.train.precision = "fp32"
    cfg.parallel.strategy = "none"
    cfg.checkpoint.save_iter = 250
    cfg.checkpoint.keep_last = 2
    cfg.logging.every = 10
    # The end-to-end story a new user sees: scores before and after, videos, a loss curve.
    # Also every 250 steps (with each checkpoint): with before/after, an eval curve of 5 points
    # (3 more evals of the 4 clips; their cost: docs/eval.md "During training").
    cfg.hooks.eval = L("framework.hooks.evaluation.EvalHook")(
        num_items=4, num_steps=15, guidance=0.0, every=250
    )
    cfg.hooks.sample = L("framework.hooks.samples.SampleVideos")(
        every=500, num_items=2, num_steps=15, guidance=0.0
    )
    cfg.hooks.loss_curve = L("framework.hooks.loss_curve.LossCurveHook")()
    # The 4 held-out clips, 2 seeds each (`make eval`: base vs trained, docs/eval.md).
    cfg.eval = blocks.eval_set(
        "synthetic_gr1_val", num_items=4, seeds=(0, 1), guidance=0.0, num_steps=15
    )
    return cfg
