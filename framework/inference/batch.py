"""The items of one generation command: a batch JSON read and every item checked before any work
(inputs, prompts, actions, outputs that may not overwrite inputs, prompt files or each other,
writable folders). video2world and best-of-N share it."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from framework.config import ConfigError
from framework.inference.conditions import read_actions


@dataclass
class Item:
    input_path: str
    prompt: str
    output: str
    frames: torch.Tensor | None = None  # given frames (a held-out item), instead of input_path
    # The family's inputs beyond text and frames, e.g. {"actions": [1, T_a, D]}
    conditions: dict[str, torch.Tensor] = field(default_factory=dict)


def _dataset(cfg) -> dict:
    """The training data node (how actions were normalized), {} without one."""
    data = cfg.get("data") if cfg is not None else None
    return dict(data.get("dataset") or {}) if data is not None else {}


def read_batch(
    path: str | Path, out_dir: Path, dataset: dict | None = None
) -> tuple[list[Item], list[tuple[str, str]]]:
    """Items of a batch JSON, each checked up front; a bad item is rejected alone, with a reason
    (the others still run). A missing prompt means the empty prompt (no text); two items may not
    write the same output, and no output may overwrite an input."""
    try:
        entries = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(
            f"batch JSON {path} cannot be read ({err}); pass a JSON list of "
            "{input_video, prompt, output_video}."
        ) from None
    if not isinstance(entries, list):
        raise ConfigError(
            f"batch JSON {path} must hold a list of {{input_video, prompt, output_video}} objects."
        )
    inputs = {
        Path(e["input_video"]).resolve()
        for e in entries
        if isinstance(e, dict) and isinstance(e.get("input_video"), str) and e["input_video"]
    }
    # Prompt files beside the inputs (<stem>.txt, the benchmark's layout): an output's sidecar
    # must not replace one.
    prompt_files = {p.with_suffix(".txt") for p in inputs if p.with_suffix(".txt").is_file()}
    items, rejected, outputs = [], [], {}
    for i, entry in enumerate(entries):
        reason, item = batch_item(entry, i, out_dir, dataset)
        if item is not None:
            out = Path(item.output).resolve()
            if out in inputs:
                reason = f"output_video {item.output} is an input of this batch; choose another"
            elif out.with_suffix(".txt") in prompt_files:
                reason = (
                    f"output_video {item.output} would replace the prompt file "
                    f"{out.with_suffix('.txt')} of an input; write the outputs to another folder"
                )
            elif out in outputs:
                reason = f"output_video {item.output} is also item {outputs[out]}'s output"
            else:
                outputs[out] = i
                reason = output_problem(item.output)
        if reason:
            rejected.append((f"item {i}", reason))
        else:
            items.append(item)
    return items, rejected


def batch_item(
    entry: object, i: int, out_dir: Path, dataset: dict | None = None
) -> tuple[str, Item | None]:
    """("", item) for a usable batch entry, else (reason, None)."""
    if not isinstance(entry, dict):
        return f"is a {type(entry).__name__}, not an object with input_video and prompt", None
    source, prompt = entry.get("input_video"), entry.get("prompt", "")
    out = entry.get("output_video") or str(out_dir / f"output_{i}.mp4")
    if not isinstance(source, str) or not source:
        return "needs input_video: the path of an image or a video", None
    if not Path(source).is_file():
        return f"input_video {source} does not exist", None
    if prompt is None:
        prompt = ""
    if not isinstance(prompt, str):
        return f"prompt must be a string, not a {type(prompt).__name__}", None
    if not isinstance(out, str):
        return f"output_video must be a path string, not a {type(out).__name__}", None
    extra = {}
    if entry.get("actions") is not None:
        try:
            extra["actions"] = read_actions(str(entry["actions"]), dataset)
        except ConfigError as err:
            return str(err), None
    return "", Item(source, prompt, out, conditions=extra)


def output_problem(out: str | Path, what: str = "output_video") -> str:
    """Why a video cannot be written at `out` ("" if it can), known before any work: the
    suffix (the writer makes H.264 mp4, its prompt record is the .txt beside it), a folder in
    the way, or a folder that cannot be created or written."""
    out = Path(out)
    if out.suffix.lower() != ".mp4":
        return f"{what} {out} must end in .mp4 (the videos are H.264 mp4)"
    if out.is_dir():
        return f"{what} {out} is a folder; name an .mp4 file"
    return folder_problem(out.parent, what)


def folder_problem(folder: Path, what: str) -> str:
    """Why files cannot be written into `folder` (created if missing): the nearest existing
    ancestor must be a writable folder."""
    probe = Path(folder).absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        return f"{what}: {probe} is a file, so the folder {folder} cannot be created"
    if not os.access(probe, os.W_OK | os.X_OK):
        return f"{what}: the folder {probe} is not writable; choose another place"
    return ""
