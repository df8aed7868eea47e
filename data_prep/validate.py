"""Check a GR1-layout or Bridge-layout dataset before training: every video, its T5 pickle, its
prompt.

    python -m data_prep.validate datasets/benchmark_train/gr1 --num_frames 93
    python -m data_prep.validate datasets/bridge                 # has annotation/: Bridge layout

For each videos/*.mp4: it opens, every frame decodes (--quick: header only), it has at least
--num_frames frames (x --frame_stride), and its fps and size are listed. Its t5_xxl/<stem>.pickle
must exist and load with the restricted unpickler (framework.data.safe_load: nothing in the file
is executed) as a list holding one float [n_tokens, 1024] array with n_tokens <= 512. A missing
metas/<stem>.txt or a pickle without a video is a warning only (training does not read metas/).
Prints a table and a summary; exit code 1 when any video has a problem, 0 otherwise.

A folder holding meta/info.json is read as a LeRobot dataset (v2.x or v3.0; every episode's rows,
tasks and camera videos; data_prep/lerobot_validate.py). A folder holding annotation/ is read as
the Bridge layout (docs/upstream/cosmos_predict1.md §2.1):
each annotation/<split>/*.json (--splits, default all present) must parse and name an existing
video (same checks as above), with annotation/<split>/<id>.pickle beside it. An episode shorter
than the window (--num_frames default 57; the frame count is len(state), capped by the video's) is
a warning: training indexes no window of it, as upstream (§9 item 9). Exit code 1 when any episode
has a problem or none is long enough.
"""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from data_prep.common import UserError, cli, parser

SPLITS = ("train", "val", "test")


@dataclass
class Row:
    file: str
    frames: str = "-"
    size: str = "-"
    fps: str = "-"
    embedding: str = "-"
    problem: str = ""
    warning: str = ""


def check_video(video: Path, num_frames: int, quick: bool) -> tuple[Row, list[str]]:
    from framework.data.video import ClipReader, VideoError, probe_video

    row, problems = Row(video.name), []
    try:
        info = probe_video(video)
        row.frames, row.fps = str(info.num_frames), f"{info.fps:.2f}"
        row.size = f"{info.height}x{info.width}"
        if not quick:
            with ClipReader(video, size=(16, 16), threads=1) as reader:
                reader.read(0, info.num_frames)
    except VideoError as err:
        problems.append("unreadable: " + str(err).replace(str(video), video.name)[:120])
        return row, problems
    if info.num_frames < num_frames:
        problems.append(f"too short: {info.num_frames} < {num_frames} frames")
    if info.fps <= 0:
        problems.append(f"bad fps {info.fps}")
    return row, problems


def check_embedding(
    path: Path, max_tokens: int, dim: int, missing: str = ""
) -> tuple[str, list[str]]:
    from framework.data.safe_load import UnsafeFileError, load_t5_pickle

    if not path.is_file():
        return "missing", [
            missing or f"no embedding t5_xxl/{path.name} (python -m data_prep.t5_embed)"
        ]
    try:
        arr = load_t5_pickle(path, dim)
    except (UnsafeFileError, OSError) as err:
        return "refused", ["bad embedding: " + str(err).replace(str(path), path.name)[:160]]
    desc = f"[{arr.shape[0]},{arr.shape[1]}] {arr.dtype}"
    if arr.shape[0] > max_tokens:
        return desc, [f"embedding has {arr.shape[0]} tokens > {max_tokens}"]
    return desc, []


def check_one(dataset: Path, video: Path, a) -> Row:
    row, problems = check_video(video, a.num_frames, a.quick)
    row.embedding, emb_problems = check_embedding(
        dataset / "t5_xxl" / f"{video.stem}.pickle", a.max_tokens, a.dim
    )
    problems += emb_problems
    if not (dataset / "metas" / f"{video.stem}.txt").is_file():
        row.warning = "no metas/*.txt"
    row.problem = "; ".join(problems)
    return row


