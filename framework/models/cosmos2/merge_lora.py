"""Fold a LoRA training checkpoint into a plain `.pt` that upstream's inference scripts load.

    python -m framework.models.cosmos2.merge_lora JOB/checkpoints/model/iter_000001000.pt OUT.pt
    python -m framework.models.cosmos2.merge_lora JOB/checkpoints/optim/iter_000000800 OUT.pt

Rank and alpha come from the job's `config.yaml` (next to `checkpoints/`) unless given. A run
that started from `checkpoint.load_path` saves the adapters only; their base is read from that
file (`--base` names another). A format=dcp step without a model file is read from its folder.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from framework.config import ConfigError, from_yaml
from framework.io import atomic_torch_save, read_checkpoint
from framework.models import lora_files
from framework.models.cosmos2.lora import merge_lora_state_dict


def _job_of(checkpoint: Path) -> Path:
    """<job> of <job>/checkpoints/model/iter_N.pt or <job>/checkpoints/optim/iter_N."""
    return checkpoint.absolute().parents[2]


def lora_settings(checkpoint: Path) -> tuple[float, int]:
    """(alpha, rank) from the run's config.yaml."""
    config = _job_of(checkpoint) / "config.yaml"
    if not config.is_file():
        raise ConfigError(f"{config} not found; pass --rank and --alpha.")
    lora = from_yaml(config).model.get("lora")
    if not lora:
        raise ConfigError(f"{config} has no model.lora; this run did not train LoRA.")
    return float(lora.alpha), int(lora.rank)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint", type=Path, help="a model/iter_N.pt (or optim/iter_N/) of a run")
    p.add_argument("output", type=Path, help="where to write the merged .pt")
    p.add_argument("--rank", type=int, default=None)
    p.add_argument("--alpha", type=float, default=None)
    p.add_argument("--base", type=Path, default=None, help="base model for adapters-only files")
    args = p.parse_args(argv)
    try:
        alpha, rank = (
            (args.alpha, args.rank) if args.rank and args.alpha else lora_settings(args.checkpoint)
        )
        from framework.inference.loading import read_weights

        state = read_weights(args.checkpoint)
        if lora_files.is_adapter_only(state):
            base = args.base or lora_files.base_path_of_job(_job_of(args.checkpoint))
            state = lora_files.with_base(state, read_checkpoint(base))
        merged = merge_lora_state_dict(state, alpha=alpha, rank=rank)
    except (ConfigError, FileNotFoundError, ValueError, RuntimeError) as err:
        print(f"error: {str(err).splitlines()[0]}", file=sys.stderr)
        return 2
    atomic_torch_save(merged, args.output)  # never a half-written file under the final name
    print(f"wrote {args.output} ({len(merged)} tensors, LoRA rank {rank} alpha {alpha} merged)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
