"""Fixed evaluation sets: declared in the experiment (`cfg.eval`), frozen to a manifest.

`cfg.eval` says which held-out items (the first `num_items` of the dataset's held-out split, in
its fixed order, or the ones named in `item_names`), and how they are generated (seeds, guidance,
steps, conditional frames) and scored (metrics). The first evaluation writes a manifest,
`<output_root>/<project>/eval/<name>.manifest.json`: those settings plus, per item, its id and
the sha256 of the video file, of the decoded frames the model sees, and of the caption
embedding. Every later evaluation of that name, months apart or from another run, reads the
items again and refuses to score when an id or a hash differs, so two numbers under one name
always come from the same clips.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from framework.data.heldout import HeldOutItem, build_dataset, heldout_of
from framework.io import atomic_write_text

DEFAULT_METRICS = ("psnr", "ssim", "latent_l2")


class EvalSetChanged(ValueError):
    """The data or settings under a frozen manifest changed; the message names the fix."""


@dataclass
class EvalSpec:
    """One eval set: the items and how they are generated and scored (`cfg.eval`)."""

    name: str
    num_items: int = 4
    seeds: list[int] = field(default_factory=lambda: [0])
    guidance: float = 7.0
    num_steps: int = 35
    num_conditional_frames: int = 1
    metrics: list[str] = field(default_factory=lambda: list(DEFAULT_METRICS))
    dataset_dir: str | None = None  # None: the training data's held-out split
    manifest: str | None = None  # None: <output_root>/<project>/eval/<name>.manifest.json
    # Held-out item names, in this order; None: the first num_items. (Not `items`: a
    # DictConfig's cfg.eval.items is its dict method.)
    item_names: list[str] | None = None

    def frozen(self) -> dict[str, Any]:
        """What the manifest pins besides the items (metrics may be added later); `item_names`
        only when given, so manifests frozen before the key existed stay valid."""
        keys = ("num_items", "seeds", "guidance", "num_steps", "num_conditional_frames")
        out = {k: getattr(self, k) for k in keys}
        return {**out, "item_names": list(self.item_names)} if self.item_names is not None else out


def spec_of(cfg: DictConfig, **overrides: Any) -> EvalSpec:
    """The config's `eval` node (defaults where absent: `<group>_heldout`, 4 items, seed 0),
    with command-line `overrides` (None values ignored)."""
    node = cfg.get("eval") if "eval" in cfg else None
    values = OmegaConf.to_container(node, resolve=True) if node is not None else {}
    fields = EvalSpec.__dataclass_fields__
    values = {k: v for k, v in (values or {}).items() if k in fields and v is not None}
    values.update({k: v for k, v in overrides.items() if v is not None})
    values.setdefault("name", f"{cfg.job.group}_heldout")
    # Not set by the eval node or the command: generate as the model's own commands do (its
    # sampler node: an action recipe's guidance 0, a student's 4 steps; else the old rule).
    from framework.inference.settings import guidance_for, sampler_node

    values.setdefault("guidance", guidance_for(cfg, None))
    values.setdefault("num_steps", int(sampler_node(cfg).get("num_steps", 35)))
    spec = EvalSpec(**values)
    spec.seeds = [int(s) for s in spec.seeds]
    spec.metrics = list(spec.metrics)
    if spec.item_names is not None:
        names = [str(n) for n in spec.item_names]
        if not names or len(set(names)) != len(names):
            raise ValueError(
                f"eval set {spec.name}: eval.item_names {names} must name at least one held-out "
                "item, each once; fix cfg.eval.item_names."
            )
        # The names decide how many; a command-line --num_items keeps the first ones.
        spec.item_names = names[: overrides.get("num_items") or len(names)]
        spec.num_items = len(spec.item_names)
    return spec


def select_items(dataset: Any, spec: EvalSpec, num_frames: int) -> list[HeldOutItem]:
    """The first `num_items` held-out items, or those named in `spec.item_names`, in order.
    Datasets list held-out items only from the start of their split, so naming items reads the
    whole split once (its decoded clips are in memory together) and keeps the named ones."""
    if spec.item_names is None:
        return heldout_of(dataset, spec.num_items, num_frames)
    every = heldout_of(dataset, 1 << 30, num_frames)
    by_name = {it.name: it for it in every}
    unknown = [n for n in spec.item_names if n not in by_name]
    if unknown:
        some = ", ".join(sorted(by_name)[:5]) + (", ..." if len(by_name) > 5 else "")
        raise EvalSetChanged(
            f"eval set {spec.name}: eval.item_names {unknown} are not readable held-out items "
            f"of the split ({len(by_name)} items: {some}); fix cfg.eval.item_names."
        )
    return [by_name[n] for n in spec.item_names]


def output_dir(cfg: DictConfig) -> Path:
    """<output_root>/<project>/eval: beside the project's jobs, shared by all of them."""
    from framework import jobs

    return jobs.job_dir_of(cfg).parent.parent / "eval"


