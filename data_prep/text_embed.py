"""Precomputed text features of a text-encoder component (Predict2.5's Reason1): metas/<stem>.txt
-> <output_dir>/<stem>.pickle, so training reads them instead of running the encoder.

    python -m data_prep.text_embed datasets/benchmark_train/gr1 \
        --experiment predict2_5_groot_gr1_480
    python -m data_prep.text_embed datasets/my_arm --reason1 checkpoints/nvidia/Cosmos-Reason1-7B

Then train with `predict2_5_groot_gr1_480_precomputed` (or any 2.5 recipe with
`data.dataset.text_embeddings=true data.dataset.embedding_dir=reason1
data.dataset.text_dim=100352`).

Every position is stored: Reason1 runs without an attention mask, so the 512 padded positions
all carry states the net attends to (docs/upstream/cosmos_predict2_5.md §2). Each file is a list
holding one float16 [512, 100352] array (98 MiB; docs/data.md says when this pays off), the
official T5 pickles' structure, read by framework/data/safe_load.py's restricted unpickler, which
builds plain float arrays and refuses every other global, so no code in a file runs. float16
loses nothing the net sees: each token's features are normalised over 3584 channels, which
bounds them by (n - 1) / sqrt(n) < 60 (far inside float16's range), and its 10-bit mantissa is
finer than the bf16 the net trains in. T5 pickles (true length only) come from data_prep.t5_embed.

Resumable and atomic as data_prep.t5_embed: existing files are skipped unless --overwrite.
DIR/val/ (val/metas/*.txt) is embedded too, with the same encoder.
"""

from __future__ import annotations

import sys
from pathlib import Path

from data_prep.common import UserError, cli, parser
from data_prep.t5_embed import pending_stems

DEFAULT_OUTPUT_DIR = "reason1"


def experiment_encoder_node(name: str, modules: list[str]):
    """The `model.text_encoder` node experiment `name` trains and generates with."""
    from framework.config import ConfigError, get, load_all
    from framework.config.registry import resolve_name

    try:
        load_all(modules)
        cfg = get(resolve_name(name))
    except ConfigError as err:
        raise UserError(str(err).rstrip(".")) from None
    node = cfg.model.get("text_encoder")
    if node is None or isinstance(node, str):
        raise UserError(
            f"experiment {name} has no text-encoder component (model.text_encoder is {node!r}); "
            "T5 embeddings come from python -m data_prep.t5_embed"
        )
    return node


def build_encoder(args):
    from framework.models.qwen_vl import QwenVLError
    from framework.models.text import build_text_encoder

    if args.reason1:
        from framework.models.text.reason1 import Reason1TextEncoder

        enc = Reason1TextEncoder(args.reason1, dtype=args.dtype, device=args.device)
    else:
        enc = build_text_encoder(experiment_encoder_node(args.experiment, args.module))
        if args.device:
            enc.to_device(args.device)
    try:
        enc.dim  # noqa: B018  (finds the folder: a missing one is one line with the download)
    except (QwenVLError, FileNotFoundError) as err:
        raise UserError(str(err).splitlines()[0].rstrip(".")) from None
    return enc


def embed_folder(
    dataset_dir: Path, encoder, output_dir: str, batch_size: int, overwrite: bool
) -> dict[str, int]:
    """Write <output_dir>/<stem>.pickle (all positions, float16) for every metas/<stem>.txt."""
    from framework.data.safe_load import save_t5_pickle

    todo, skipped = pending_stems(dataset_dir, overwrite, subdir=output_dir)
    out = dataset_dir / output_dir
    out.mkdir(parents=True, exist_ok=True)
    for i in range(0, len(todo), batch_size):
        stems = todo[i : i + batch_size]
        texts = [
            (dataset_dir / "metas" / f"{s}.txt").read_text(encoding="utf-8").strip() for s in stems
        ]
        feats, _ = encoder.encode(texts)
        for stem, feat in zip(stems, feats):
            save_t5_pickle(feat.float().cpu().numpy(), out / f"{stem}.pickle")
    print(f"{dataset_dir}: wrote {len(todo)} feature files to {out}, skipped {len(skipped)}")
    return {"written": len(todo), "skipped": len(skipped)}


@cli
def main(argv: list[str] | None = None) -> None:
    p = parser("text_embed", __doc__)
    p.add_argument("dataset_path", help="dataset folder holding metas/*.txt (and val/metas/)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--experiment", help="use this experiment's model.text_encoder component")
    src.add_argument("--reason1", help="a Cosmos-Reason1 folder (or hub id) to encode with")
    p.add_argument("--module", action="append", default=[], help="module registering it")
    p.add_argument("--output_dir", default=DEFAULT_OUTPUT_DIR, help="folder under DIR (reason1)")
    p.add_argument("--batch_size", type=int, default=4, help="captions per encoder call (4)")
    p.add_argument("--device", default=None, help="cuda, cuda:1, cpu (default: cuda if present)")
    p.add_argument(
        "--dtype", default=None, help="with --reason1: bfloat16, float32 (default bf16 on GPU)"
    )
    p.add_argument("--overwrite", action="store_true", help="re-embed captions whose file exists")
    a = p.parse_args(argv)
    dataset_dir = Path(a.dataset_path)
    if not dataset_dir.is_dir():
        raise UserError(f"dataset folder {dataset_dir} does not exist")
    if a.batch_size < 1:
        raise UserError(f"--batch_size {a.batch_size} must be >= 1")
    folders = [dataset_dir] + (
        [dataset_dir / "val"] if (dataset_dir / "val" / "metas").is_dir() else []
    )
    if not any(pending_stems(d, a.overwrite, subdir=a.output_dir)[0] for d in folders):
        print(f"{dataset_dir}: every caption has its {a.output_dir} file, nothing to do")
        return
    encoder = build_encoder(a)
    for folder in folders:
        embed_folder(folder, encoder, a.output_dir, a.batch_size, a.overwrite)


if __name__ == "__main__":
    sys.exit(main())
