"""One static page per best-of-N run (`report.html`): for every item (numbered from 1, anchors
`#item-1`...) its input frame or video (the ground truth where the input is a video) and its N
videos side by side, playing, with their critic scores, the critic's answers per trial and per
component, and the winner marked; a filter bar shows only the items whose best score is low, or
the failed ones.

Videos play (muted, looping) while they are on screen. The page is self-contained: inline CSS
and a few lines of inline JavaScript, videos referenced by paths relative to the page (keep it in
its folder; copy the folder to share it), nothing fetched from a network, no server. Opening
`report.html#below=0.5` (or `#failed`) starts with that filter.
"""

from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Any

from framework.io import atomic_write_text

CSS = """
body { font-family: system-ui, sans-serif; margin: 16px; background: #fafafa; color: #222; }
h1 { font-size: 20px; margin: 0 0 8px; }
.meta { color: #555; font-size: 13px; margin-bottom: 12px; }
.bar { position: sticky; top: 0; background: #fff; border: 1px solid #ddd; padding: 8px;
       margin-bottom: 12px; z-index: 1; font-size: 14px; }
.item { background: #fff; border: 1px solid #ddd; border-radius: 6px; padding: 10px;
        margin-bottom: 12px; }
.item h2 { font-size: 16px; margin: 0 0 4px; }
.prompt { font-size: 13px; color: #333; margin: 0 0 8px; }
.failed-reason { color: #b00020; font-weight: bold; }
.row { display: flex; flex-wrap: wrap; gap: 10px; }
.cand { margin: 0; padding: 6px; border: 3px solid #ddd; border-radius: 6px; width: 320px; }
.cand.winner { border-color: #2e7d32; background: #f1f8f1; }
.cand video, .cand img { width: 100%; background: #000; }
.cand.input { border-style: dashed; }
.badge { background: #2e7d32; color: #fff; border-radius: 3px; padding: 1px 5px;
         font-size: 12px; }
.score { font-weight: bold; font-size: 15px; }
.low { color: #b00020; }
.comp-yes { color: #b00020; }
.comp-no { color: #2e7d32; }
.playerror { color: #b00020; font-size: 12px; }
details { font-size: 12px; margin-top: 4px; }
details ol { padding-left: 18px; margin: 4px 0; }
pre { white-space: pre-wrap; max-height: 120px; overflow: auto; background: #f4f4f4;
      margin: 2px 0; }
"""

# Filter: "all", items whose best score is below the slider ("below"), or failed ones ("failed").
# A failed item counts as low. The URL fragment (#below=0.5, #failed) sets the start state.
SCRIPT = """
const items = Array.from(document.querySelectorAll('section.item'));
const slider = document.getElementById('threshold');
const shown = document.getElementById('shown');
function mode() { return document.querySelector('input[name=mode]:checked').value; }
function apply() {
  const x = parseFloat(slider.value);
  document.getElementById('threshold-value').textContent = x.toFixed(2);
  let n = 0;
  for (const s of items) {
    const failed = s.dataset.status !== 'ok';
    const best = parseFloat(s.dataset.best);
    const m = mode();
    const low = failed || best < x;
    const show = m === 'all' || (m === 'failed' && failed) || (m === 'below' && low);
    s.hidden = !show;
    if (show) n += 1;
  }
  shown.textContent = n + ' of ' + items.length + ' items shown';
}
const hash = decodeURIComponent(location.hash.slice(1));
if (hash.startsWith('below=')) {
  slider.value = hash.slice(6);
  document.getElementById('mode-below').checked = true;
} else if (hash === 'failed') {
  document.getElementById('mode-failed').checked = true;
}
for (const el of document.querySelectorAll('input[name=mode], #threshold')) {
  el.addEventListener('input', apply);
}
// Videos play while on screen and pause off it: a DreamGen run has hundreds of them, more than
// a browser decodes at once.
const videos = Array.from(document.querySelectorAll('video'));
const watch = 'IntersectionObserver' in window ? new IntersectionObserver((seen) => {
  for (const e of seen) {
    if (e.isIntersecting) e.target.play().catch(() => {}); else e.target.pause();
  }
}, {threshold: 0.1}) : null;
for (const v of videos) {
  const fig = v.closest('figure');
  const mark = () => { fig.dataset.loaded = '1'; };
  if (v.readyState >= 2) mark(); else v.addEventListener('loadeddata', mark);
  v.addEventListener('playing', () => { fig.dataset.playing = '1'; });
  v.addEventListener('error', () => {
    fig.querySelector('.playerror').hidden = false;
    fig.dataset.loaded = 'error';
  }, true);
  if (watch) watch.observe(v); else v.play().catch(() => {});
}
apply();
"""


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def rel(path: str | os.PathLike, base: Path) -> str:
    """A URL relative to the page's folder (forward slashes, characters escaped)."""
    from urllib.parse import quote

    return quote(Path(os.path.relpath(Path(path).resolve(), base.resolve())).as_posix())


def fmt_score(score: float | None) -> str:
    return "-" if score is None else f"{score:.2f}"


def render_trials(cand: dict[str, Any]) -> str:
    """The critic's answers, one list entry per trial: the parsed answer and the components."""
    answers, components = cand.get("answers") or [], cand.get("components") or []
    rows = []
    for i, answer in enumerate(answers):
        comps = components[i] if i < len(components) else []
        head = f"answer <b>{esc(answer.capitalize())}</b>" if answer else "<i>no answer parsed</i>"
        items = "".join(
            f'<li class="comp-{esc(c["anomaly"].strip().lower())}" title="{esc(c["analysis"])}">'
            f"{esc(c['name'])}: {esc(c['anomaly'])}</li>"
            for c in comps
        )
        rows.append(f"<li>{head}<ul>{items}</ul></li>" if items else f"<li>{head}</li>")
    if not rows:
        return ""
    summary = f"<summary>critic answers ({len(rows)})</summary>"
    return f"<details>{summary}<ol>{''.join(rows)}</ol></details>"


