"""Score one model on an eval set: generate each item with each seed, apply the metrics, put a
95% interval over items on every number (framework/evaluation/stats.py)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from framework.data.heldout import HeldOutItem
from framework.evaluation.evalset import EvalSpec
from framework.evaluation.metrics import Metric, Videos
from framework.evaluation.stats import interval


def better_of(metrics: list[Metric]) -> dict[str, str]:
    out: dict[str, str] = {}
    for m in metrics:
        out.update(m.better)
    return out


@torch.no_grad()
def score_model(
    model: Any,
    items: list[HeldOutItem],
    spec: EvalSpec,
    metrics: list[Metric],
    on_video: Callable[[HeldOutItem, int, torch.Tensor], None] | None = None,
) -> dict[str, Any]:
    """Per-item rows (values averaged over seeds, each seed's kept), the mean of every value
    at the top level, `intervals` per value, and the set metrics' numbers. `on_video(item,
    seed, video)` sees every generated uint8 [1,3,T,H,W] video (the report saves them)."""
    n = spec.num_conditional_frames
    tok = model.tokenizer
    dev = model._device()
    skip = tok.latent_frames(n)

    def encode(video: torch.Tensor) -> torch.Tensor:
        return tok.encode(video.to(dev)).float().cpu()

    per_item = [m for m in metrics if m.per_item]
    per_set = [m for m in metrics if not m.per_item]
    for m in per_set:
        m.reset()
    rows = []
    for item in items:
        truth = item.video
        seeds = []
        for seed in spec.seeds:
            video = model.generate(
                truth[:, :, :n],
                item.text,
                None,
                num_conditional_frames=n,
                guidance=spec.guidance,
                num_steps=spec.num_steps,
                seed=seed,
                fps=item.fps,
                conditions=item.conditions,
            ).cpu()
            v = Videos(
                name=item.name,
                prompt=item.prompt,
                fps=item.fps,
                pred=video[:, :, n:],
                truth=truth[:, :, n:],
                still=truth[:, :, n - 1 : n].expand_as(truth[:, :, n:]),
                full_pred=video,
                full_truth=truth,
                encode=encode,
                skip_latent=skip,
            )
            values: dict[str, float] = {}
            for m in per_item:
                values.update(m.item(v))
            for m in per_set:
                m.add(v)
            seeds.append({"seed": seed, **values})
            if on_video is not None:
                on_video(item, seed, video)
        keys = [k for k in seeds[0] if k != "seed"]
        rows.append(
            {"name": item.name, **{k: _mean([s[k] for s in seeds]) for k in keys}, "seeds": seeds}
        )
    keys = [k for k in rows[0] if k not in ("name", "seeds")] if rows else []
    intervals = {k: interval([r[k] for r in rows]) for k in keys}
    set_values: dict[str, float] = {}
    for m in per_set:
        set_values.update(m.result())
    return {
        **{k: intervals[k]["mean"] for k in keys},
        **set_values,
        "intervals": intervals,
        "set_metrics": set_values,
        "better": better_of(metrics),
        "num_items": len(rows),
        "num_steps": spec.num_steps,
        "seed": spec.seeds[0],
        "seeds": list(spec.seeds),
        "guidance": spec.guidance,
        "num_conditional_frames": n,
        "items": rows,
    }


def _mean(values: list[float]) -> float:
    return float(sum(values) / len(values)) if values else math.nan