def print_table(rows: list[Row], out=None) -> None:
    out = out or sys.stdout
    header = Row("file", "frames", "size", "fps", "embedding", "problem")
    cols = ("file", "frames", "size", "fps", "embedding")
    widths = {c: max(len(getattr(r, c)) for r in [header, *rows]) for c in cols}
    for r in [header, *rows]:
        note = r.problem or (f"(warning: {r.warning})" if r.warning else "ok")
        if r is header:
            note = "problem"
        print("  ".join(getattr(r, c).ljust(widths[c]) for c in cols) + "  " + note, file=out)


def check_episode(dataset: Path, path: Path, a) -> tuple[Row, bool]:
    """(table row, long enough for a window) of one Bridge episode json."""
    from framework.data.bridge import read_annotation

    row = Row(f"{path.parent.name}/{path.name}")
    try:
        ann = read_annotation(path, dataset)
    except (ValueError, OSError) as err:
        row.problem = "bad annotation: " + str(err).replace(str(path), path.name)[:120]
        return row, False
    if ann.video.is_file():
        row_video, problems = check_video(ann.video, 1, a.quick)
        row.frames, row.size, row.fps = row_video.frames, row_video.size, row_video.fps
    else:
        problems = [f"no video {ann.video.relative_to(dataset)}"]
    row.embedding, emb_problems = check_embedding(
        ann.embedding,
        a.max_tokens,
        a.dim,
        f"no embedding {path.parent.name}/{ann.embedding.name} (python -m data_prep.bridge)",
    )
    problems += emb_problems
    lengths = [int(n) for n in (ann.num_frames, row.frames) if str(n).isdigit()]
    if ann.num_frames is not None:
        row.frames = f"{ann.num_frames}/{row.frames}"  # len(state) / video header
    if lengths and min(lengths) < a.num_frames:
        row.warning = f"too short: {min(lengths)} < {a.num_frames} frames, no training window"
    if ann.text is None:
        row.warning = "; ".join(filter(None, [row.warning, "no texts[0] instruction"]))
    row.problem = "; ".join(problems)
    return row, bool(lengths) and min(lengths) >= a.num_frames


def validate_bridge(dataset: Path, a) -> int:
    present = [s for s in SPLITS if (dataset / "annotation" / s).is_dir()]
    splits = a.splits or present
    jsons = [j for s in splits for j in sorted((dataset / "annotation" / s).glob("*.json"))]
    if not jsons:
        raise UserError(
            f"{dataset / 'annotation'} holds no {'/'.join(splits) or 'split'}/*.json; is "
            f"{dataset} an unpacked Bridge archive (python -m data_prep.bridge)?"
        )
    with ThreadPoolExecutor(max(1, a.workers)) as pool:
        checked = list(pool.map(lambda j: check_episode(dataset, j, a), jsons))
    rows = [row for row, _ in checked]
    print_table(rows)
    bad = [r for r in rows if r.problem]
    usable = sum(long and not row.problem for row, long in checked)
    short = sum(r.warning.startswith("too short") for r in rows)
    print(
        f"\nsummary: {len(rows)} episodes ({', '.join(splits)}), {len(rows) - len(bad)} ok, "
        f"{len(bad)} with problems, {short} too short for {a.num_frames} frames, "
        f"{usable} usable for training"
    )
    if bad or not usable:
        print(
            "the training dataset skips episodes with problems (up to data.max_bad_fraction) "
            "and short ones; fix or remove the files listed"
            + ("" if usable else "; no episode is usable as it is")
        )
        return 1
    return 0


def validate_lerobot_folder(dataset: Path, a) -> int:
    """A LeRobot folder (meta/info.json): data_prep/lerobot_validate.py; clips of --num_frames
    (default 13, the action recipes) x --frame_stride."""
    from data_prep.lerobot_validate import validate_lerobot

    a.num_frames = ((a.num_frames or 13) - 1) * a.frame_stride + 1
    return validate_lerobot(dataset, a)


