"""Alias kept for users of the old merge command: `framework.export --to pt` does the merge.

    python -m framework.models.cosmos2.merge_lora CHECKPOINT OUT.pt [export options]
  = python -m framework.export CHECKPOINT --to pt OUT.pt [export options]

Export rebuilds the model from the job's config.yaml, folds the LoRA adapters in (into the base
from the job's `checkpoint.load_path` when the run saved adapters only) and writes the official
layout atomically; rank and alpha come from the config.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from framework import export

    argv = sys.argv[1:] if argv is None else list(argv)
    if len(argv) < 2 or argv[0].startswith("-") or argv[1].startswith("-"):
        print(
            "usage: python -m framework.models.cosmos2.merge_lora CHECKPOINT OUT.pt",
            file=sys.stderr,
        )
        return 2
    return export.main([argv[0], "--to", "pt", argv[1], *argv[2:]])


if __name__ == "__main__":
    sys.exit(main())
