"""Bridge (Cosmos-Predict1 instruction post-training): layout check, per-split counts, T5 pickles
(docs/upstream/cosmos_predict1.md §2.1, §2.8).

Download and unpack as upstream's docs do, or let --archive unpack it:

    mkdir -p datasets/bridge && cd datasets/bridge
    wget https://lf-robot-opensource.bytetos.com/obj/lab-robot-public/opensource_IRASim_v1/bridge_train_data.tar.gz
    cd ../.. && python -m data_prep.bridge --archive datasets/bridge/bridge_train_data.tar.gz

    python -m data_prep.bridge --dataset_path datasets/bridge --t5 /models/t5-11b
    python -m data_prep.bridge --splits train --skip_t5          # counts only

--archive unpacks the tarball (members that would land outside the folder, links and devices are
refused) and moves opensource_robotdata/bridge/* up into --dataset_path, as upstream's `mv` does;
a folder unpacked by hand but not moved is moved the same way. Then for each split of
annotation/{train,val,test} (--splits; all present by default, where upstream's script does only
train, §9 item 12) it counts the episode jsons, bad jsons, jsons without an instruction, missing
videos, episodes too short for a --num_frames window (they give no samples, §9 item 9), the
windows training will index, and the embeddings present. Last, it writes the T5-11B embedding of
each json's texts[0] to annotation/<split>/<id>.pickle beside it, upstream's name and format: a
list holding one float16 [n_tokens, 1024] array, n_tokens the token count including EOS (§2.8).

Resumable: a pickle that exists and loads with the safe loader is kept (--overwrite redoes it), a
refused one is rewritten; each is written to a temporary file and renamed. A user error prints one
line `error: ...` and exits 2.
"""

from __future__ import annotations

import shutil
import sys
import tarfile
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from data_prep.common import UserError, cli, parser
from data_prep.t5_embed import add_t5_args, download, load_encoder

ARCHIVE_URL = (
    "https://lf-robot-opensource.bytetos.com/obj/lab-robot-public/opensource_IRASim_v1/"
    "bridge_train_data.tar.gz"
)
ARCHIVE_ROOT = Path("opensource_robotdata") / "bridge"  # the tarball's top folder (§2)
DEFAULT_DATASET = "datasets/bridge"
SPLITS = ("train", "val", "test")


# ---- layout ---------------------------------------------------------------------------------
def unpack(archive: Path, dataset_dir: Path) -> None:
    """Extract `archive` into a hidden folder beside the data, then place its Bridge tree."""
    from tqdm import tqdm

    if not archive.is_file():
        raise UserError(f"archive {archive} does not exist; download it from {ARCHIVE_URL}")
    staging = dataset_dir / ".unpacking"
    shutil.rmtree(staging, ignore_errors=True)  # an interrupted earlier run: start over
    staging.mkdir(parents=True)
    print(f"unpacking {archive} into {dataset_dir}")
    try:
        with tarfile.open(archive) as tar:
            for member in tqdm(tar, desc="unpack", unit="file", file=sys.stderr):
                tar.extract(member, staging, filter="data")  # refuses ../, absolute, devices
    except (tarfile.TarError, OSError, EOFError) as err:
        shutil.rmtree(staging, ignore_errors=True)
        raise UserError(
            f"cannot unpack {archive} ({err}); download it again from {ARCHIVE_URL}"
        ) from None
    place_tree(staging, dataset_dir)
    shutil.rmtree(staging, ignore_errors=True)


def place_tree(unpacked: Path, dataset_dir: Path) -> bool:
    """Move <unpacked>/opensource_robotdata/bridge/* into dataset_dir (upstream's `mv`)."""
    src = unpacked / ARCHIVE_ROOT
    if not (src / "annotation").is_dir():
        return False
    for entry in sorted(src.iterdir()):
        target = dataset_dir / entry.name
        if target.exists():
            raise UserError(
                f"{target} exists, so {entry} cannot be moved there; remove one of them and re-run"
            )
        entry.rename(target)
    for emptied in (src, src.parent):  # only when empty: other robots' data may sit beside
        try:
            emptied.rmdir()
        except OSError:
            break
    print(f"moved {src}/* to {dataset_dir}")
    return True


