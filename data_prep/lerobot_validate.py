"""`python -m data_prep.validate DIR` on a LeRobot folder (meta/info.json): one row per episode.

Problems (exit 1): the episode's data file is missing or unreadable; its row count differs from
the episode table's length; `index` is not contiguous; the action / state columns are not finite;
a task_index the tasks table lacks; a camera's mp4 is missing, does not open, does not decode
(--quick: header only) or holds fewer frames than the episode's rows need. Warnings: an episode
shorter than --num_frames (no training window), no meta/stats.json entry for `action` (the
dataset computes and stores it on first use).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

VECTORS = ("action", "observation.state")


def _episode_row(meta, ep, rows: dict | None, a):
    from data_prep.validate import Row
    from framework.data.video import ClipReader, VideoError, probe_video

    row, problems = Row(f"episode {ep.index}"), []
    if rows is None:
        row.problem = f"data file {ep.data_file.relative_to(meta.root)} missing or unreadable"
        return row
    n = len(rows["index"])
    row.frames = f"{n}/{ep.length}"
    if n != ep.length:
        problems.append(f"{n} rows, the episode table says {ep.length}")
    if n and not np.array_equal(rows["index"], rows["index"][0] + np.arange(n)):
        problems.append("`index` is not contiguous")
    for key in VECTORS:
        if key in rows and not np.isfinite(rows[key].astype(np.float64)).all():
            problems.append(f"{key} has NaN or inf")
    unknown = sorted(set(rows["task_index"].tolist()) - set(meta.tasks))
    if unknown:
        problems.append(f"task_index {unknown[:3]} not in the tasks table")
    last = round(float(rows["timestamp"][-1]) * meta.fps) if n else 0
    for key, (video, from_s) in ep.videos.items():
        name = key.removeprefix("observation.images.")
        if not video.is_file():
            problems.append(f"{name}: no video {video.relative_to(meta.root)}")
            continue
        first = round(from_s * meta.fps)
        try:
            info = probe_video(video)
            row.size, row.fps = f"{info.height}x{info.width}", f"{info.fps:.2f}"
            if info.num_frames <= first + last:
                problems.append(f"{name}: {info.num_frames} frames, rows need {first + last + 1}")
            elif not a.quick:
                with ClipReader(video, size=(16, 16), threads=1) as reader:
                    reader.read(first, last + 1)
        except VideoError as err:
            problems.append(f"{name}: " + str(err).replace(str(video), video.name)[:100])
    if n < a.num_frames:
        row.warning = f"too short: {n} < {a.num_frames} frames, no training window"
    row.problem = "; ".join(problems)
    return row


def validate_lerobot(dataset: Path, a) -> int:
    """Check every episode of a LeRobot dataset; print the table and a summary; 0 ok, 1 not."""
    from data_prep.common import UserError
    from data_prep.validate import print_table
    from framework.data.lerobot_meta import LeRobotFormatError, LeRobotMeta

    try:
        meta = LeRobotMeta(dataset)
        columns = ["index", "timestamp", "task_index"]
        columns += [k for k in VECTORS if k in meta.features]
        rows = meta.read_rows(meta.episodes, columns)
    except LeRobotFormatError as err:
        raise UserError(str(err)) from None
    if not meta.episodes:
        raise UserError(f"{dataset} lists no episodes; re-export it")
    with ThreadPoolExecutor(max(1, a.workers)) as pool:
        table = list(
            pool.map(lambda ep: _episode_row(meta, ep, rows.get(ep.index), a), meta.episodes)
        )
    print_table(table)
    bad = [r for r in table if r.problem]
    usable = sum(not r.problem and not r.warning for r in table)
    cameras = ", ".join(k.removeprefix("observation.images.") for k in meta.video_keys)
    print(
        f"\nsummary: LeRobot {meta.version}, {len(table)} episodes, {len(meta.tasks)} tasks, "
        f"cameras {cameras}; {len(bad)} with problems, {usable} usable for {a.num_frames} frames"
    )
    if "action" in meta.features and "action" not in meta.stats():
        print("note: meta/stats.json has no `action` entry; training computes and stores it")
    if bad or not usable:
        print("fix or remove the episodes listed (training skips them up to max_bad_fraction)")
        return 1
    return 0
