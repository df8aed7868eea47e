"""GR1-100 (DreamGen training set) in the GR1 layout: download, metas/, T5 pickles
(upstream/cosmos_predict2.md §6.1/6.4).

    python -m data_prep.gr1 --download                        # fetch nvidia/GR1-100 + T5, embed
    python -m data_prep.gr1 --dataset_path datasets/benchmark_train/gr1 --t5 /models/t5-11b

--download fetches the HF dataset nvidia/GR1-100 into <parent of dataset_path>/hf_gr1 and lays it
out as the upstream docs do (hf_gr1/gr1/*.mp4 -> gr1/videos/, hf_gr1/metadata.csv -> gr1/); files
are hard-linked (copied across file systems) so hf_gr1 stays complete and a re-run downloads
nothing. It also fetches the T5 encoder when --t5 is missing. Then each metadata.csv line (header
skipped) is split at the FIRST comma: left = video file name, right = prompt (surrounding double
quotes removed). metas/<stem>.txt = --prompt_prefix + prompt, then t5_xxl/<stem>.pickle.

Resumable: videos, metas and pickles already in place are skipped; a metas file whose text changed
(another --prompt_prefix) is rewritten and its stale pickle removed so it is embedded again.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from data_prep.common import UserError, cli, parser, snapshot
from data_prep.t5_embed import add_t5_args, run_t5_args
from framework.io import atomic_write_text

REPO_ID = "nvidia/GR1-100"
DEFAULT_DATASET = "datasets/benchmark_train/gr1"
DEFAULT_PREFIX = "The robot arm is performing a task. "


def _link_or_copy(src: Path, dst: Path) -> None:
    tmp = dst.with_name(f".{dst.name}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copy2(src, tmp)
    os.replace(tmp, dst)


def download_gr1(dataset_dir: Path, hf_dir: Path | None = None) -> None:
    """Fetch nvidia/GR1-100 into hf_gr1 and place its videos and metadata.csv in dataset_dir."""
    hf_dir = hf_dir or dataset_dir.parent / "hf_gr1"
    snapshot(REPO_ID, hf_dir, repo_type="dataset")
    sources = sorted((hf_dir / "gr1").glob("*.mp4"))
    if not sources:
        raise UserError(
            f"{hf_dir / 'gr1'} holds no .mp4 after downloading {REPO_ID}; delete "
            f"{hf_dir} and re-run with --download"
        )
    if not (hf_dir / "metadata.csv").is_file():
        raise UserError(
            f"{hf_dir / 'metadata.csv'} missing after downloading {REPO_ID}; delete "
            f"{hf_dir} and re-run with --download"
        )
    videos = dataset_dir / "videos"
    videos.mkdir(parents=True, exist_ok=True)
    placed = skipped = 0
    for src in sources:
        dst = videos / src.name
        if dst.is_file() and dst.stat().st_size == src.stat().st_size:
            skipped += 1
            continue
        _link_or_copy(src, dst)
        placed += 1
    _link_or_copy(hf_dir / "metadata.csv", dataset_dir / "metadata.csv")
    print(f"placed {placed} videos in {videos}, skipped {skipped} already there")


def parse_metadata(csv_path: Path) -> list[tuple[str, str]]:
    """[(video file name, prompt)] from metadata.csv (upstream's parse, upstream/cosmos_predict2.md
    §6.4)."""
    rows = []
    lines = csv_path.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        if "," not in line:
            raise UserError(
                f"{csv_path} line {number} has no comma (expected "
                f"'<video>,<prompt>'): {line[:80]!r}"
            )
        video, prompt = line.split(",", 1)
        prompt = prompt.strip()
        if len(prompt) >= 2 and prompt[0] == prompt[-1] == '"':
            prompt = prompt[1:-1].replace('""', '"')  # CSV quoting: "" inside a quoted field
        rows.append((video.strip().strip('"'), prompt))
    return rows


def write_metas(dataset_dir: Path, prefix: str = DEFAULT_PREFIX) -> dict[str, int]:
    """metas/<stem>.txt = prefix + prompt for each metadata.csv row whose video exists."""
    csv_path = dataset_dir / "metadata.csv"
    videos = dataset_dir / "videos"
    fix = f"run python -m data_prep.gr1 --dataset_path {dataset_dir} --download"
    if not csv_path.is_file():
        raise UserError(f"{csv_path} does not exist; {fix}")
    if not videos.is_dir() or not any(videos.glob("*.mp4")):
        raise UserError(f"{videos} holds no .mp4 videos; {fix}")
    rows = parse_metadata(csv_path)
    if not rows:
        raise UserError(f"{csv_path} lists no videos (only a header?); {fix}")
    metas = dataset_dir / "metas"
    metas.mkdir(parents=True, exist_ok=True)
    counts = {"written": 0, "skipped": 0, "changed": 0, "missing_video": 0}
    missing, seen = [], set()
    for video, prompt in rows:
        name = Path(video).name
        stem = Path(name).stem
        if not (videos / name).is_file():
            counts["missing_video"] += 1
            missing.append(name)
            continue
        if stem in seen:
            print(f"warning: {csv_path} lists {name} more than once; the last line wins")
        seen.add(stem)
        text = prefix + prompt
        meta = metas / f"{stem}.txt"
        if meta.is_file():
            if meta.read_text(encoding="utf-8") == text:
                counts["skipped"] += 1
                continue
            counts["changed"] += 1
            (dataset_dir / "t5_xxl" / f"{stem}.pickle").unlink(missing_ok=True)  # stale now
        atomic_write_text(meta, text)
        counts["written"] += 1
    if missing:
        print(
            f"warning: {len(missing)} videos listed in {csv_path} are not in {videos} "
            f"(e.g. {missing[0]}); no prompt written for them"
        )
    print(
        f"metas: wrote {counts['written']} ({counts['changed']} with changed text, their "
        f"pickles removed), skipped {counts['skipped']} unchanged"
    )
    return counts


@cli
def main(argv: list[str] | None = None) -> None:
    p = parser("gr1", __doc__)
    p.add_argument(
        "--dataset_path",
        default=DEFAULT_DATASET,
        help=f"GR1-layout folder to fill (default {DEFAULT_DATASET})",
    )
    p.add_argument(
        "--prompt_prefix",
        default=DEFAULT_PREFIX,
        help=f"text put before every prompt (default {DEFAULT_PREFIX!r})",
    )
    p.add_argument("--skip_t5", action="store_true", help="write metas/ only, no embeddings")
    add_t5_args(p)
    a = p.parse_args(argv)
    dataset_dir = Path(a.dataset_path)
    download = a.download
    if download:
        download_gr1(dataset_dir)
    write_metas(dataset_dir, a.prompt_prefix)
    if a.skip_t5:
        return
    # --download also covers the encoder, but only when it is not there yet.
    from data_prep.t5_embed import t5_source

    a.download = download and not (t5_source(a.t5, a.hub_id)[1] / "config.json").is_file()
    run_t5_args(dataset_dir, a)


if __name__ == "__main__":
    sys.exit(main())