def lay_out(dataset_dir: Path, archive: Path | None) -> None:
    if archive is not None and (dataset_dir / "annotation").is_dir():
        print(f"{dataset_dir / 'annotation'} exists: {archive} is not unpacked again")
    elif archive is not None:
        unpack(archive, dataset_dir)
    elif not (dataset_dir / "annotation").is_dir():
        place_tree(dataset_dir, dataset_dir)
    if not (dataset_dir / "annotation").is_dir():
        raise UserError(
            f"{dataset_dir / 'annotation'} does not exist; download {ARCHIVE_URL} and pass it "
            "with --archive, or point --dataset_path at the folder holding annotation/ and "
            "videos/"
        )


# ---- survey ---------------------------------------------------------------------------------
@dataclass
class Episode:
    """What the survey found in one json."""

    tags: list[str]  # count keys: "episodes", "missing video", "too short", "embedding ok", ...
    windows: int = 0  # training windows it gives (by len(state))
    text: str | None = None  # the instruction to embed, when its pickle must be (re)written
    problem: str = ""  # one line naming what is wrong, "" when nothing is


@dataclass
class SplitReport:
    split: str
    counts: Counter = field(default_factory=Counter)
    todo: list[tuple[str, Path]] = field(default_factory=list)  # (instruction, pickle to write)
    problems: list[str] = field(default_factory=list)


def inspect(path: Path, dataset_dir: Path, span: int, overwrite: bool) -> Episode:
    from framework.data.bridge import read_annotation
    from framework.data.safe_load import UnsafeFileError, load_t5_pickle

    try:
        ann = read_annotation(path, dataset_dir)
    except (ValueError, OSError) as err:
        return Episode(["bad json"], problem=str(err).splitlines()[0])
    found = Episode(["episodes"])
    if not ann.video.is_file():
        found.tags.append("missing video")
        found.problem = f"{path.name}: its video {ann.video} is missing"
    if ann.num_frames is not None and ann.num_frames < span:
        found.tags.append("too short")
    elif ann.num_frames is not None:
        found.windows = ann.num_frames - span + 1
    if ann.text is None:
        found.tags.append("no instruction")
        found.problem = f"{path.name}: no texts[0] instruction string"
        return found
    state = "missing"
    if ann.embedding.is_file():
        try:
            load_t5_pickle(ann.embedding)
            state = "ok"
        except (UnsafeFileError, OSError):
            state = "refused"
    found.tags.append(f"embedding {state}")
    if state != "ok" or overwrite:
        found.text = ann.text
    return found


def survey(dataset_dir: Path, split: str, span: int, overwrite: bool) -> SplitReport:
    report = SplitReport(split)
    jsons = sorted((dataset_dir / "annotation" / split).glob("*.json"))
    with ThreadPoolExecutor(8) as pool:  # json parsing and pickle checks: I/O bound
        found = list(pool.map(lambda p: inspect(p, dataset_dir, span, overwrite), jsons))
    for path, episode in zip(jsons, found):
        report.counts.update(episode.tags)
        report.counts["windows"] += episode.windows
        if episode.text is not None:
            report.todo.append((episode.text, path.with_suffix(".pickle")))
        if episode.problem:
            report.problems.append(episode.problem)
    return report


COLUMNS = (
    ("episodes", "episodes"),
    ("bad json", "bad json"),
    ("no instruction", "no text"),
    ("missing video", "no video"),
    ("too short", "short"),
    ("windows", "windows"),
    ("embedding ok", "emb ok"),
    ("embedding missing", "emb missing"),
    ("embedding refused", "emb refused"),
)


def print_reports(reports: list[SplitReport], span: int) -> None:
    print(f"(short: fewer than {span} frames by len(state), no training windows)")
    rows = [["split", *(title for _, title in COLUMNS)]]
    rows += [[r.split, *(str(r.counts[key]) for key, _ in COLUMNS)] for r in reports]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print(
            "  ".join(
                cell.rjust(w) if i else cell.ljust(w)
                for i, (cell, w) in enumerate(zip(row, widths))
            )
        )
    for r in reports:
        for line in r.problems[:10]:
            print(f"  {r.split}: {line}")
        if len(r.problems) > 10:
            print(f"  {r.split}: ... {len(r.problems) - 10} more")


