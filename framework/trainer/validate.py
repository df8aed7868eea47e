"""Every key of a run's config that has a domain, checked in one place before anything is built
or written: one line naming the key, the value and what is allowed (exit 2 from launch.train).

Keys a config does not have are skipped (a toy model has no `model.state_t`); types were already
checked by the override parser against the experiment's values. Then the sizes that must fit
together (`check_shapes`): video size, frame count, `model.state_t`, heads and the schedule's
lists, against the net's patch sizes and the tokenizer's compression, both read from the config
without building anything (framework/models/tokenizers.py `config_compression`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from framework.config import ConfigError
from framework.trainer.ema import MAX_RATE
from framework.trainer.validate_shapes import check_shapes

_ABSENT = object()
# One folder name: letters, digits and . _ - + = , @ (no separators, no "..", not empty).
_COMPONENT = re.compile(r"^(?!\.{1,2}$)[A-Za-z0-9._+=,@-]+$")


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def one_of(*choices: Any) -> tuple[Callable[[Any], bool], str]:
    return (lambda v: v in choices), f"one of {', '.join(map(str, choices))}"


def at_least(low: float, integer: bool = True, none_ok: bool = False) -> tuple[Callable, str]:
    kind = "an integer" if integer else "a number"

    def ok(v: Any) -> bool:
        if v is None:
            return none_ok
        return _number(v) and (not integer or isinstance(v, int)) and v >= low

    return ok, f"{kind} >= {low:g}" + (" or null" if none_ok else "")


def positive(integer: bool = False) -> tuple[Callable, str]:
    return (lambda v: _number(v) and v > 0 and (not integer or isinstance(v, int))), (
        "an integer > 0" if integer else "a number > 0"
    )


def fraction() -> tuple[Callable, str]:
    return (lambda v: _number(v) and 0 <= v <= 1), "a number in [0, 1]"


def path_component() -> tuple[Callable, str]:
    return (lambda v: isinstance(v, str) and bool(_COMPONENT.match(v))), (
        "a single folder name (letters, digits, . _ - + = , @; no '/' and not '..')"
    )


def betas() -> tuple[Callable, str]:
    return (
        lambda v: (
            isinstance(v, (list, tuple))
            and len(v) == 2
            and all(_number(b) and 0 <= b < 1 for b in v)
        ),
        "two numbers in [0, 1), e.g. [0.9,0.99]",
    )


RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "job.project": path_component(),
    "job.group": path_component(),
    "job.name": path_component(),
    "train.max_steps": at_least(0),
    "train.grad_accum": at_least(1),
    "train.grad_clip": at_least(0, integer=False, none_ok=True),
    "train.precision": one_of("bf16", "fp32"),
    "train.seed": at_least(0),
    "train.deterministic": one_of(True, False),
    "train.ema.enabled": one_of(True, False),
    # EDM2's power EMA has an exponent >= 0 only for relative widths up to 1/sqrt(12).
    "train.ema.rate": (
        lambda v: _number(v) and 0 < v <= MAX_RATE,
        f"a number in (0, {MAX_RATE:.4f}] (the power EMA's relative width; upstream uses 0.1)",
    ),
    "train.max_nonfinite_steps": at_least(0),
    "data.batch_size": at_least(1),
    "data.num_workers": at_least(0),
    "data.prefetch_factor": at_least(1, none_ok=True),
    "data.dataset.max_bad_fraction": fraction(),
    "optim.lr": positive(),
    "optim.weight_decay": at_least(0, integer=False),
    "optim.eps": positive(),
    "optim.betas": betas(),
    "optim.master_weights": one_of(True, False),
    "parallel.strategy": one_of("none", "ddp", "fsdp"),
    "parallel.shard_size": (
        lambda v: v in (None, -1) or (isinstance(v, int) and v >= 1),
        "-1 (all processes), null, or an integer >= 1",
    ),
    "parallel.context_parallel": at_least(1),
    "parallel.activation_checkpointing": one_of("none", "full", "selective"),
    "parallel.compile": one_of(True, False),
    "checkpoint.save_iter": at_least(0),
    "checkpoint.keep_last": at_least(0),
    "checkpoint.load_ema": one_of(True, False),
    "checkpoint.format": one_of("pt", "dcp"),
    "checkpoint.staging_buffers": at_least(1),
    "checkpoint.writer_threads": at_least(1),
    "logging.every": at_least(1),
    "logging.wandb.mode": one_of("disabled", "online", "offline"),
    "model.state_t": at_least(1),
    "model.max_text_tokens": at_least(1),
    "model.fps": positive(),
    "model.objective.text_dropout": fraction(),
    "data.dataset.num_frames": at_least(1),
    "data.dataset.frame_stride": at_least(1),
}


def _value(cfg: DictConfig, key: str) -> Any:
    try:
        value = OmegaConf.select(cfg, key, default=_ABSENT, throw_on_missing=False)
    except OmegaConfBaseException as err:  # an interpolation that does not resolve
        raise ConfigError(f"{key}: {str(err).splitlines()[0]}; fix the value.") from None
    if isinstance(value, DictConfig | type(None)) or value is _ABSENT:
        return value
    return OmegaConf.to_container(value) if OmegaConf.is_config(value) else value


def validate(cfg: DictConfig) -> DictConfig:
    """Raise ConfigError for the first key outside its domain; return `cfg` unchanged."""
    for key, (ok, allowed) in RULES.items():
        value = _value(cfg, key)
        if value is _ABSENT:
            continue
        if not ok(value):
            raise ConfigError(f"{key}={value!r} is not allowed: use {allowed}.")
    if _value(cfg, "optim.master_weights") is True:
        if _value(cfg, "train.precision") != "bf16":
            raise ConfigError(
                "optim.master_weights=true keeps bf16 weights and needs train.precision=bf16; "
                "set it or drop optim.master_weights."
            )
        if _value(cfg, "parallel.strategy") == "fsdp":
            raise ConfigError(
                "optim.master_weights=true does not work with parallel.strategy=fsdp (FSDP "
                "already keeps fp32 sharded weights and computes in bf16); use "
                "parallel.strategy=none or ddp, or drop optim.master_weights."
            )
    size = _value(cfg, "data.dataset.video_size")
    if (
        size is not _ABSENT
        and size is not None
        and not (
            isinstance(size, list)
            and len(size) == 2
            and all(isinstance(v, int) and v > 0 for v in size)
        )
    ):
        raise ConfigError(
            f"data.dataset.video_size={size!r} is not allowed: use [H,W], e.g. [432,768]."
        )
    check_shapes(cfg, lambda key: _value(cfg, key), _ABSENT)
    return cfg
