"""Sizes that must fit together, checked before anything is built (issue #26 item 9): without
this a wrong video size, frame count, `model.state_t`, `num_heads` or schedule list ends in a
traceback from inside the net, the tokenizer or the first step.

Constraints (each from the code that would otherwise fail):
- heads: `model.net.model_channels` divisible by `model.net.num_heads` (the nets' head_dim);
- video size: height and width multiples of the tokenizer's spatial compression times the net's
  `patch_spatial` (tokenizer `_check_video`, net `_check_latent`), and the patched latent grid
  within the net's RoPE limits `max_img_h/max_img_w` (dit/rope.py);
- frames: `data.dataset.num_frames` >= the tokenizer's `pixel_frames(model.state_t)` (the model
  crops that many from each clip), `model.state_t` a multiple of `patch_temporal` and within
  `max_frames`;
- schedule (`sched.*` of LambdaLinear): lists of one length, cycle lengths > 0, warm-up in
  [0, cycle length).
The net's values are the node's, else its class's defaults (read from the constructors of its
class and their bases by import, not by building); the tokenizer's compression is what its class
says from the node (`compression_for`); a class that says nothing skips those checks.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from framework.config import ConfigError

NET_KEYS = (
    "model_channels",
    "num_heads",
    "patch_spatial",
    "patch_temporal",
    "max_img_h",
    "max_img_w",
    "max_frames",
)
SCHED_LISTS = ("warm_up_steps", "cycle_lengths", "f_start", "f_max", "f_min")


def _class_defaults(target: Any) -> dict[str, Any]:
    """Defaults of the constructors of `target` (a class: also its bases, for subclasses that
    pass **kwargs on) for NET_KEYS; {} when it cannot be imported."""
    from framework.config.lazy import locate

    try:
        obj = locate(target) if isinstance(target, str) else None
    except Exception:  # noqa: BLE001  (building the model reports an unimportable target)
        return {}
    out: dict[str, Any] = {}
    for fn in [c.__init__ for c in obj.__mro__] if isinstance(obj, type) else [obj]:
        try:
            params = inspect.signature(fn).parameters
        except (TypeError, ValueError):
            continue
        for k in NET_KEYS:
            if k in params and k not in out and params[k].default is not inspect.Parameter.empty:
                out[k] = params[k].default
    return out


def _plain(node: Any) -> Any:
    """A plain dict of `node`; None when an interpolation in it does not resolve (the build
    reports that)."""
    try:
        return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node
    except OmegaConfBaseException:
        return None


def _net(value: Callable[[str], Any], absent: object) -> dict[str, Any]:
    node = value("model.net")
    if not isinstance(node, DictConfig):
        return {}
    net = _class_defaults(node.get("_target_"))
    for k in NET_KEYS:
        v = value(f"model.net.{k}")
        if v is not absent:
            net[k] = v
    return {k: v for k, v in net.items() if isinstance(v, int) and not isinstance(v, bool)}


def _divisors(n: int) -> str:
    return ", ".join(str(d) for d in range(1, n + 1) if n % d == 0 and d <= 64)


def _check_heads(net: dict[str, Any]) -> None:
    width, heads = net.get("model_channels"), net.get("num_heads")
    if width and heads and (heads < 1 or width % heads):
        raise ConfigError(
            f"model.net.num_heads={heads} does not divide model.net.model_channels={width} "
            f"(each head gets model_channels / num_heads channels): use one of {_divisors(width)}."
        )


def _check_video_size(size: list[int], s: int, net: dict[str, Any]) -> None:
    p = net.get("patch_spatial", 1)
    unit = s * p
    if size[0] % unit or size[1] % unit:
        near = [-(-v // unit) * unit for v in size]  # the next multiples up
        raise ConfigError(
            f"data.dataset.video_size={size} is not allowed: height and width must be multiples "
            f"of {unit} (the tokenizer's spatial compression {s} times model.net.patch_spatial="
            f"{p}); use e.g. data.dataset.video_size=[{near[0]},{near[1]}]."
        )
    for axis, name, v in (("h", "height", size[0]), ("w", "width", size[1])):
        limit = net.get(f"max_img_{axis}")
        if limit and (v // s) // p > limit // p:
            raise ConfigError(
                f"data.dataset.video_size={size} gives a latent {name} of {v // s}, over "
                f"model.net.max_img_{axis}={limit} (the net's position "
                f"limit); use a video size up to {limit * s} or raise model.net.max_img_{axis}."
            )


def _check_frames(num_frames: Any, state_t: int, t: int, net: dict[str, Any]) -> None:
    pt = net.get("patch_temporal", 1)
    if state_t % pt:
        raise ConfigError(
            f"model.state_t={state_t} is not a multiple of model.net.patch_temporal={pt}; "
            f"use model.state_t={max(pt, state_t // pt * pt)}."
        )
    limit = net.get("max_frames")
    if limit and state_t // pt > limit // pt:
        raise ConfigError(
            f"model.state_t={state_t} is over model.net.max_frames={limit} (the net's position "
            f"limit); use model.state_t<={limit} or raise model.net.max_frames."
        )
    need = t * (state_t - 1) + 1  # the tokenizers' pixel_frames(state_t)
    if isinstance(num_frames, int) and num_frames < need:
        fits = 1 + (num_frames - 1) // t if num_frames >= 1 else 0
        other = f" or model.state_t={fits}" if fits >= 1 else ""
        raise ConfigError(
            f"data.dataset.num_frames={num_frames} is too few for model.state_t={state_t}: the "
            f"tokenizer (temporal compression {t}) makes {state_t} latent frames from {need} "
            f"frames; use data.dataset.num_frames={need}{other}."
        )


def _check_schedule(sched: Any) -> None:
    if not isinstance(sched, dict) or not all(k in sched for k in SCHED_LISTS):
        return
    lists = {k: sched[k] for k in SCHED_LISTS}
    if any(not isinstance(v, list) or not v for v in lists.values()):
        bad = next(k for k, v in lists.items() if not isinstance(v, list) or not v)
        raise ConfigError(
            f"sched.{bad}={lists[bad]!r} is not allowed: use a list with one value per cycle."
        )
    if len({len(v) for v in lists.values()}) != 1:
        lens = ", ".join(f"{k} has {len(v)}" for k, v in lists.items())
        raise ConfigError(
            f"the schedule's lists differ in length ({lens}): give every sched.* list one value "
            "per cycle."
        )
    for i, (w, n) in enumerate(zip(lists["warm_up_steps"], lists["cycle_lengths"])):
        if not isinstance(n, int) or n < 1:
            raise ConfigError(
                f"sched.cycle_lengths={lists['cycle_lengths']} is not allowed: every cycle "
                "length must be an integer >= 1."
            )
        if not isinstance(w, int) or not 0 <= w < n:
            raise ConfigError(
                f"sched.warm_up_steps={lists['warm_up_steps']} is not allowed: cycle {i}'s "
                f"warm-up must be an integer in [0, {n}) (its cycle length)."
            )


def check_shapes(cfg: DictConfig, value: Callable[[str], Any], absent: object) -> None:
    """Raise ConfigError for the first size that does not fit; `value(key)` reads the config
    (`absent` for a key it does not have)."""
    _check_schedule(_plain(value("sched")))
    net = _net(value, absent)
    _check_heads(net)
    tok = value("model.tokenizer")
    if not isinstance(tok, DictConfig):
        return
    from framework.models.tokenizers import config_compression

    compression = config_compression(_plain(tok))
    if compression is None:
        return
    s, t = compression
    size = value("data.dataset.video_size")
    if isinstance(size, list) and len(size) == 2:
        _check_video_size(size, s, net)
    state_t = value("model.state_t")
    if isinstance(state_t, int) and state_t >= 1:
        _check_frames(value("data.dataset.num_frames"), state_t, t, net)
