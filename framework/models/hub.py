"""Where official weights come from, for error messages that say how to get a missing file."""

from __future__ import annotations

import os
from pathlib import Path


def download_hint(path: str | Path) -> str:
    """The command that creates a missing weights file or folder, as one sentence."""
    path = Path(path)
    local = _hub_folder(path)
    if local is not None:
        repo = f"{local.parent.name}/{local.name}"
        return f"download it with `hf download {repo} --local-dir {local}`"
    if len(path.parts) == 2 and not path.is_absolute():  # a hub id such as google-t5/t5-11b
        return f"download it with `hf download {path} --local-dir checkpoints/{path}`"
    if path.name == "text_encoder":
        return f"create it with `python -m data_prep.synthetic {path.parent}`"
    return "check the path"


def _hub_folder(path: Path) -> Path | None:
    """<root>/<org>/<repo> of a path under the weights root: $CHECKPOINTS (the experiments'
    root, any name) or a folder called `checkpoints`."""
    root = os.environ.get("CHECKPOINTS")
    if root:
        try:
            rel = path.relative_to(root)
        except ValueError:
            rel = None
        if rel is not None and len(rel.parts) >= 2:
            return Path(root, *rel.parts[:2])
    parts = path.parts
    if "checkpoints" in parts:
        i = parts.index("checkpoints")
        if len(parts) > i + 2:
            return Path(*parts[: i + 3])
    return None