@cli
def main(argv: list[str] | None = None) -> int:
    p = parser("validate", __doc__)
    p.add_argument(
        "dataset_path", help="folder with videos/*.mp4 and t5_xxl/*.pickle, or a Bridge folder"
    )
    p.add_argument(
        "--num_frames",
        type=int,
        default=None,
        help="frames a training clip needs (default 93, the GR00T experiments; Bridge: 57)",
    )
    p.add_argument(
        "--frame_stride",
        type=int,
        default=1,
        help="the dataset's frame_stride (a clip spans (num_frames-1)*stride+1 frames)",
    )
    p.add_argument("--max_tokens", type=int, default=512, help="embedding row cap (default 512)")
    p.add_argument("--dim", type=int, default=1024, help="embedding width (default 1024)")
    p.add_argument("--quick", action="store_true", help="read headers only, do not decode frames")
    p.add_argument("--workers", type=int, default=4, help="files checked in parallel (default 4)")
    p.add_argument(
        "--splits", nargs="+", choices=SPLITS, help="Bridge splits to check (default: all present)"
    )
    a = p.parse_args(argv)
    dataset = Path(a.dataset_path)
    if (dataset / "meta" / "info.json").is_file():
        return validate_lerobot_folder(dataset, a)
    if (dataset / "annotation").is_dir():
        a.num_frames = ((a.num_frames or 57) - 1) * a.frame_stride + 1
        return validate_bridge(dataset, a)
    a.num_frames = 93 if a.num_frames is None else a.num_frames
    a.num_frames = (a.num_frames - 1) * a.frame_stride + 1
    status = validate_gr1(dataset, a)
    if (dataset / "val" / "videos").is_dir():
        print(f"\nheld-out split {dataset / 'val'}:")
        status = max(status, validate_gr1(dataset / "val", a))
    else:
        print(
            f"note: {dataset} has no val/ (val/videos, val/metas, val/t5_xxl): evaluation and "
            "samples will use training clips, which shows memorisation, not generalisation "
            "(docs/data.md)."
        )
    return status


def validate_gr1(dataset: Path, a) -> int:
    """One GR1-layout folder (the dataset, or its val/): table, summary, exit status."""
    videos = sorted((dataset / "videos").glob("*.mp4"))
    if not videos:
        raise UserError(
            f"{dataset / 'videos'} holds no .mp4 files; is {dataset} a GR1-layout "
            "dataset (videos/, t5_xxl/, metas/)?"
        )
    with ThreadPoolExecutor(max(1, a.workers)) as pool:
        rows = list(pool.map(lambda v: check_one(dataset, v, a), videos))
    print_table(rows)
    stems = {v.stem for v in videos}
    orphans = sorted(p.name for p in (dataset / "t5_xxl").glob("*.pickle") if p.stem not in stems)
    bad = [r for r in rows if r.problem]
    warned = [r for r in rows if r.warning]
    print(
        f"\nsummary: {len(rows)} videos, {len(rows) - len(bad)} ok, {len(bad)} with problems, "
        f"{len(warned)} without metas/*.txt, {len(orphans)} pickles without a video"
        + (f" (e.g. {orphans[0]})" if orphans else "")
    )
    # model.fps is read from the clips (experiments' ${clip_fps:...}): one rate for all of them.
    rates = sorted({r.fps for r in rows if r.fps != "-"}, key=float)
    if len(rates) > 1:
        print(
            f"clips at different frame rates ({', '.join(rates)} fps): one model fps cannot "
            "describe them; re-encode to one rate (ffmpeg -r) and run this again"
        )
        return 1
    if bad:
        print(
            "the training dataset skips the files with problems (up to data.max_bad_fraction); "
            "fix or remove them"
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
