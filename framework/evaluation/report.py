"""The eval report, `<name>.html` beside `<name>.json`: a table of every metric per checkpoint
(mean and 95% interval over items, the best of each column marked), then per item its input
frame, its ground truth and each checkpoint's video side by side, playing, with that item's
numbers under each.

Self-contained like the best-of-N page (framework/inference/html_report.py): inline CSS and a
few lines of script, media referenced relative to the page (`<name>_media/`), no network.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from framework.inference.html_report import esc, rel
from framework.io import atomic_write_text

CSS = """
body { font-family: system-ui, sans-serif; margin: 16px; background: #fafafa; color: #222; }
h1 { font-size: 20px; margin: 0 0 8px; }
.meta { color: #555; font-size: 13px; margin-bottom: 12px; }
table { border-collapse: collapse; background: #fff; margin-bottom: 16px; font-size: 14px; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
td.best { background: #e3f2e4; font-weight: bold; }
.ci { color: #666; font-size: 12px; }
.item { background: #fff; border: 1px solid #ddd; border-radius: 6px; padding: 10px;
        margin-bottom: 12px; }
.item h2 { font-size: 16px; margin: 0 0 4px; }
.prompt { font-size: 13px; color: #333; margin: 0 0 8px; }
.row { display: flex; flex-wrap: wrap; gap: 10px; }
figure { margin: 0; padding: 6px; border: 1px solid #ddd; border-radius: 6px; width: 240px; }
figure video, figure img { width: 100%; background: #000; image-rendering: pixelated; }
figcaption { font-size: 12px; }
.playerror { color: #b00020; font-size: 12px; }
"""

SCRIPT = """
for (const v of document.querySelectorAll('video')) {
  const fig = v.closest('figure');
  const mark = () => { fig.dataset.loaded = '1'; };
  if (v.readyState >= 2) mark(); else v.addEventListener('loadeddata', mark);
  v.addEventListener('playing', () => { fig.dataset.playing = '1'; });
  v.addEventListener('error', () => {
    fig.querySelector('.playerror').hidden = false;
    fig.dataset.loaded = 'error';
  }, true);
  v.play().catch(() => {});
}
"""

ARROWS = {"higher": " &uarr;", "lower": " &darr;", "baseline": " (still)"}


def fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return esc(value)
    if not math.isfinite(value):
        return esc(value)
    return f"{value:.4g}"


def best_labels(runs: list[dict[str, Any]], key: str, better: str) -> set[str]:
    """Labels of the checkpoints with the best mean of `key` (none for baselines)."""
    if better not in ("higher", "lower"):
        return set()
    vals = {r["label"]: r["result"].get(key) for r in runs}
    vals = {k: v for k, v in vals.items() if isinstance(v, (int, float)) and math.isfinite(v)}
    if len(vals) < 2:
        return set()
    pick = max(vals.values()) if better == "higher" else min(vals.values())
    return {k for k, v in vals.items() if v == pick}


def render_table(runs: list[dict[str, Any]], keys: list[str], better: dict[str, str]) -> str:
    head = "".join(f"<th>{esc(k)}{ARROWS.get(better.get(k, ''), '')}</th>" for k in keys)
    rows = []
    best = {k: best_labels(runs, k, better.get(k, "")) for k in keys}
    for run in runs:
        res = run["result"]
        cells = []
        for k in keys:
            ci = res["intervals"].get(k)
            text = fmt(res.get(k))
            if ci and ci.get("lo") is not None:
                text += f' <span class="ci">[{fmt(ci["lo"])}, {fmt(ci["hi"])}]</span>'
            cls = ' class="best"' if run["label"] in best[k] else ""
            cells.append(f'<td data-key="{esc(k)}"{cls}>{text}</td>')
        rows.append(
            f'<tr data-label="{esc(run["label"])}"><td>{esc(run["label"])}</td>'
            f"{''.join(cells)}</tr>"
        )
    return f"<table><tr><th>checkpoint</th>{head}</tr>{''.join(rows)}</table>"


def figure(kind: str, path: str, caption: str, base: Path) -> str:
    src = esc(rel(path, base))
    if kind == "img":
        media = f'<img src="{src}" alt="input frame">'
    else:
        media = f'<video src="{src}" muted loop playsinline preload="auto"></video>'
    err = f'<p class="playerror" hidden>cannot play {esc(Path(path).name)}</p>'
    return f'<figure data-kind="{kind}">{media}<figcaption>{caption}</figcaption>{err}</figure>'


def render_item(i: int, media: dict[str, Any], runs: list[dict[str, Any]], keys, base) -> str:
    figs = [
        figure("img", media["input"], "input frame", base),
        figure("video", media["truth"], "ground truth", base),
    ]
    for run in runs:
        row = next((r for r in run["result"]["items"] if r["name"] == media["name"]), {})
        nums = ", ".join(f"{k} {fmt(row.get(k))}" for k in keys if k in row)
        caption = f"<b>{esc(run['label'])}</b><br>{esc(nums)}"
        figs.append(figure("video", media["videos"][run["label"]], caption, base))
    return (
        f'<section class="item" id="item-{i}"><h2>{esc(media["name"])}</h2>'
        f'<p class="prompt">{esc(media.get("prompt", ""))}</p>'
        f'<div class="row">{"".join(figs)}</div></section>'
    )


def render(summary: dict[str, Any], base: Path) -> str:
    runs = summary["runs"]
    better = {}
    for run in runs:
        better.update(run["result"].get("better", {}))
    keys = [k for k in runs[0]["result"]["intervals"]] if runs else []
    keys += [k for k in (runs[0]["result"].get("set_metrics", {}) if runs else {})]
    spec = summary["eval_set"]
    meta = (
        f"eval set <b>{esc(spec['name'])}</b>: {spec['num_items']} items, seeds "
        f"{esc(spec['seeds'])}, {spec['num_steps']} steps, guidance {spec['guidance']:g}; "
        f"manifest {esc(spec['manifest'])}; {esc(summary.get('created', ''))}. "
        "Numbers: mean over items [95% interval]."
    )
    items = "".join(render_item(i, m, runs, keys, base) for i, m in enumerate(summary["media"]))
    return (
        '<!doctype html><html><head><meta charset="utf-8">'
        f"<title>eval {esc(spec['name'])}</title><style>{CSS}</style></head><body>"
        f'<h1>Evaluation: {esc(spec["name"])}</h1><p class="meta">{meta}</p>'
        f"{render_table(runs, keys, better)}{items}<script>{SCRIPT}</script></body></html>"
    )


def write_report(summary: dict[str, Any], path: str | Path) -> Path:
    path = Path(path)
    return atomic_write_text(path, render(summary, path.parent))
