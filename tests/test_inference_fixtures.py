"""Shared builders for the inference and evaluation tests (no tests here): a small synthetic
dataset with a val/ split and a small T5, a tiny Predict2 config on it, and a job folder holding
a random checkpoint of that config, laid out as the trainer writes it."""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from experiments import blocks
from framework.config import L, instantiate, to_yaml

SIZE, STATE_T, SPATIAL = 32, 3, 4  # 32x32 frames, 3 latent = 3 pixel frames, 48 latent channels


def make_dataset(root: Path) -> Path:
    from data_prep.synthetic import generate

    return generate(root, num_videos=1, num_frames=9, size=SIZE, num_val=2)


def tiny_config(data_dir: Path, output_root: Path, name: str = "tiny_test") -> DictConfig:
    channels = 3 * SPATIAL * SPATIAL
    net = L("framework.models.cosmos2.net.MiniTrainDiT")(
        model_channels=64,
        num_blocks=2,
        num_heads=2,
        in_channels=channels,
        out_channels=channels,
        adaln_lora_dim=16,
    )
    tok = L("framework.models.tokenizers.PixelTokenizer")(spatial=SPATIAL)
    encoder = str(data_dir / "text_encoder")
    model = blocks.predict2_model(net, tok, state_t=STATE_T, text_encoder=encoder)
    model.fps = 8.0
    dataset = L("framework.data.dataset.VideoDataset")(
        dataset_dir=str(data_dir), num_frames=STATE_T, video_size=[SIZE, SIZE]
    )
    cfg = blocks.base(model, blocks.loader(dataset, num_workers=0), group="test")
    cfg.job.name = name
    cfg.job.output_root = str(output_root)
    return cfg


def random_state(cfg: DictConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    net = instantiate(OmegaConf.create(OmegaConf.to_container(cfg.model.net)))
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def write_job(cfg: DictConfig, step: int = 2, ema: bool = True) -> Path:
    """<output_root>/<project>/<group>/<name> with config.yaml, model/iter_N.pt (net. and, with
    ema, net_ema. keys from another seed) and latest_checkpoint.txt; returns the model file."""
    from framework.inference.loading import job_dir

    job = job_dir(cfg)
    model_dir = job / "checkpoints" / "model"
    model_dir.mkdir(parents=True, exist_ok=True)
    (job / "config.yaml").write_text(to_yaml(cfg, resolve=True))
    sd = {f"net.{k}": v for k, v in random_state(cfg, 0).items()}
    if ema:
        sd.update({f"net_ema.{k}": v for k, v in random_state(cfg, 1).items()})
    path = model_dir / f"iter_{step:09d}.pt"
    torch.save(sd, path)
    (job / "checkpoints" / "latest_checkpoint.txt").write_text(path.name + "\n")
    return path


def decode(path: Path) -> tuple[int, int, int, float]:
    """(frames, height, width, fps) of an mp4, decoded with PyAV."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        fps = float(stream.average_rate)
    h, w = frames[0].shape[:2]
    return len(frames), h, w, fps
