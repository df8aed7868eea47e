"""The CPU default job (`make train`): a tiny Predict2-family model on synthetic robot clips.

Data: `data_prep/synthetic.py` writes it on first use to `${DATASETS:-datasets}/synthetic_gr1`
(coloured cubes carried to plates by a gripper, captions embedded by a small random T5). The model
is the real Predict2 DiT code at a small width and depth with a pixel (space-to-depth) tokenizer,
trained with the real objective and trainer.
"""

from __future__ import annotations

from omegaconf import DictConfig

from experiments import blocks
from framework.config import L, experiment

SYNTHETIC = f"{blocks.DATASETS}/synthetic_gr1"


def synthetic_dataset(dataset_dir: str, num_videos: int = 24, source_frames: int = 33,
                      size: int = 64, **dataset_kw):
    """Write the synthetic dataset if missing, then read it like any GR1-layout folder."""
    from data_prep.synthetic import ensure_synthetic_dataset
    from framework.data.dataset import VideoDataset

    ensure_synthetic_dataset(dataset_dir, num_videos=num_videos, num_frames=source_frames,
                             size=size)
    return VideoDataset(dataset_dir, **dataset_kw)


def tiny_model(state_t: int, spatial: int = 4, width: int = 256, depth: int = 4) -> DictConfig:
    channels = 3 * spatial * spatial
    net = blocks.predict2_net(
        "2B", model_channels=width, num_blocks=depth, num_heads=width // 64,
        in_channels=channels, out_channels=channels,
    )
    tokenizer = L("framework.models.tokenizers.PixelTokenizer")(spatial=spatial)
    model = blocks.video2world(net, tokenizer, state_t=state_t,
                               text_encoder=f"{SYNTHETIC}/text_encoder")
    model.fps = 4.0  # 9 frames sampled 4 apart from 16 fps clips
    return model


@experiment
def tiny_gr1():
    """CPU default: tiny Predict2 DiT, pixel tokenizer, synthetic GR1-layout clips (~4 min)."""
    dataset = L(synthetic_dataset)(
        dataset_dir=SYNTHETIC, num_frames=9, frame_stride=4, video_size=[64, 64]
    )
    data = blocks.loader(dataset, batch_size=8, num_workers=2)
    data.pin_memory = False
    cfg = blocks.base(tiny_model(state_t=9), data, project="worldtune", group="tiny")
    cfg.optim.lr = 1e-3
    cfg.optim.weight_decay = 0.0
    cfg.sched = blocks.lambda_linear(warm_up=20, cycle=300, f_start=0.1, f_max=1.0, f_min=0.1)
    cfg.train.max_steps = 300
    cfg.train.precision = "fp32"
    cfg.parallel.strategy = "none"
    cfg.checkpoint.save_iter = 100
    cfg.checkpoint.keep_last = 2
    cfg.logging.every = 10
    # The end-to-end story a new user sees: scores before and after, videos, a loss curve.
    cfg.hooks.eval = L("framework.eval.EvalHook")(num_items=4, num_steps=15, guidance=0.0)
    cfg.hooks.sample = L("framework.inference.sample_hook.SampleVideos")(
        every=150, num_items=2, num_steps=15, guidance=0.0
    )
    cfg.hooks.loss_curve = L("framework.inference.plots.LossCurveHook")()
    return cfg
