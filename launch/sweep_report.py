"""The table and the loss curves of a sweep folder (`python -m launch.sweep --report DIR`).

Rows come from DIR/sweep.json (written by launch.sweep); without it, every sub-folder holding a
metrics.jsonl is a run. Final metrics are the last logged `loss` and the latest value of every
`eval*` key: the eval hook's before/after scores and its every-N `eval/*` ones (framework/hooks/
evaluation.py); eval_before/* and eval/* are left out when eval_after/* is there.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

INDEX = "sweep.json"
PLOT = "loss_curves.png"


def read_index(sweep_dir: Path) -> dict | None:
    """DIR/sweep.json; None without one. A damaged index (cut short, not an index) is rebuilt
    from the run folders, with a warning: the runs are the truth, the index a convenience."""
    path = sweep_dir / INDEX
    if not path.is_file():
        return None
    try:
        index = json.loads(path.read_text())
        if isinstance(index, dict) and all(
            isinstance(r, dict) and {"name", "job_dir"} <= set(r) for r in index["runs"]
        ):
            return index
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        pass
    runs = rebuilt_runs(sweep_dir)
    print(
        f"warning: {path} is damaged; rebuilt its {len(runs)} run(s) from the run folders",
        file=sys.stderr,
    )
    return {"runs": runs}


def rebuilt_runs(sweep_dir: Path) -> list[dict]:
    """Index entries read from the run folders: each sub-folder with a config.yaml or a
    metrics.jsonl; the overrides of its last start (overrides.txt), the swept keys being those
    whose values differ between runs, and train.max_steps from its config.yaml."""
    folders = sorted(
        {p.parent for n in ("config.yaml", "metrics.jsonl") for p in sweep_dir.glob(f"*/{n}")}
    )
    runs = []
    for folder in folders:
        lines = _last_start(folder / "overrides.txt")
        values = dict(o.lstrip("+~").split("=", 1) for o in lines if "=" in o)
        runs.append(
            {
                "name": folder.name,
                "job_dir": str(folder),
                "overrides": lines,
                "values": values,
                "max_steps": _max_steps(folder / "config.yaml"),
            }
        )
    keys = {k for r in runs for k in r["values"]}
    varying = [k for k in sorted(keys) if len({r["values"].get(k) for r in runs}) > 1]
    for r in runs:
        values = r.pop("values")
        r["swept"] = {k: values[k] for k in varying if k in values}
    return runs


def _last_start(path: Path) -> list[str]:
    if not path.is_file():
        return []
    block: list[str] = []
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("# started"):
            block = []
        elif line.strip() and not line.startswith("#"):
            block.append(line.strip())
    return [o for o in block if not o.startswith(("job.group=", "job.name="))]


def _max_steps(config: Path) -> int | None:
    if not config.is_file():
        return None
    try:
        from omegaconf import OmegaConf

        return int(OmegaConf.load(config).train.max_steps)
    except Exception:  # noqa: BLE001  (a damaged config: the run's state shows "-")
        return None


def _runs(sweep_dir: Path) -> list[dict]:
    index = read_index(sweep_dir)
    if index is not None:
        return index["runs"]
    found = sorted(p.parent for p in sweep_dir.glob("*/metrics.jsonl"))
    if not found:
        raise FileNotFoundError(
            f"{sweep_dir} holds no {INDEX} and no run folders with "
            "metrics.jsonl; pass the folder launch.sweep printed."
        )
    return [{"name": p.name, "job_dir": str(p), "swept": {}, "max_steps": None} for p in found]


def _records(job_dir: Path) -> list[dict]:
    path = job_dir / "metrics.jsonl"
    records = []
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a torn last line of a run killed mid-write
    return records


def curve(records: list[dict], key: str = "loss") -> tuple[list[int], list[float]]:
    """(steps, values); a resumed run logs some steps twice and the last line counts."""
    points = {}
    for r in records:
        value = r.get(key)
        if isinstance(value, (int, float)) and math.isfinite(value) and "step" in r:
            points[int(r["step"])] = float(value)
    steps = sorted(points)
    return steps, [points[s] for s in steps]


def final_metrics(records: list[dict]) -> dict[str, float]:
    out = {}
    steps, losses = curve(records)
    if losses:
        out["loss"] = losses[-1]
    evals = {}
    for r in records:
        evals.update(
            {k: v for k, v in r.items() if k.startswith("eval") and isinstance(v, (int, float))}
        )
    if any(k.startswith("eval_after/") for k in evals):
        evals = {k: v for k, v in evals.items() if k.startswith("eval_after/")}
    return {**out, **dict(sorted(evals.items()))}


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)


def table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def report(sweep_dir: str | Path) -> str:
    """The table (returned) and <sweep_dir>/loss_curves.png (written when any run logged)."""
    from launch.runs import Run, state_of

    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(
            f"{sweep_dir} is not a folder; pass the sweep folder launch.sweep printed."
        )
    entries = _runs(sweep_dir)
    keys = list(dict.fromkeys(k for e in entries for k in e.get("swept", {})))
    results, curves = [], {}
    for e in entries:
        job_dir = Path(e["job_dir"])
        records = _records(job_dir)
        curves[e["name"]] = curve(records)
        run = Run(e["name"], job_dir, [], max_steps=e.get("max_steps") or 0)
        state = state_of(run)
        kind = state.kind if e.get("max_steps") is not None or state.kind == "running" else "-"
        results.append((e, state, kind, final_metrics(records)))
    metric_keys = list(dict.fromkeys(k for *_, m in results for k in m))
    heads = [k.removeprefix("eval_") for k in metric_keys]
    rows = [["run", *keys, "state", "step", *heads]]
    for e, state, kind, metrics in results:
        swept = [e.get("swept", {}).get(k, "") for k in keys]
        rows.append(
            [
                e["name"],
                *swept,
                kind,
                _fmt(state.step),
                *[_fmt(metrics.get(k)) for k in metric_keys],
            ]
        )
    text = [f"sweep {sweep_dir} ({len(entries)} runs)", table(rows)]
    scored = [(m["loss"], e["name"]) for e, *_, m in results if "loss" in m]
    if scored:
        loss, name = min(scored)
        text.append(f"lowest final loss: {name} ({loss:.4g})")
    if any(steps for steps, _ in curves.values()):
        text.append(f"loss curves: {plot(curves, sweep_dir / PLOT, sweep_dir.name)}")
    return "\n".join(text)


def plot(curves: dict[str, tuple[list[int], list[float]]], path: Path, title: str) -> Path:
    """Every run's loss against its step on one chart; a centred moving average when a run has
    many points (the raw values faint behind it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from framework.inference.plots import smooth

    fig, ax = plt.subplots(figsize=(8, 5), dpi=100)
    values = [v for _, vs in curves.values() for v in vs]
    for name, (steps, losses) in curves.items():
        if not steps:
            continue
        if len(steps) >= 50:
            (line,) = ax.plot(steps, smooth(losses), label=name, linewidth=1.5)
            ax.plot(steps, losses, color=line.get_color(), alpha=0.2, linewidth=0.8)
        else:
            ax.plot(steps, losses, label=name, marker="." if len(steps) < 20 else None)
    if values and min(values) > 0 and max(values) / min(values) > 10:
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(f"sweep {title}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
