"""T5 embeddings for a dataset folder: metas/<stem>.txt -> t5_xxl/<stem>.pickle
(upstream/cosmos_predict2.md §6.3, §6.4).

Each pickle is the official format: a list holding one float16 array [n_tokens, 1024], n_tokens the
true token count of the prompt including EOS, capped at max_length (512). Prompts are stripped of
surrounding whitespace, as upstream's get_t5_embeddings.py does.

    python -m data_prep.t5_embed datasets/benchmark_train/gr1 --download
    python -m data_prep.t5_embed datasets/my_arm --experiment tiny_gr1 --device cpu

Which encoder: the one the experiment you will train names in `model.text_encoder` (generation
embeds prompts with it again, so the two must match). `--experiment EXP` uses exactly that:
T5-11B (checkpoints/google-t5/t5-11b) for the GR1 and Bridge recipes, and for tiny_gr1 the small
T5 of its synthetic set (datasets/synthetic_gr1/text_encoder, made by `make train` or
`python -m data_prep.synthetic datasets/synthetic_gr1`). `--t5 DIR` names a folder directly.
A held-out split in DIR/val/ (val/metas/*.txt) is embedded too, with the same encoder.

Resumable: stems whose pickle exists are skipped (counted in the output) unless --overwrite; every
pickle is written to a temporary file and renamed, so an interrupted run leaves no partial files.
"""

from __future__ import annotations

import sys
from pathlib import Path

from data_prep.common import UserError, cli, parser

DEFAULT_T5 = "checkpoints/google-t5/t5-11b"
DEFAULT_HUB_ID = "google-t5/t5-11b"
DTYPES = {"fp32": "float32", "bf16": "bfloat16"}


def pending_stems(
    dataset_dir: Path, overwrite: bool = False, subdir: str = "t5_xxl"
) -> tuple[list[str], list[str]]:
    """(stems to embed, stems skipped because <subdir>/<stem>.pickle exists)."""
    metas = dataset_dir / "metas"
    if not metas.is_dir():
        raise UserError(
            f"{metas} does not exist; write one prompt per video as metas/<stem>.txt "
            "(python -m data_prep.gr1 does it for GR1)"
        )
    stems = sorted(p.stem for p in metas.glob("*.txt"))
    if not stems:
        raise UserError(f"{metas} holds no .txt prompt files; write metas/<stem>.txt per video")
    if overwrite:
        return stems, []
    done = {s for s in stems if (dataset_dir / subdir / f"{s}.pickle").is_file()}
    return [s for s in stems if s not in done], sorted(done)


def t5_source(t5: str, hub_id: str) -> tuple[str, Path]:
    """(hub id to download, local folder) for --t5: a local folder, or a hub id like org/name."""
    path = Path(t5)
    looks_like_hub_id = (
        not path.exists()
        and t5.count("/") == 1
        and not t5.startswith((".", "/"))
        and t5.split("/")[0] != "checkpoints"
    )
    if looks_like_hub_id:
        from framework.models.text import default_local_dir

        return t5, default_local_dir(t5)
    return hub_id, path


def load_encoder(t5: str, device: str | None, dtype: str, max_length: int):
    from framework.models.text import T5TextEncoder

    try:
        return T5TextEncoder(t5, max_length=max_length, dtype=DTYPES[dtype], device=device)
    except FileNotFoundError as err:
        raise UserError(str(err)) from None


def embed_dataset(
    dataset_dir: str | Path,
    t5: str = DEFAULT_T5,
    batch_size: int = 8,
    device: str | None = None,
    dtype: str = "fp32",
    max_length: int = 512,
    overwrite: bool = False,
    encoder=None,
    progress: bool = True,
) -> dict[str, int]:
    """Write t5_xxl/<stem>.pickle for every metas/<stem>.txt; returns {"written", "skipped"}.

    The encoder is only loaded when something is left to embed; pass `encoder` (a
    framework.models.text.T5TextEncoder) to reuse one.
    """
    from tqdm import tqdm

    from framework.models.text import embedding_to_pickle

    dataset_dir = Path(dataset_dir)
    if batch_size < 1 or not 1 <= max_length <= 512:
        raise UserError(
            f"--batch_size {batch_size} must be >= 1 and --max_length {max_length} in 1..512"
        )
    todo, skipped = pending_stems(dataset_dir, overwrite)
    if skipped:
        print(
            f"skipped {len(skipped)} prompts whose t5_xxl pickle exists (--overwrite to redo them)"
        )
    if not todo:
        print(f"{dataset_dir}: all {len(skipped)} embeddings present, nothing to do")
        return {"written": 0, "skipped": len(skipped)}
    prompts = {
        s: (dataset_dir / "metas" / f"{s}.txt").read_text(encoding="utf-8").strip() for s in todo
    }
    if encoder is None:
        encoder = load_encoder(t5, device, dtype, max_length)
    # Longest first: similar lengths share a batch (less padding) and memory peaks at once.
    order = sorted(todo, key=lambda s: -len(prompts[s]))
    out_dir = dataset_dir / "t5_xxl"
    out_dir.mkdir(parents=True, exist_ok=True)
    bar = tqdm(
        total=len(order), desc="T5 embeddings", unit="prompt", disable=not progress, file=sys.stderr
    )
    for i in range(0, len(order), batch_size):
        batch = order[i : i + batch_size]
        emb, lengths = encoder.encode([prompts[s] for s in batch])
        for j, stem in enumerate(batch):
            embedding_to_pickle(emb[j], int(lengths[j]), out_dir / f"{stem}.pickle")
        bar.update(len(batch))
    bar.close()
    print(f"{dataset_dir}: wrote {len(order)} embeddings to {out_dir}, skipped {len(skipped)}")
    return {"written": len(order), "skipped": len(skipped)}


