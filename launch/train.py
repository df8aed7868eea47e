"""The training entry point that `make train` and torchrun run.

usage: python -m launch.train [EXP] [KEY=VALUE ...] [--dryrun | --check] [--module MOD ...]
       python -m launch.train --list
       python -m launch.train -- experiment=EXP KEY=VALUE ...     (the upstream spelling)

  EXP              a registered experiment or alias (default tiny_gr1; `--list` shows them all)
  KEY=VALUE        overrides in Hydra's grammar: a.b=1, +a.new=x, ++a.b=2, ~a.b, lists, null
  --dryrun         print the resolved config, parameter counts (built on the meta device) and
                   every missing file; train nothing
  --check          only list every file the run reads that is missing, each with the command
                   that fetches it; exit 2 if one the run needs is missing
  --module MOD     import MOD to register its experiments (also WORLDTUNE_EXPERIMENTS=MOD,
                   or a `worldtune.experiments` entry point; README "Writing an experiment")
  --list           every experiment with its one-line description

Hydra habits: there is no -m/--multirun (sweeps: `python -m launch.sweep EXP 'optim.lr=1e-4,3e-4'`),
no --cfg job (use --dryrun), no @hydra.main; overrides are the same grammar. A run resumes from its
job folder's latest checkpoint; Ctrl-C stops at once and names it. Several processes: `make train
NPROC=8` (torchrun), SLURM: `python -m launch.slurm EXP --nodes N` (docs/launch.md).

User mistakes (unknown experiment, bad override, bad value) print one line and exit with code 2
(under torchrun, rank 0 alone prints it).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf.errors import OmegaConfBaseException

from framework.config import ConfigError, apply_overrides, get, load_all, to_yaml
from framework.config.registry import alias_note, entries, resolve_name
from framework.trainer.validate import validate

USAGE = __doc__.split("\n\n", 1)[1]
USER_ERROR = 2
INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for Ctrl-C
DEFAULT_EXPERIMENT = "tiny_gr1"
# Hydra's command-line habits, answered with what does the same here.
HYDRA_HABITS = {
    "-m": "sweeps are `python -m launch.sweep EXP 'optim.lr=1e-4,3e-4'` (docs/launch.md)",
    "--multirun": "sweeps are `python -m launch.sweep EXP 'optim.lr=1e-4,3e-4'` (docs/launch.md)",
    "--cfg": "`--dryrun` prints the resolved config (and parameter counts, missing files)",
    "-c": "`--dryrun` prints the resolved config (and parameter counts, missing files)",
    "--resolve": "`--dryrun` prints the config resolved",
    "--info": "`--list` names the experiments, `--dryrun` shows one",
}


@dataclass
class Args:
    experiment: str = DEFAULT_EXPERIMENT
    overrides: list[str] = field(default_factory=list)
    modules: list[str] = field(default_factory=list)
    dryrun: bool = False
    check: bool = False
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
        elif tok == "--check":
            args.check = True
        elif tok == "--list":
            args.list = True
        elif tok == "--module":
            args.modules.append(next(tokens, ""))
        elif tok.startswith("--module="):
            args.modules.append(tok.split("=", 1)[1])
        elif tok.startswith("--config"):
            continue  # upstream's `--config=.../config.py`: one registry here, nothing to choose
        elif tok.split("=", 1)[0] in HYDRA_HABITS:
            habit = tok.split("=", 1)[0]
            raise ConfigError(f"{habit} is Hydra's; here {HYDRA_HABITS[habit]}.")
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
    if named is not None and not named.strip():
        # `make train EXP=` with an empty variable, or `experiment=`: never the default job.
        raise ConfigError(
            "the experiment name is empty; name one (python -m launch.train --list) or leave "
            f"it out for {DEFAULT_EXPERIMENT}."
        )
    args.experiment = named or DEFAULT_EXPERIMENT
    return args


def print_list() -> None:
    """Every experiment with its whole description, wrapped to the terminal (never cut)."""
    import shutil
    import textwrap

    rows = [(e.name, e.description, ", ".join(e.aliases)) for e in entries()]
    width = max(len(r[0]) for r in rows)
    columns = max(shutil.get_terminal_size((100, 24)).columns, width + 40)
    for name, desc, aliases in rows:
        wrapped = textwrap.wrap(
            desc, columns - width - 2, break_on_hyphens=False, break_long_words=False
        ) or [""]
        print(f"{name:<{width}}  {wrapped[0]}")
        for line in wrapped[1:]:
            print(f"{'':<{width}}  {line}")
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


def _latest(cfg) -> tuple[Path, str | None]:
    """(the run's checkpoints folder, the iteration its latest_checkpoint.txt names or None)."""
    from framework import jobs

    root = jobs.checkpoints_of(jobs.job_dir_of(cfg))
    try:
        return root, jobs.read_latest(root)
    except Exception:  # noqa: BLE001  a damaged marker is the trainer's to report
        return root, None


def banner(cfg, experiment: str) -> str:
    """What the run is about to do, in one line: experiment, job folder, world size, resume."""
    from framework.trainer.dist import env_ranks

    root, name = _latest(cfg)
    if name:
        start = f"resuming from {name} (checkpoints/latest_checkpoint.txt)"
    elif cfg.checkpoint.get("load_path"):
        start = f"new run from {cfg.checkpoint.load_path}"
    else:
        start = "new run from scratch"
    world = env_ranks()[1]
    procs = f"{world} processes" if world > 1 else "1 process"
    return f"{experiment}: job folder {root.parent}, {procs}, {start}, {cfg.train.max_steps} steps"


def interrupted(cfg) -> str:
    """Ctrl-C: stop at once (a save can take minutes at 14B) and say where the run stands."""
    root, name = _latest(cfg)
    if name:
        return (
            f"stopped by Ctrl-C; the last checkpoint is {root}/*/{name}: run the same "
            "command again to resume from it."
        )
    return "stopped by Ctrl-C before the first checkpoint; the same command starts the run again."


def _say(message: str) -> None:
    """User errors are the same on every rank: under torchrun only rank 0 prints them."""
    from framework.trainer.dist import env_ranks

    if env_ranks()[0] == 0:
        print(message, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = parse_args(argv)
        load_all(args.modules)
        if args.list:
            print_list()
            return 0
        name = resolve_name(args.experiment)
        if alias_note(args.experiment):
            _say(alias_note(args.experiment))
        cfg = get(name)
        apply_overrides(cfg, args.overrides)
        validate(cfg)
        if args.dryrun or args.check:
            from launch.preflight import report

            if args.dryrun:
                dryrun(cfg)
            lines, ok = report(cfg, name)
            print("\n".join(lines), file=sys.stdout if ok else sys.stderr)
            return 0 if ok or args.dryrun else USER_ERROR
    except (ConfigError, OmegaConfBaseException) as err:
        _say(f"error: {str(err).splitlines()[0]}")
        return USER_ERROR
    from framework.trainer import run

    _say(banner(cfg, name))
    try:
        return run(cfg, args.overrides)
    except KeyboardInterrupt:
        _say(interrupted(cfg))
        return INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
