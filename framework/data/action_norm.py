"""Per-dimension action (and state) normalization, and the statistics it needs.

Modes, each as its upstream defines it:
  "min_max"  2 (x - min) / (max - min) - 1, into [-1, 1]; 0 where max == min. GR00T's mode for the
             state and action of every embodiment config (`StateActionTransform`,
             normalization_modes "min_max"), LeRobot's MIN_MAX; stats from meta/stats.json.
  "q01_q99"  the same with the 1st/99th percentiles, clipped to [-1, 1] (GR00T "q99", pi0).
  "mean_std" (x - mean) / std (LeRobot's MEAN_STD; std floored at 1e-8).
  "scale"    x * scale, a fixed per-dimension factor and no statistics: the Cosmos
             action-conditioned Bridge recipe ([20]*6 + [1], docs/upstream specs, Predict2.5 §6.3).
  "none"     unchanged.

`ActionNorm.describe()` is what a dataset exposes, so inference can normalize an actions file the
same way training did.
"""

from __future__ import annotations

from typing import Any

import numpy as np

MODES = ("min_max", "q01_q99", "mean_std", "scale", "none")
NEEDS = {"min_max": ("min", "max"), "q01_q99": ("q01", "q99"), "mean_std": ("mean", "std")}


def feature_stats(values: np.ndarray) -> dict[str, list]:
    """{min, max, mean, std, count, q01, q99} per dimension of [N, D] values, as JSON lists (the
    meta/stats.json entry of LeRobot, with GR00T's q01/q99)."""
    x = np.asarray(values, dtype=np.float64).reshape(len(values), -1)
    if not len(x):
        raise ValueError("cannot compute statistics of zero rows")
    return {
        "min": x.min(0).tolist(),
        "max": x.max(0).tolist(),
        "mean": x.mean(0).tolist(),
        "std": x.std(0).tolist(),
        "count": [int(len(x))],
        "q01": np.quantile(x, 0.01, axis=0).tolist(),
        "q99": np.quantile(x, 0.99, axis=0).tolist(),
    }


class ActionNorm:
    """Normalize [..., D] float arrays per dimension; see the module docstring for the modes."""

    def __init__(
        self, mode: str, stats: dict[str, Any] | None = None, scale: list[float] | None = None
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"action normalization {mode!r} is unknown; use one of {MODES}")
        self.mode = mode
        self.stats = {
            k: np.asarray(v, dtype=np.float64).reshape(-1) for k, v in (stats or {}).items()
        }
        missing = [k for k in NEEDS.get(mode, ()) if k not in self.stats]
        if missing:
            raise ValueError(f"action normalization {mode!r} needs the statistics {missing}")
        if mode == "scale" and scale is None:
            raise ValueError("action normalization 'scale' needs a per-dimension scale list")
        self.scale = None if scale is None else np.asarray(scale, dtype=np.float64)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if self.mode == "none":
            out = x
        elif self.mode == "scale":
            out = x * self.scale
        elif self.mode == "mean_std":
            out = (x - self.stats["mean"]) / np.maximum(self.stats["std"], 1e-8)
        else:
            lo, hi = (self.stats[k] for k in NEEDS[self.mode])
            span = hi - lo
            out = np.where(span > 0, 2 * (x - lo) / np.where(span > 0, span, 1.0) - 1, 0.0)
            if self.mode == "q01_q99":
                out = np.clip(out, -1.0, 1.0)
        return out.astype(np.float32)

    def describe(self) -> dict[str, Any]:
        """JSON-able mode and numbers: what inference must apply to raw actions."""
        out: dict[str, Any] = {"mode": self.mode}
        if self.scale is not None:
            out["scale"] = self.scale.tolist()
        for k in NEEDS.get(self.mode, ()):
            out[k] = self.stats[k].tolist()
        return out
