"""Where official weights come from, for error messages that say how to get a missing file."""

from __future__ import annotations

from pathlib import Path


def download_hint(path: str | Path) -> str:
    """The command that creates a missing weights file or folder, as one sentence."""
    parts = Path(path).parts
    if "checkpoints" in parts:
        i = parts.index("checkpoints")
        if len(parts) > i + 2:
            local = Path(*parts[: i + 3])
            repo = f"{parts[i + 1]}/{parts[i + 2]}"
            return f"download it with `hf download {repo} --local-dir {local}`"
    if len(parts) == 2 and not Path(path).is_absolute():  # a hub id such as google-t5/t5-11b
        return f"download it with `hf download {path} --local-dir checkpoints/{path}`"
    if Path(path).name == "text_encoder":
        return f"create it with `python -m data_prep.synthetic {Path(path).parent}`"
    return "check the path"
