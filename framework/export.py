"""Export a checkpoint for other tools: diffusers, or the official layout as safetensors or .pt.

    python -m framework.export CHECKPOINT --to diffusers OUT_DIR
    python -m framework.export CHECKPOINT --to safetensors OUT.safetensors
    python -m framework.export CHECKPOINT --to pt OUT.pt
        [--experiment NAME] [--module MOD] [--load_ema] [--dtype float32|bfloat16] [--overwrite]
        [--trust_config] [-- KEY=VALUE]

The model is rebuilt as inference does (the job's config.yaml next to a `model/iter_N.pt` or a
`checkpoints/optim/iter_N/` folder of `checkpoint.format=dcp`, or `--experiment` for an official
file), a LoRA run's adapters folded in (into the base from the job's `checkpoint.load_path` when
the run saved adapters only). `JOB/checkpoints/model/iter_N.pt` also names a format=dcp step
whose model file was not written: the weights are then read from its sharded folder.
`diffusers` writes a folder that `<family.diffusers_class>.from_pretrained(OUT_DIR)` loads (the
family names the class, its config and the key renames); `safetensors` and `pt` write one state
dict in the official layout (`net.*` plus extra modules such as `logvar.*`), which upstream's
scripts read. Writes are atomic. An existing file or non-empty folder is replaced only with
`--overwrite`; a job folder's own files never. `--trust_config` lets the job's config.yaml name
any `_target_` (framework/config/trust.py). Exit 2 on a user error.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import torch
from omegaconf.errors import OmegaConfBaseException

from framework import jobs
from framework.config import ConfigError
from framework.inference import loading
from framework.io import UnsafeFileError, atomic_torch_save, atomic_write, temp_dir_beside

FORMATS = ("diffusers", "safetensors", "pt")


def official_state_dict(model: torch.nn.Module, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """`net.*` and the extra modules' keys, as contiguous CPU tensors of `dtype`."""
    sd = model.state_dict()
    return {k: v.detach().to("cpu", dtype).contiguous() for k, v in sd.items()}


def to_diffusers(model: torch.nn.Module, out_dir: Path, dtype: torch.dtype) -> Path:
    """Write the net as a diffusers model folder (config.json + safetensors)."""
    import diffusers

    family = model.family
    if family.to_diffusers is None or family.diffusers_config is None:
        raise ConfigError(f"model family {family.name!r} has no diffusers conversion.")
    ref = getattr(diffusers, family.diffusers_class)(**family.diffusers_config(model.net))
    sd = {k: v for k, v in model.net.state_dict().items() if not family.is_ignored(k)}
    ref.load_state_dict(family.to_diffusers(sd), strict=True)
    ref.to(dtype)
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_dir_beside(out_dir)  # the umask's mode, not mkdtemp's 0700
    try:
        ref.save_pretrained(tmp, safe_serialization=True)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def check_target(out: Path, fmt: str, overwrite: bool) -> None:
    """Before any work: never write over a job folder's own files (its config, record or
    checkpoints), and replace an existing file or non-empty folder only with --overwrite."""
    out = Path(out)
    if jobs.is_job_file(out) or (out.is_dir() and _holds_a_job(out)):
        raise ConfigError(
            f"{out} is (or holds) a training job's own files; export somewhere outside the job's "
            "config.yaml, metrics and checkpoints/."
        )
    if fmt == "diffusers":
        if out.exists() and not out.is_dir():
            raise ConfigError(f"{out} is a file; --to diffusers writes a folder: name another.")
        taken = out.is_dir() and any(out.iterdir())
    else:
        if out.is_dir():
            raise ConfigError(f"{out} is a folder; --to {fmt} writes one file: name a file.")
        taken = out.exists()
    if taken and not overwrite:
        what = "is not empty" if out.is_dir() else "exists"
        raise ConfigError(f"{out} {what}; pass --overwrite to replace it, or name another.")


def _holds_a_job(folder: Path) -> bool:
    if (folder / jobs.CONFIG).is_file() and (folder / jobs.CHECKPOINTS).is_dir():
        return True
    return any(True for _ in folder.glob(f"**/{jobs.CHECKPOINTS}/{jobs.LATEST}"))


def export(model: torch.nn.Module, fmt: str, out: Path, dtype: torch.dtype) -> Path:
    if fmt == "diffusers":
        return to_diffusers(model, out, dtype)
    sd = official_state_dict(model, dtype)
    if fmt == "pt":
        return atomic_torch_save(sd, out)
    from safetensors.torch import save

    return atomic_write(out, lambda f: f.write(save(sd, metadata={"format": "pt"})))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m framework.export", description=__doc__.split("\n\n")[0]
    )
    p.add_argument(
        "checkpoint", help="model/iter_N.pt or optim/iter_N/ of a job, or an official .pt"
    )
    p.add_argument("--to", choices=FORMATS, required=True, dest="fmt")
    p.add_argument("out", help="output folder (diffusers) or file")
    p.add_argument("--experiment", help="experiment that defines the model (official files)")
    p.add_argument("--module", action="append", default=[], help="extra experiment module")
    p.add_argument("--load_ema", action="store_true", help="export the EMA weights")
    p.add_argument(*loading.TRUST_CONFIG_ARG, **loading.TRUST_CONFIG_KW)
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    p.add_argument(
        "--overwrite", action="store_true", help="replace an existing file or non-empty folder"
    )
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    cut = argv.index("--") if "--" in argv else len(argv)
    args = build_parser().parse_args(argv[:cut])
    try:
        check_target(Path(args.out), args.fmt, args.overwrite)
        cfg, ckpt = loading.resolve(
            args.experiment,
            argv[cut + 1 :],
            args.checkpoint,
            modules=args.module,
            trust_config=args.trust_config,
        )
        model = loading.build_model(cfg, ckpt, args.load_ema, device="cpu")
        out = export(model, args.fmt, Path(args.out), getattr(torch, args.dtype))
    except (ConfigError, OmegaConfBaseException, FileNotFoundError, ValueError) as err:
        print(f"error: {str(err).splitlines()[0]}", file=sys.stderr)
        return 2
    except UnsafeFileError as err:
        print(f"error: {str(err).splitlines()[0]}", file=sys.stderr)
        return 2
    print(f"wrote {out} ({args.fmt}, {args.dtype}{', EMA' if args.load_ema else ''})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