# ---- embeddings -----------------------------------------------------------------------------
def write_embeddings(
    todo: list[tuple[str, Path]], encoder, batch_size: int, progress: bool = True
) -> int:
    """Encode each (instruction, pickle) pair, longest instruction first, in batches."""
    from tqdm import tqdm

    from framework.models.text import embedding_to_pickle

    ranked = sorted(todo, key=lambda item: (-len(item[0]), str(item[1])))
    with tqdm(
        total=len(ranked), desc="T5 embeddings", unit="json", disable=not progress, file=sys.stderr
    ) as bar:
        for first in range(0, len(ranked), batch_size):
            chunk = ranked[first : first + batch_size]
            emb, lengths = encoder.encode([text for text, _ in chunk])
            for row, (_, out) in enumerate(chunk):
                embedding_to_pickle(emb[row], int(lengths[row]), out)
            bar.update(len(chunk))
    return len(ranked)


@cli
def main(argv: list[str] | None = None) -> int:
    p = parser("bridge", __doc__)
    p.add_argument(
        "--dataset_path",
        default=DEFAULT_DATASET,
        help=f"the Bridge folder (default {DEFAULT_DATASET})",
    )
    p.add_argument("--archive", type=Path, help="bridge_train_data.tar.gz to unpack there first")
    p.add_argument(
        "--splits",
        nargs="+",
        choices=SPLITS,
        help="splits to count and embed (default: every one present)",
    )
    p.add_argument(
        "--num_frames", type=int, default=57, help="training window, for the counts (default 57)"
    )
    p.add_argument("--frame_stride", type=int, default=1, help="the dataset's frame_stride")
    p.add_argument("--skip_t5", action="store_true", help="check and count only")
    add_t5_args(p)
    a = p.parse_args(argv)
    if a.num_frames < 1 or a.frame_stride < 1 or a.batch_size < 1 or not 1 <= a.max_length <= 512:
        raise UserError(
            "--num_frames, --frame_stride and --batch_size must be >= 1 and --max_length in 1..512"
        )
    dataset_dir = Path(a.dataset_path)
    if a.archive:
        dataset_dir.mkdir(parents=True, exist_ok=True)
    if not dataset_dir.is_dir():
        raise UserError(f"dataset folder {dataset_dir} does not exist; create it or pass --archive")
    lay_out(dataset_dir, a.archive)
    present = [s for s in SPLITS if (dataset_dir / "annotation" / s).is_dir()]
    splits = a.splits or present
    missing = [s for s in splits if s not in present]
    if missing or not splits:
        raise UserError(
            f"{dataset_dir / 'annotation'} has no {'/'.join(missing or SPLITS)} folder; "
            f"choose from {present or 'nothing: re-extract the archive'} with --splits"
        )
    span = (a.num_frames - 1) * a.frame_stride + 1
    reports = [survey(dataset_dir, s, span, a.overwrite) for s in splits]
    print_reports(reports, span)
    if not sum(r.counts["episodes"] for r in reports):
        raise UserError(
            f"no readable episode json in {dataset_dir / 'annotation'} ({', '.join(splits)}); "
            "re-extract the archive"
        )
    todo = [item for r in reports for item in r.todo]
    kept = 0 if a.overwrite else sum(r.counts["embedding ok"] for r in reports)
    if a.skip_t5 or not todo:
        note = " (--skip_t5: none written)" if todo else ""
        print(f"{dataset_dir}: {len(todo)} embeddings to write, {kept} present{note}")
        return 0
    t5 = str(download(a.t5, a.hub_id)) if a.download else a.t5
    encoder = load_encoder(t5, a.device, a.dtype, a.max_length)
    written = write_embeddings(todo, encoder, a.batch_size, progress=not a.no_progress)
    print(f"{dataset_dir}: wrote {written} embeddings, kept {kept}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
