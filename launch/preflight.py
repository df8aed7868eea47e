"""`launch.train EXP --check` (and the end of `--dryrun`): every file a run reads that is not
there, all at once, each with the command that fetches or makes it, before any process starts.

What a run reads is found in its config: the official weights (`checkpoint.load_path` and every
`path` under `model`), the text encoder (generation only), the dataset folder's layout and a
latent cache. Folders an experiment writes itself on first use (the tiny jobs' synthetic sets)
are not missing.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import NamedTuple

from omegaconf import DictConfig, OmegaConf

from framework.models.hub import download_hint

# Dataset targets that write their folder (and its text encoder) when it is missing.
SELF_MADE = ("synthetic_dataset", "synthetic_bridge_dataset", "synthetic_lerobot_dataset")
GR1_DEFAULT = "benchmark_train/gr1"
BRIDGE_URL = (  # docs/data.md, from upstream's Predict1 instructions
    "https://lf-robot-opensource.bytetos.com/obj/lab-robot-public/opensource_IRASim_v1/"
    "bridge_train_data.tar.gz"
)


class Missing(NamedTuple):
    key: str
    path: str
    fetch: str
    required: bool = True  # False: only generation needs it
    when: str = " (only generation needs it)"  # said when not required

    def line(self) -> str:
        when = "" if self.required else self.when
        return f"{self.key}: {self.path} is missing{when}; {self.fetch}."


def _model_paths(node, prefix: str = "model"):
    """(key, value) of every `path` string under the model node (tokenizers, nested ones too)."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "path" and isinstance(v, str) and v:
                yield f"{prefix}.{k}", v
            else:
                yield from _model_paths(v, f"{prefix}.{k}")


def _text_encoder_path(text) -> str | None:
    """The folder a text encoder reads: a path string, or a node's `path_or_hub_id` when it is
    a path (a bare hub id "org/name" is looked up in the default folder on first use)."""
    if isinstance(text, dict):
        text = text.get("path_or_hub_id")
        if isinstance(text, str) and not Path(text).is_absolute() and text.count("/") < 2:
            return None
    return text if isinstance(text, str) and text else None


def _bridge_fetch(root: str, t5: bool) -> str:
    """Download and lay out the IRASim archive; the instruction recipe also embeds the texts, the
    action recipes read no instruction (`--skip_t5`)."""
    layout = (
        f"`python -m data_prep.bridge --archive {root}/bridge_train_data.tar.gz "
        f"--dataset_path {root}{'' if t5 else ' --skip_t5'}`"
    )
    return f"make it with `wget -P {root} {BRIDGE_URL}` and {layout} (docs/data.md)"


def _dataset_problems(ds: dict, exp: str) -> list[Missing]:
    target = str(ds.get("_target_", ""))
    root = ds.get("dataset_dir")
    if not root or target.rsplit(".", 1)[-1] in SELF_MADE:
        return []
    key, root_p = "data.dataset.dataset_dir", Path(root)
    if target.endswith(("BridgeDataset", "BridgeActionDataset")):
        t5 = target.endswith("BridgeDataset") or ds.get("text") == "t5"
        fetch = _bridge_fetch(root, t5)
        need = [root_p / "annotation" / "train", root_p / "videos" / "train"]
    elif target.endswith("LeRobotDataset"):
        fetch = (
            f"put a LeRobot v2.x or v3.0 dataset there (meta/info.json, data/, videos/; "
            f"docs/data.md, 'LeRobot'), then check it with python -m data_prep.validate {root}"
        )
        need = [root_p / "meta" / "info.json"]
    else:  # the GR1 layout
        if root.rstrip("/").endswith(GR1_DEFAULT):
            fetch = f"make it with `python -m data_prep.gr1 --download --dataset_path {root}`"
        else:
            fetch = (
                f"put your clips in videos/ and captions in metas/ (docs/data.md), then run "
                f"`python -m data_prep.t5_embed {root}`"
            )
        need = [root_p / "videos", root_p / "t5_xxl"]
    if not root_p.is_dir():
        return [Missing(key, root, fetch)]
    out = []
    for folder in need:
        if folder.suffix == ".json":
            if not folder.is_file():
                out.append(Missing(key, f"{folder} (absent)", fetch))
        elif not folder.is_dir() or not any(folder.iterdir()):
            if folder.name == "t5_xxl":
                fix = f"write the caption embeddings with `python -m data_prep.t5_embed {root}`"
            else:
                fix = fetch
            out.append(Missing(key, f"{folder} (empty or absent)", fix))
    cache = ds.get("latent_cache_dir")
    if cache and not Path(cache).is_dir():
        fix = f"build it with `python -m data_prep.latent_cache {exp} --output {cache}`"
        out.append(Missing("data.dataset.latent_cache_dir", cache, fix))
    return out


def missing_files(cfg: DictConfig, experiment: str) -> list[Missing]:
    """Every file or folder the run `cfg` reads that is absent, in config order."""
    tree = OmegaConf.to_container(cfg, resolve=True)
    found: list[Missing] = []
    load = tree["checkpoint"].get("load_path")
    if load and not Path(load).exists():
        found.append(Missing("checkpoint.load_path", load, download_hint(load)))
    for key, path in _model_paths(tree["model"]):
        if not Path(path).exists():
            found.append(Missing(key, path, download_hint(path)))
    ds = tree["data"].get("dataset") or {}
    self_made = str(ds.get("_target_", "")).rsplit(".", 1)[-1] in SELF_MADE
    text = _text_encoder_path(tree["model"].get("text_encoder"))
    if text and not self_made and not Path(text).exists():
        # Training runs the encoder when the data gives captions without embeddings (text=
        # "online", text_embeddings=False), empty ones included; precomputed embeddings
        # (a `_precomputed` recipe's, even with model.empty_prompt=encode) need it only to
        # generate.
        online = ds.get("text") == "online" or ds.get("text_embeddings") is False
        hint = download_hint(text)
        if ds.get("text") == "none" and tree["model"].get("empty_prompt", "zeros") == "zeros":
            # Trained on zero text: an empty prompt is zeros of a known shape, no encoder runs.
            when = " (only generating with a non-empty prompt needs it)"
            found.append(Missing("model.text_encoder", text, hint, required=False, when=when))
        else:
            found.append(Missing("model.text_encoder", text, hint, required=online))
    found += _dataset_problems(ds, experiment)
    return found


def report(cfg: DictConfig, experiment: str) -> tuple[list[str], bool]:
    """(lines to print, whether the run can start)."""
    found = missing_files(cfg, experiment)
    if not found:
        return [f"{experiment}: every file the run reads is present (or made on first use)."], True
    blocking = [m for m in found if m.required]
    head = (
        f"{experiment}: {len(blocking)} missing file(s) or folder(s) stop the run:"
        if blocking
        else f"{experiment}: the run can start; missing for generation:"
    )
    commands = list(dict.fromkeys(c for m in found for c in re.findall(r"`([^`]+)`", m.fetch)))
    tail = ["to fetch them all:", *(f"  {c}" for c in commands)] if commands else []
    return [head, *(f"  {m.line()}" for m in found), *tail], not blocking
