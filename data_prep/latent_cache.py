"""Encode every training clip once with an experiment's frozen tokenizer and store the latents.

    python -m data_prep.latent_cache groot_gr1_480 --output datasets/benchmark_train/gr1/latents
    python -m data_prep.latent_cache --tokenizer mypkg.make_tokenizer --dataset_dir DIR \
        --num_frames 93 --video_size 432 768 --output DIR/latents

Train from it with `data.dataset.latent_cache_dir=<output>`: samples then carry `latent` instead
of `video` and the model skips the encode. Windows: one every `--window_stride` frames (default
4; 1 = every start, upstream's sampling) or `--windows_per_video N` evenly spaced; training draws
one at random per sample. A tqdm bar counts videos and windows; re-running the same command
encodes exactly the windows the current videos lack (after a kill, a deleted shard, a replaced
video). Format (keyed by each video's content) and the choice of windows:
framework/data/latent_cache.py.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any

import torch

from data_prep.common import UserError, cli
from framework.config import ConfigError
from framework.data.dataset import VideoDataset
from framework.data.latent_cache import build_latent_cache


def from_experiment(name: str, overrides: list[str]) -> tuple[VideoDataset, Any]:
    """The experiment's dataset (without a cache) and its tokenizer."""
    from framework.config import registry
    from framework.config.overrides import apply_overrides

    registry.load_all()
    cfg = apply_overrides(registry.get(name), overrides)
    return from_config(cfg)


def from_config(cfg: Any) -> tuple[VideoDataset, Any]:
    from framework.config.lazy import instantiate

    data_cfg = cfg.data.dataset.copy()
    if "latent_cache_dir" in data_cfg:
        data_cfg.latent_cache_dir = None  # read videos, not an older cache
    dataset = instantiate(data_cfg)
    if "tokenizer" in cfg.model:  # build only the tokenizer, not a multi-billion-parameter net
        return dataset, instantiate(cfg.model.tokenizer)
    return dataset, instantiate(cfg.model).tokenizer


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m data_prep.latent_cache",
        description="Encode each clip of a dataset once with a frozen tokenizer (an experiment's, "
        "or any factory returning an object with .encode(video) and .identity) into "
        "safetensors shards. Re-running skips clips already stored.",
    )
    p.add_argument("experiment", nargs="?", help="registered experiment name")
    p.add_argument("overrides", nargs="*", help="KEY=VALUE overrides for the experiment")
    p.add_argument("--output", required=True, help="cache folder to write")
    p.add_argument(
        "--tokenizer",
        help="dotted path of a factory returning the tokenizer (instead of an experiment)",
    )
    p.add_argument("--dataset_dir", help="GR1-layout folder (with --tokenizer)")
    p.add_argument("--num_frames", type=int, default=93)
    p.add_argument("--video_size", type=int, nargs=2, default=[432, 768], metavar=("H", "W"))
    p.add_argument("--frame_stride", type=int, default=1)
    p.add_argument("--resize_mode", default="resize", choices=["resize", "center_crop"])
    windows = p.add_mutually_exclusive_group()
    windows.add_argument(
        "--window_stride",
        type=int,
        default=4,
        help="encode the window starting every N frames, and the last one (default 4: one Wan "
        "latent frame; 1 = every start, as upstream samples); training picks one at random",
    )
    windows.add_argument(
        "--windows_per_video",
        type=int,
        default=None,
        help="instead: N evenly spaced windows per video (1 = the clip starting at frame 0)",
    )
    p.add_argument("--shard_size", type=int, default=32, help="clips per shard file")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument(
        "--store_dtype",
        default=None,
        choices=["float32", "bfloat16", "float16"],
        help="dtype on disk (default: what the tokenizer returns)",
    )
    a = p.parse_args(argv)
    command = shlex.join(
        ["python", "-m", "data_prep.latent_cache", *(sys.argv[1:] if argv is None else argv)]
    )
    if a.tokenizer:
        from framework.config.lazy import locate

        if not a.dataset_dir:
            p.error("--tokenizer needs --dataset_dir")
        dataset = VideoDataset(
            a.dataset_dir, a.num_frames, tuple(a.video_size), a.resize_mode, a.frame_stride
        )
        tokenizer = locate(a.tokenizer)()
    elif a.experiment:
        dataset, tokenizer = from_experiment(a.experiment, a.overrides)
    else:
        p.error("give an experiment name or --tokenizer")
    if hasattr(tokenizer, "to"):
        tokenizer = tokenizer.to(a.device)
    dtype = getattr(torch, a.store_dtype) if a.store_dtype else None
    stride = None if a.windows_per_video else a.window_stride
    out = build_latent_cache(
        dataset,
        tokenizer,
        a.output,
        a.windows_per_video or 1,
        a.shard_size,
        a.device,
        dtype,
        window_stride=stride,
        command=command,
    )
    print(f"latent cache at {Path(out)}")


@cli
def command(argv: list[str] | None = None) -> None:
    """`main` as the command line runs it: a refusal (a damaged shard, a cache of other
    settings) is one line `error: ...`, exit 2."""
    try:
        main(argv)
    except ConfigError as err:
        raise UserError(str(err).rstrip(".")) from None


if __name__ == "__main__":
    sys.exit(command())