def download(t5: str, hub_id: str) -> Path:
    from framework.models.text import download_t5

    hub, local = t5_source(t5, hub_id)
    print(f"downloading {hub} into {local} (files already there are skipped)")
    try:
        return download_t5(hub, local)
    except Exception as err:  # noqa: BLE001
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UserError(
            f"downloading {hub} failed: {msg}; check the network, then re-run "
            "(finished files are kept)"
        ) from err


def add_t5_args(p) -> None:
    p.add_argument(
        "--t5",
        default=DEFAULT_T5,
        help=f"T5 encoder folder, or a hub id (downloaded to checkpoints/<id>) "
        f"(default {DEFAULT_T5})",
    )
    p.add_argument(
        "--hub_id",
        default=DEFAULT_HUB_ID,
        help=f"hub repository --download fetches into a --t5 folder (default {DEFAULT_HUB_ID})",
    )
    p.add_argument(
        "--download",
        action="store_true",
        help="fetch the T5 checkpoint with huggingface_hub first (resumable; t5-11b "
        "PyTorch weights are ~45 GB)",
    )
    p.add_argument("--batch_size", type=int, default=8, help="prompts per encoder call (default 8)")
    p.add_argument("--device", default=None, help="cuda, cuda:1, cpu (default: cuda if present)")
    p.add_argument(
        "--dtype",
        choices=sorted(DTYPES),
        default="fp32",
        help="encoder precision (default fp32, as upstream; pickles are float16 anyway)",
    )
    p.add_argument(
        "--max_length",
        type=int,
        default=512,
        help="token cap incl. EOS (default 512 = upstream NUM_EMBEDDING_PADDING_TOKENS)",
    )
    p.add_argument("--overwrite", action="store_true", help="re-embed prompts whose pickle exists")
    p.add_argument("--no_progress", action="store_true", help="no tqdm bar")


def run_t5_args(dataset_dir: Path, a) -> dict[str, int]:
    """Embed DIR and, when it has one, DIR/val with one encoder (loaded only if needed)."""
    t5 = a.t5
    if a.download:
        t5 = str(download(a.t5, a.hub_id))
    folders = [dataset_dir] + (
        [dataset_dir / "val"] if (dataset_dir / "val" / "metas").is_dir() else []
    )
    todo = [d for d in folders if pending_stems(d, a.overwrite)[0]]
    encoder = load_encoder(t5, a.device, a.dtype, a.max_length) if todo else None
    total = {"written": 0, "skipped": 0}
    for folder in folders:
        done = embed_dataset(
            folder,
            t5=t5,
            batch_size=a.batch_size,
            device=a.device,
            dtype=a.dtype,
            max_length=a.max_length,
            overwrite=a.overwrite,
            encoder=encoder,
            progress=not a.no_progress,
        )
        total = {k: total[k] + done[k] for k in total}
    return total


def experiment_encoder(name: str, modules: list[str]) -> str:
    """The text encoder folder experiment `name` trains and generates with (model.text_encoder)."""
    from framework.config import ConfigError, get, load_all
    from framework.config.registry import resolve_name
    from framework.models.hub import download_hint

    try:
        load_all(modules)
        cfg = get(resolve_name(name))
    except ConfigError as err:
        raise UserError(str(err).rstrip(".")) from None
    t5 = cfg.model.get("text_encoder")
    if not isinstance(t5, str) or not t5:
        raise UserError(f"experiment {name} names no text encoder folder (model.text_encoder)")
    if not Path(t5).exists():
        raise UserError(f"{name}'s text encoder {t5} does not exist; {download_hint(t5)}")
    return t5


@cli
def main(argv: list[str] | None = None) -> None:
    p = parser("t5_embed", __doc__)
    p.add_argument("dataset_path", help="dataset folder holding metas/*.txt (and val/metas/)")
    p.add_argument(
        "--experiment",
        help="use the text encoder this experiment trains with (its model.text_encoder), "
        "instead of --t5",
    )
    p.add_argument("--module", action="append", default=[], help="module registering it")
    add_t5_args(p)
    a = p.parse_args(argv)
    dataset_dir = Path(a.dataset_path)
    if not dataset_dir.is_dir():
        raise UserError(f"dataset folder {dataset_dir} does not exist")
    pending_stems(dataset_dir)  # fail on a missing metas/ before any download
    if a.experiment:
        a.t5 = experiment_encoder(a.experiment, a.module)
    run_t5_args(dataset_dir, a)


if __name__ == "__main__":
    sys.exit(main())
