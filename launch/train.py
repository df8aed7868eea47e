"""The training entry point that `make train` and torchrun run.

    python -m launch.train EXP [KEY=VALUE ...] [--dryrun] [--module MOD ...]
    python -m launch.train --list
    python -m launch.train -- experiment=EXP KEY=VALUE ...      (the upstream spelling)

User mistakes (unknown experiment, bad override, bad value) print one line and exit with code 2.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

from omegaconf.errors import OmegaConfBaseException

from framework.config import ConfigError, apply_overrides, get, load_all, to_yaml
from framework.config.registry import entries, resolve_name
from framework.trainer.validate import validate

USAGE = __doc__.split("\n\n")[1]
USER_ERROR = 2
DEFAULT_EXPERIMENT = "tiny_gr1"


@dataclass
class Args:
    experiment: str = DEFAULT_EXPERIMENT
    overrides: list[str] = field(default_factory=list)
    modules: list[str] = field(default_factory=list)
    dryrun: bool = False
    list: bool = False


def parse_args(argv: list[str]) -> Args:
    args, named = Args(), None
    tokens = iter(argv)
    for tok in tokens:
        if tok == "--":
            continue  # the upstream form requires it before the overrides; we accept it anywhere
        if tok in ("-h", "--help"):
            print(USAGE)
            sys.exit(0)
        if tok == "--dryrun":
            args.dryrun = True
        elif tok == "--list":
            args.list = True
        elif tok == "--module":
            args.modules.append(next(tokens, ""))
        elif tok.startswith("--module="):
            args.modules.append(tok.split("=", 1)[1])
        elif tok.startswith("--config"):
            continue  # upstream's `--config=.../config.py`: one registry here, nothing to choose
        elif tok.startswith("-"):
            raise ConfigError(f"unknown option {tok}; see `python -m launch.train --help`.")
        elif tok.startswith("experiment="):
            named = tok.split("=", 1)[1]
        elif named is None and "=" not in tok and not tok.startswith(("~", "+")):
            named = tok
        else:
            args.overrides.append(tok)
    if any(not m for m in args.modules):
        raise ConfigError("--module needs a module name, e.g. --module my_lab.experiments.")
    args.experiment = named or DEFAULT_EXPERIMENT
    return args


def print_list() -> None:
    rows = [(e.name, e.description, ", ".join(e.aliases)) for e in entries()]
    width = max(len(r[0]) for r in rows)
    for name, desc, aliases in rows:
        print(f"{name:<{width}}  {desc}")
        if aliases:
            print(f"{'':<{width}}    also: {aliases}")


def dryrun(cfg) -> None:
    """Print the resolved config and the model's parameter counts, built on the meta device."""
    import torch

    from framework.config import instantiate
    from framework.models.meta import building_on_meta

    print(to_yaml(cfg, resolve=True))
    with torch.device("meta"), building_on_meta():
        model = instantiate(cfg.model)
    rows = [
        (name, sum(p.numel() for p in child.parameters())) for name, child in model.named_children()
    ]
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    width = max([len(r[0]) for r in rows] + [9])
    print(f"{'module':<{width}}  {'parameters':>16}")
    for name, count in rows:
        print(f"{name:<{width}}  {count:>16,}")
    print(f"{'total':<{width}}  {total:>16,}")
    print(f"{'trainable':<{width}}  {trainable:>16,}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = parse_args(argv)
        load_all(args.modules)
        if args.list:
            print_list()
            return 0
        cfg = get(resolve_name(args.experiment))
        apply_overrides(cfg, args.overrides)
        validate(cfg)
        if args.dryrun:
            dryrun(cfg)
            return 0
    except (ConfigError, OmegaConfBaseException) as err:
        print(f"error: {str(err).splitlines()[0]}", file=sys.stderr)
        return USER_ERROR
    from framework.trainer import run

    return run(cfg, args.overrides)


if __name__ == "__main__":
    sys.exit(main())
