"""From command-line choices to a ready model: which config, which checkpoint, which weights.

Config: a checkpoint inside a job folder (`<job>/checkpoints/model/iter_N.pt`, or the sharded
folder `<job>/checkpoints/optim/iter_N/` of `checkpoint.format=dcp`) brings the job's
`config.yaml`; otherwise (or when `--experiment` is given explicitly) the registered experiment.
Overrides apply on top. Checkpoint: the one given; else the experiment job's latest; else the
experiment's `checkpoint.load_path`. Weights: the model's `load_weights` (`net.*` or the EMA
copy, extra modules, LoRA adapters folded in; an adapters-only LoRA file takes its base from
the job's `checkpoint.load_path`), so inference always runs a plain net.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from framework import jobs
from framework.config import ConfigError, apply_overrides, from_yaml, get, instantiate, load_all
from framework.config.registry import alias_note
from framework.config.trust import check_targets
from framework.io import read_checkpoint
from framework.models.hub import download_hint

# `--trust_config`: the commands that rebuild a model from a job folder's config.yaml.
TRUST_CONFIG_ARG = ("--trust_config",)
TRUST_CONFIG_KW = dict(
    action="store_true",
    help="instantiate any _target_ the job's config.yaml names (default: only this project's, "
    "torch's, diffusers', transformers' and --module packages')",
)


def job_dir(cfg: DictConfig) -> Path:
    """`<output_root>/<project>/<group>/<name>` of a config: where the trainer wrote it."""
    return jobs.job_dir_of(cfg)


job_dir_of_checkpoint = jobs.job_of_checkpoint
sharded_twin = jobs.sharded_twin
latest_checkpoint = jobs.latest_model


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """A model state dict from a `.pt` file or a format=dcp folder (gathered in this process)."""
    path = Path(path)
    if path.is_dir() or not path.exists():
        folder = sharded_twin(path)
        if folder is not None:
            from framework.trainer.checkpoint_dcp import read_model_state

            return read_model_state(folder)
        if path.is_dir():
            raise FileNotFoundError(
                f"{path} is a folder but not a checkpoint (no .metadata); pass a model/iter_N.pt "
                "file or a checkpoints/optim/iter_N folder."
            )
    return read_checkpoint(path)


def require_file(path: str | Path, what: str) -> Path:
    path = Path(path)
    if not path.exists() and sharded_twin(path) is not None:
        return sharded_twin(path)
    if not path.exists():
        raise FileNotFoundError(f"{what} {path} does not exist; {download_hint(path)}.")
    return path


def resolve(
    experiment: str | None,
    overrides: list[str],
    checkpoint: str | None,
    default_experiment: str = "tiny_gr1",
    modules: list[str] = (),
    trust_config: bool = False,
) -> tuple[DictConfig, Path]:
    """(config, checkpoint path) following the module docstring's order. A job folder's
    config.yaml names only allowed `_target_`s unless `trust_config` (framework/config/trust.py)."""
    job = jobs.job_of_checkpoint(checkpoint) if checkpoint else None
    if job is not None and experiment is None:
        cfg = from_yaml(job / jobs.CONFIG)
        if not trust_config:
            check_targets(cfg, str(job / jobs.CONFIG), modules)
        OmegaConf.set_struct(cfg, True)  # so a mistyped override fails, as for experiments
    elif checkpoint and experiment is None:
        raise ConfigError(
            f"{checkpoint} is not in a job folder with config.yaml, so the model "
            "cannot be rebuilt from it; pass --experiment NAME as well."
        )
    else:
        load_all(modules)
        if experiment and alias_note(experiment):
            print(alias_note(experiment), file=sys.stderr)
        cfg = get(experiment or default_experiment)
    apply_overrides(cfg, overrides)
    if checkpoint:
        return cfg, require_file(checkpoint, "Checkpoint")
    latest = jobs.latest_model(job_dir(cfg))
    if latest is not None:
        return cfg, latest
    load_path = cfg.checkpoint.get("load_path") if "checkpoint" in cfg else None
    if load_path:
        return cfg, require_file(load_path, "Checkpoint")
    raise ConfigError(
        f"experiment {cfg.job.name} has no trained checkpoint in {job_dir(cfg)}; "
        f"train it first (make train EXP={cfg.job.name}) or pass --checkpoint."
    )


def check_guidance(guidance: float | None) -> None:
    """A guidance weight must be a number: NaN or Inf turn every pixel into NaN (None: the
    command's default)."""
    if guidance is not None and not math.isfinite(guidance):
        raise ConfigError(
            f"--guidance {guidance} is not a finite number; pass e.g. --guidance 7 (0 turns "
            "guidance off)."
        )


def warn_unguidable(cfg: DictConfig, guidance: float) -> None:
    """Warn when guidance > 0 is asked of a model trained without caption dropout: it never
    learned the caption-free prediction that classifier-free guidance pushes away from, so the
    result is garbage (tiny_gr1 at the default 7 turns the scene blue)."""
    objective = cfg.model.get("objective") or {}
    if guidance != 0 and float(objective.get("text_dropout", 0.2)) == 0:
        print(
            f"warning: --guidance {guidance:g} on a model trained with "
            "model.objective.text_dropout=0 "
            "(no caption-free training) gives broken videos; pass --guidance 0.",
            file=sys.stderr,
        )


def default_device() -> torch.device:
    if torch.cuda.is_available():
        from framework.trainer.dist import local_rank

        return torch.device("cuda", local_rank())
    return torch.device("cpu")


def build_model(
    cfg: DictConfig,
    checkpoint: str | Path | None,
    load_ema: bool = False,
    device: torch.device | str | None = None,
    compile: bool = False,
    fp8: bool = False,
) -> torch.nn.Module:
    """The configured model with the checkpoint's weights, in eval mode on `device`.

    The net is built on the meta device and the weights are assigned, so a 14B model never
    exists twice in memory. A LoRA run's adapters are folded into the weights, so the built model
    has none. On CUDA the net runs in bf16 (as upstream inference); on the CPU in float32.
    `compile`: per-block torch.compile of the net (the first generation pays for compiling).
    `fp8`: the net's token-wise linear layers as FP8 matmuls (framework/models/fp8.py).
    """
    device = torch.device(device) if device is not None else default_device()
    model_cfg = OmegaConf.create(OmegaConf.to_container(cfg.model, resolve=True))
    lora = model_cfg.get("lora")
    lora = OmegaConf.to_container(lora) if lora else None
    if "lora" in model_cfg:
        model_cfg.lora = None
    net_cfg = model_cfg.pop("net")
    if checkpoint is None:
        net = instantiate(net_cfg)  # random weights: tests and smoke runs
    else:
        with torch.device("meta"):
            net = instantiate(net_cfg)
    model = instantiate(model_cfg, net=net)
    if checkpoint is not None:
        try:
            model.load_weights(
                lora_complete(read_weights(checkpoint), checkpoint),
                ema=load_ema,
                merge_lora=lora,
                assign=True,
            )
        except (ValueError, RuntimeError) as err:
            detail = " ".join(str(err).split())[:300]
            raise ValueError(
                f"Checkpoint {checkpoint} does not match the configured model ({detail})"
            ) from None
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model.to(device=device, dtype=dtype)
    model.eval().requires_grad_(False)
    if fp8:
        from framework.models.fp8 import check_fp8_device, to_fp8_

        check_fp8_device(device)
        to_fp8_(model.net)
    if compile:
        model.compile_for_inference()
    return model


def lora_complete(sd: dict[str, torch.Tensor], checkpoint: str | Path) -> dict[str, torch.Tensor]:
    """An adapters-only LoRA checkpoint with its base added from the job's
    `checkpoint.load_path` (framework/models/lora_files.py); any other state dict unchanged."""
    from framework.models import lora_files

    if not lora_files.is_adapter_only(sd):
        return sd
    job = jobs.job_of_checkpoint(checkpoint)
    if job is None:
        raise ConfigError(
            f"{checkpoint} holds LoRA adapters only and is not in a job folder, so its base "
            "model is unknown; pass the job's checkpoint file."
        )
    return lora_files.with_base(sd, read_checkpoint(lora_files.base_path_of_job(job)))


def text_encoder_path(enc: object) -> str | None:
    """A text encoder folder (a config's `model.text_encoder`), checked to exist; None when
    `enc` is not a path."""
    if not isinstance(enc, (str, Path)):
        return None
    from framework.models.text import resolve_t5_dir

    try:
        return str(resolve_t5_dir(enc))
    except FileNotFoundError:
        hint = download_hint(enc)
        raise FileNotFoundError(f"Text encoder {enc} does not exist; {hint}.") from None