def manifest_path(cfg: DictConfig, spec: EvalSpec) -> Path:
    return Path(spec.manifest) if spec.manifest else output_dir(cfg) / f"{spec.name}.manifest.json"


def _sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _sha256_tensor(t: Any) -> str:
    return hashlib.sha256(t.detach().cpu().contiguous().numpy().tobytes()).hexdigest()


def item_record(item: HeldOutItem) -> dict[str, Any]:
    """The manifest entry of one item: id, source and content hashes."""
    return {
        "name": item.name,
        "source": item.source,
        "video_sha256": _sha256_file(item.source) if item.source else None,
        "frames_sha256": _sha256_tensor(item.video),
        # None when the model encodes the caption online (the prompt is recorded below).
        "text_sha256": _sha256_tensor(item.text_emb) if item.text_emb is not None else None,
        "prompt": item.prompt,
        **(
            {"conditions_sha256": {k: _sha256_tensor(v) for k, v in item.conditions.items()}}
            if item.conditions
            else {}
        ),
    }


def check(
    manifest: dict[str, Any],
    spec: EvalSpec,
    records: list[dict[str, Any]],
    path: Path,
    settings: bool = True,
) -> None:
    """Raise EvalSetChanged when the settings (unless `settings` is False) or any item differ
    from the manifest."""
    fix = f"restore the data, or evaluate under a new eval.name (or delete {path} to re-freeze)"
    if settings and manifest.get("settings") != spec.frozen():
        raise EvalSetChanged(
            f"eval set {spec.name}: cfg.eval settings {spec.frozen()} differ from the frozen "
            f"{manifest.get('settings')} in {path}; {fix}."
        )
    old = [m["name"] for m in manifest["items"]]
    new = [r["name"] for r in records]
    if old != new:
        raise EvalSetChanged(
            f"eval set {spec.name}: the held-out items are now {new}, the manifest {path} froze "
            f"{old}; {fix}."
        )
    for m, r in zip(manifest["items"], records, strict=True):
        for key in ("video_sha256", "frames_sha256", "text_sha256"):
            if m.get(key) != r.get(key):
                what = {"video_sha256": "video file", "frames_sha256": "decoded frames"}.get(
                    key, "caption embedding"
                )
                raise EvalSetChanged(
                    f"eval set {spec.name}: the {what} of item {r['name']} ({r['source']}) "
                    f"changed since {path} was frozen; {fix}."
                )


@dataclass
class EvalSet:
    spec: EvalSpec
    items: list[HeldOutItem]
    manifest: Path
    created: bool  # this call froze the manifest

    def describe(self) -> dict[str, Any]:
        return {**asdict(self.spec), "manifest": str(self.manifest), "frozen_now": self.created}


def load_eval_set(
    cfg: DictConfig, num_frames: int, spec: EvalSpec | None = None, check_settings: bool = True
) -> EvalSet:
    """The spec's items, checked against its manifest (written on first use). The training
    hook passes check_settings=False: it scores the frozen items with its own cheaper
    settings."""
    spec = spec or spec_of(cfg)
    dataset = build_dataset(cfg.data.dataset, spec.dataset_dir)
    items = select_items(dataset, spec, num_frames)
    records = [item_record(it) for it in items]
    path = manifest_path(cfg, spec)
    if path.is_file():
        try:
            manifest = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
            raise EvalSetChanged(
                f"manifest {path} cannot be read ({err}); restore it or delete it to re-freeze."
            ) from None
        check(manifest, spec, records, path, check_settings)
        return EvalSet(spec, items, path, created=False)
    if len(items) < spec.num_items:
        raise EvalSetChanged(
            f"eval set {spec.name} asks for {spec.num_items} items but the held-out split has "
            f"{len(items)} readable ones; lower eval.num_items or add held-out clips."
        )
    manifest = {
        "name": spec.name,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "settings": spec.frozen(),
        "items": records,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(manifest, indent=1) + "\n")
    return EvalSet(spec, items, path, created=True)
