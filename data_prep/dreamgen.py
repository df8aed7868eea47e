"""DreamGen benchmark batch JSON for inference (upstream/cosmos_predict2.md §6.5,
upstream/gr00t_workflow.md §4).

    python -m data_prep.dreamgen --download                   # fetch nvidia/EVAL-175 only
    python -m data_prep.dreamgen \\
        --dataset_path dream_gen_benchmark/gr1_object/ \\
        --save_path output/dream_gen_benchmark/cosmos_predict2_14b_gr1_object/ \\
        --output_path dream_gen_benchmark/gr1_object/batch_input.json

--dataset_path is a benchmark subfolder of conditioning images (*.jpg, *.jpeg, *.png) with a
same-stem .txt prompt beside each (fallback <stem>..txt, which one benchmark file uses). The JSON
(indent 4) is a list sorted by image name of {"input_video": image path, "prompt": full text of the
prompt file, "output_video": <save_path>/<image stem>.mp4}. Images without a prompt are listed and
left out. Re-running rewrites the JSON only when its content would change.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from data_prep.common import UserError, cli, parser, snapshot
from framework.io import atomic_write_text

REPO_ID = "nvidia/EVAL-175"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def prompt_file(image: Path) -> Path | None:
    for candidate in (image.with_suffix(".txt"), image.with_name(f"{image.stem}..txt")):
        if candidate.is_file():
            return candidate
    return None


def build_batch(dataset_path: str | Path, save_path: str | Path) -> tuple[list[dict], list[str]]:
    """(entries sorted by image name, images without a prompt file)."""
    folder = Path(dataset_path)
    if not folder.is_dir():
        raise UserError(
            f"{folder} does not exist; download the benchmark with "
            "python -m data_prep.dreamgen --download"
        )
    images = sorted(
        (p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES),
        key=lambda p: p.name,
    )
    if not images:
        raise UserError(
            f"{folder} holds no .jpg/.png images; pass a benchmark subfolder such as "
            "dream_gen_benchmark/gr1_object/"
        )
    entries, missing = [], []
    for image in images:
        txt = prompt_file(image)
        if txt is None:
            missing.append(str(image))
            continue
        entries.append(
            {
                "input_video": os.path.join(str(dataset_path), image.name),
                "prompt": txt.read_text(encoding="utf-8"),
                "output_video": os.path.join(str(save_path), f"{image.stem}.mp4"),
            }
        )
    return entries, missing


@cli
def main(argv: list[str] | None = None) -> None:
    p = parser("dreamgen", __doc__)
    p.add_argument(
        "--download",
        action="store_true",
        help=f"fetch the HF dataset {REPO_ID} into --benchmark_dir first (resumable)",
    )
    p.add_argument(
        "--benchmark_dir",
        default="dream_gen_benchmark",
        help="where --download puts the benchmark (default dream_gen_benchmark)",
    )
    p.add_argument(
        "--dataset_path", help="benchmark subfolder, e.g. dream_gen_benchmark/gr1_object/"
    )
    p.add_argument("--save_path", help="folder the generated videos will go to")
    p.add_argument(
        "--output_path", help="JSON file to write (default <dataset_path>/batch_input.json)"
    )
    a = p.parse_args(argv)
    if a.download:
        snapshot(REPO_ID, a.benchmark_dir, repo_type="dataset")
        if a.dataset_path is None:
            subs = sorted(
                d.name
                for d in Path(a.benchmark_dir).iterdir()
                if d.is_dir() and not d.name.startswith(".")
            )
            print(f"benchmark in {a.benchmark_dir}: subfolders {', '.join(subs)}")
            return
    if a.dataset_path is None or a.save_path is None:
        raise UserError("--dataset_path and --save_path are required to write the batch JSON")
    if Path(a.save_path).resolve() == Path(a.dataset_path).resolve():
        raise UserError(
            f"--save_path {a.save_path} is the benchmark folder itself: the videos' prompt "
            "records (<stem>.txt) would replace its prompt files; pass another folder"
        )
    entries, missing = build_batch(a.dataset_path, a.save_path)
    for image in missing:
        print(f"skipped {image}: no prompt file ({Path(image).stem}.txt)")
    out = Path(a.output_path or Path(a.dataset_path) / "batch_input.json")
    text = json.dumps(entries, indent=4)
    if out.is_file() and out.read_text(encoding="utf-8") == text:
        print(f"{out} is up to date ({len(entries)} entries); skipped writing")
    else:
        atomic_write_text(out, text)
        print(f"wrote {out}: {len(entries)} entries")
    print(
        f"summary: {len(entries) + len(missing)} images, {len(entries)} with prompts, "
        f"{len(missing)} skipped without a prompt"
    )


if __name__ == "__main__":
    sys.exit(main())
