"""Loss curve of a job: `<job_dir>/metrics.jsonl` -> `<job_dir>/loss_curve.png`.

    python -m framework.inference.plots JOB_DIR

Plots every logged `loss` (and each `*_loss` a model logs, e.g. `edm_loss`) against its step,
with a smoothed line, on a log scale when the values span more than a factor of 10. Lines
without the key (e.g. eval or sample records) are skipped.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

from framework.trainer.metrics import read_metrics


def series(records: list[dict], key: str) -> tuple[list[int], list[float]]:
    """(steps, values) of one key; a resumed run's repeated steps keep the latest value."""
    points: dict[int, float] = {}
    for r in records:
        value = r.get(key)
        if isinstance(value, (int, float)) and math.isfinite(value) and "step" in r:
            points[int(r["step"])] = float(value)
    steps = sorted(points)
    return steps, [points[s] for s in steps]


def smooth(values: list[float], fraction: float = 0.05) -> list[float]:
    """Centred moving average over ~`fraction` of the points (shorter at the ends).

    Centred, unlike TensorBoard's exponential average, which trails a falling loss from above.
    Positive series are averaged in log space (a geometric mean), matching the log axis used for
    losses that fall by orders of magnitude.
    """
    if not values:
        return []
    half = max(1, round(len(values) * fraction / 2))
    logs = all(v > 0 for v in values)
    xs = [math.log(v) for v in values] if logs else list(values)
    out = []
    for i in range(len(xs)):
        window = xs[max(0, i - half) : i + half + 1]
        mean = sum(window) / len(window)
        out.append(math.exp(mean) if logs else mean)
    return out


def plot_loss_curve(job_dir: str | Path) -> Path:
    """Write `<job_dir>/loss_curve.png` and return its path."""
    import matplotlib

    matplotlib.use("Agg")  # no display on training nodes
    import matplotlib.pyplot as plt

    job_dir = Path(job_dir)
    records = read_metrics(job_dir)
    keys = ["loss", *sorted({k for r in records for k in r if k.endswith("_loss")})]
    curves = {k: series(records, k) for k in keys}
    curves = {k: v for k, v in curves.items() if v[0]}
    if not curves:
        raise ValueError(
            f"{job_dir / 'metrics.jsonl'} has no 'loss' values; train for at least "
            "logging.every steps first."
        )
    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    for i, (key, (steps, values)) in enumerate(curves.items()):
        color = f"C{i}"
        ax.plot(steps, values, color=color, alpha=0.3, linewidth=1)
        ax.plot(steps, smooth(values), color=color, linewidth=2, label=f"{key} (smoothed)")
    every = [v for _, vals in curves.values() for v in vals]
    if min(every) > 0 and max(every) / min(every) > 10:
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(job_dir.name)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    out = job_dir / "loss_curve.png"
    fig.savefig(out)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or argv[0].startswith("-"):
        print("usage: python -m framework.inference.plots JOB_DIR", file=sys.stderr)
        return 2
    try:
        print(plot_loss_curve(argv[0]))
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