def render_candidate(cand: dict[str, Any], winner: bool, base: Path, low: float) -> str:
    score = cand.get("score")
    cls = "cand winner" if winner else "cand"
    badge = '<span class="badge">winner</span> ' if winner else ""
    low_cls = " low" if score is not None and score < low else ""
    counts = (
        f"{cand.get('no', 0)} No / {cand.get('parsed', 0)} parsed of {len(cand.get('answers', []))}"
        if score is not None
        else esc(cand.get("reason", "not scored"))
    )
    src = rel(cand["video"], base)
    raw = cand.get("score_file")
    raw = f' &middot; <a href="{rel(raw, base)}">raw</a>' if raw else ""
    return (
        f'<figure class="{cls}" data-seed="{esc(cand["seed"])}" '
        f'data-score="{esc(fmt_score(score))}">'
        f'<video src="{src}" controls muted loop playsinline preload="metadata"></video>'
        f'<p class="playerror" hidden>cannot play {esc(src)} (moved or missing?)</p>'
        f"<figcaption>{badge}seed {esc(cand['seed'])} &middot; score "
        f'<span class="score{low_cls}">{fmt_score(score)}</span> ({counts}){raw}</figcaption>'
        f"{render_trials(cand)}</figure>"
    )


IMAGES = (".png", ".jpg", ".jpeg", ".webp")


def render_input(item: dict[str, Any], base: Path) -> str:
    """What the candidates continue: the input frame, or the input video, whose frames after the
    given ones are the ground truth (a DreamGen image has none)."""
    src = item.get("input")
    if not src or not Path(src).is_file():
        return ""
    url = rel(src, base)
    if Path(src).suffix.lower() in IMAGES:
        media, what = f'<img src="{url}" alt="input frame">', "input frame"
    else:
        media = f'<video src="{url}" controls muted loop playsinline preload="metadata"></video>'
        what = "input video: the ground truth after the given frames"
    return f'<figure class="cand input">{media}<figcaption>{what}</figcaption></figure>'


def render_item(i: int, item: dict[str, Any], base: Path, low: float) -> str:
    ok = item.get("status") == "ok"
    best = max(
        (c["score"] for c in item.get("candidates", []) if c.get("score") is not None), default=None
    )
    title = f"{i + 1}. {esc(item.get('name', ''))}"
    head = f'<span class="score">best {fmt_score(best)}</span>' if best is not None else ""
    if not ok:
        head += f' <span class="failed-reason">FAILED: {esc(item.get("reason", ""))}</span>'
    cands = "".join(
        render_candidate(c, c["seed"] == item.get("winner_seed"), base, low)
        for c in item.get("candidates", [])
    )
    out = item.get("output")
    where = f"{esc(item.get('input', ''))} &rarr; {esc(out)}" if out else esc(item.get("input", ""))
    return (
        f'<section class="item" id="item-{i + 1}" data-status="{"ok" if ok else "failed"}" '
        f'data-best="{best if best is not None else -1}">'
        f"<h2>{title} {head}</h2>"
        f'<p class="prompt">{esc(item.get("prompt", ""))}<br><small>{where}</small></p>'
        f'<div class="row">{render_input(item, base)}{cands}</div></section>'
    )


def render(summary: dict[str, Any], base: Path, low: float = 0.5) -> str:
    """The page for a summary (best_of_n's summary.json); `base` is the page's folder."""
    items = summary.get("items", [])
    s = summary.get("settings", {})
    c = summary.get("counts", {})
    first, n = int(s.get("seed", 0)), s.get("num_generations")
    seeds = f"{first}..{first + int(n) - 1}" if n else f"{first}.."
    meta = (
        f"critic {esc(s.get('critic', '?'))} &middot; N = {esc(s.get('num_generations', '?'))} "
        f"videos per item (seeds {esc(seeds)}) &middot; K = "
        f"{esc(s.get('num_critic_trials', '?'))} critic trials per video &middot; "
        f"{esc(c.get('ok', 0))} items done, {esc(c.get('failed', 0))} failed &middot; "
        f"{esc(summary.get('created', ''))}"
    )
    bar = (
        '<div class="bar">Show: '
        '<label><input type="radio" name="mode" value="all" id="mode-all" checked> all</label> '
        '<label><input type="radio" name="mode" value="below" id="mode-below"> best score below '
        f'<input type="range" id="threshold" min="0" max="1" step="0.05" value="{low}"> '
        '<span id="threshold-value"></span></label> '
        '<label><input type="radio" name="mode" value="failed" id="mode-failed"> failed</label> '
        '&middot; <span id="shown"></span></div>'
    )
    body = "".join(render_item(i, item, base, low) for i, item in enumerate(items))
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>best of N: {esc(s.get('critic', ''))}</title><style>{CSS}</style></head><body>"
        f'<h1>Best of N</h1><div class="meta">{meta}</div>{bar}{body}'
        f"<script>{SCRIPT}</script></body></html>\n"
    )


def write_report(summary: dict[str, Any], path: str | Path, low: float = 0.5) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(path, render(summary, path.parent, low))
