"""Sweeps: overrides in Hydra's sweep syntax -> one training run per point, in one sweep folder.

    python -m launch.sweep EXP [KEY=VALUE ...] [--launcher local|slurm] [--name NAME] [--dry]
    python -m launch.sweep --report DIR

Sweep values: `optim.lr=1e-3,2e-3`, `train.seed=range(3)`, `x=choice(a,b)` (Hydra's grammar,
parsed by Hydra); the runs are the cartesian product, first key slowest, like Hydra's basic
sweeper. Every run gets job.group=<sweep name> (default `<EXP>-<swept keys>`) and a job.name made
from its swept values (`lr=0.001_seed=0`), so the runs live in
`${OUTPUT_ROOT:-checkpoints}/<project>/<sweep name>/<run name>/` next to `sweep.json`, the index.

Running the same command again skips finished runs, resumes unfinished ones from their latest
checkpoint, and leaves alone a run still going (a local launch holds its folder's lock; a SLURM
job is asked of squeue). `--launcher local` runs the runs one after another on this machine
(`--nproc N` processes each, through torchrun); `--launcher slurm` submits one job array
(`--parallelism` at a time) with the options of `python -m launch.slurm`. At the end, and with
`--report DIR`: a table of the runs' overrides and final metrics and `loss_curves.png`.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import shlex
import subprocess
import sys
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

from framework.config import ConfigError, apply_overrides, get, load_all
from framework.config.registry import resolve_name
from framework.io import atomic_write_text
from framework.jobs import job_dir_of, latest_step, note_pid, take_launch_lock
from framework.trainer.validate import validate
from launch import slurm
from launch.runs import LaunchError, Run, record_job, state_of
from launch.sweep_report import INDEX, read_index, report

USER_ERROR = 2
RUN_FAILED = 1
NAME_CHARS = re.compile(r"[^A-Za-z0-9._+=-]+")


@dataclass
class Sweep:
    experiment: str
    name: str
    dir: Path
    runs: list[Run]
    overrides: list[str]
    modules: list[str]


# --- expansion ---------------------------------------------------------------------------------


def expand(overrides: list[str]) -> tuple[list[list[str]], list[dict[str, str]]]:
    """The runs' override lists and, for each run, its swept key -> value."""
    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except HydraException as err:
        raise ConfigError(f"cannot parse override: {str(err).strip().splitlines()[0]}") from None
    axes = []
    for ov in parsed:
        line = ov.input_line or f"{ov.get_key_element()}={ov.get_value_element_as_str()}"
        if not ov.is_sweep_override():
            axes.append([(line, None)])
            continue
        if not ov.is_discrete_sweep():
            raise ConfigError(
                f"{line}: interval() needs a search algorithm; list the values "
                "(a,b,c) or use range(start,stop,step)."
            )
        key = ov.get_key_element()
        axes.append(
            [(f"{key}={value}", (ov.key_or_group, value)) for value in ov.sweep_string_iterator()]
        )
    runs, swept = [], []
    for point in itertools.product(*axes):
        runs.append([line for line, _ in point])
        swept.append(dict(kv for _, kv in point if kv is not None))
    return runs, swept


def short_keys(keys: list[str]) -> dict[str, str]:
    """Last key component (`optim.lr` -> `lr`) unless two swept keys would share it."""
    last = [k.split(".")[-1] for k in keys]
    return {k: (s if last.count(s) == 1 else k) for k, s in zip(keys, last)}


def clean(text: str) -> str:
    return NAME_CHARS.sub("-", text).strip("-") or "x"


def run_names(swept: list[dict[str, str]]) -> list[str]:
    """Readable, deterministic folder names: `lr=0.001_seed=0`; a too long or clashing name
    gets a short hash of its values."""
    keys = list(swept[0]) if swept else []
    short = short_keys(keys)
    names = []
    for values in swept:
        name = "_".join(f"{clean(short[k])}={clean(values[k])}" for k in keys)
        if len(name) > 100 or name in names:
            tag = f"{zlib.crc32(json.dumps(values, sort_keys=True).encode()):08x}"
            name = f"{name[:90]}-{tag}"
        names.append(name)
    return names


def _given(overrides: list[str], key: str) -> str | None:
    """The value the user gave `key` (not swept), if any."""
    for ov in OverridesParser.create().parse_overrides(overrides):
        if ov.key_or_group == key:
            if ov.is_sweep_override():
                raise ConfigError(
                    f"{ov.input_line}: {key} names the sweep's folders and cannot "
                    "be swept; sweep other keys."
                )
            return str(ov.value())
    return None


def plan(
    experiment: str, overrides: list[str], modules: list[str] = (), name: str | None = None
) -> Sweep:
    """Every run of the sweep, each config built and checked; nothing is written."""
    load_all(modules)
    exp = resolve_name(experiment)
    points, swept = expand(overrides)
    if not swept[0]:
        raise ConfigError(
            "no override has several values (a=1,2  b=range(3)  c=choice(x,y)); "
            "for one run use python -m launch.train."
        )
    group, fixed_name = _given(overrides, "job.group"), _given(overrides, "job.name")
    if fixed_name is not None and len(points) > 1:
        raise ConfigError(
            "job.name would be the same for every run; drop it (each run is "
            "named after its swept values) or name the sweep with --name."
        )
    if group is not None and name is not None and group != name:
        raise ConfigError("both --name and job.group name the sweep; give one of them.")
    name = name or group or clean(f"{exp}-" + "-".join(short_keys(list(swept[0])).values()))
    runs = []
    for point, values, run_name in zip(points, swept, run_names(swept)):
        extra = [] if group is not None else [f'job.group="{clean(name)}"']
        extra += [] if fixed_name is not None else [f'job.name="{run_name}"']
        cfg = validate(apply_overrides(get(exp), point + extra))
        job_dir = job_dir_of(cfg).absolute()
        argv = [exp, *point, *extra, *[a for m in modules for a in ("--module", m)]]
        runs.append(
            Run(
                name=job_dir.name,
                job_dir=job_dir,
                argv=argv,
                overrides=point,
                max_steps=int(cfg.train.max_steps),
                swept=values,
                strategy=str(cfg.parallel.strategy),
            )
        )
    folders = {r.job_dir.parent for r in runs}
    if len(folders) > 1:
        raise ConfigError(
            "the runs would land in different folders; do not sweep job.project or job.output_root."
        )
    return Sweep(exp, clean(name), folders.pop(), runs, list(overrides), list(modules))


def write_index(sweep: Sweep, argv: list[str]) -> Path:
    """sweep.json: the sweep's command and its runs; runs of earlier sweeps into the same folder
    (other values) stay listed."""
    path = sweep.dir / INDEX
    old = read_index(sweep.dir) or {}
    runs = {r["name"]: r for r in old.get("runs", [])}
    for run in sweep.runs:
        runs[run.name] = {
            "name": run.name,
            "overrides": run.overrides,
            "swept": run.swept,
            "job_dir": str(run.job_dir),
            "max_steps": run.max_steps,
            "command": "python -m launch.train " + shlex.join(run.argv),
        }
    index = {
        "experiment": sweep.experiment,
        "name": sweep.name,
        "command": "python -m launch.sweep " + shlex.join(argv),
        "runs": list(runs.values()),
    }
    return atomic_write_text(path, json.dumps(index, indent=2) + "\n")  # never half an index


# --- launchers ---------------------------------------------------------------------------------


def train_command(run: Run, nproc: int) -> list[str]:
    if nproc == 1:
        return [sys.executable, "-m", "launch.train", *run.argv]
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        "-m",
        "launch.train",
        *run.argv,
    ]


def launch_local(todo: list[Run], nproc: int) -> int:
    """Train the runs one after another; returns how many failed."""
    failed = 0
    for i, run in enumerate(todo, 1):
        lock = take_launch_lock(run.job_dir)
        if lock is None:
            print(f"[{i}/{len(todo)}] {run.name}: another launch started it meanwhile; skipped")
            continue
        with lock:
            log = run.job_dir / "logs" / "train.log"
            step = latest_step(run.job_dir)
            what = f"resuming from step {step}" if step else "training"
            print(
                f"[{i}/{len(todo)}] {run.name}: {what} to step {run.max_steps} (log: {log})",
                flush=True,
            )
            start = time.monotonic()
            with open(log, "a") as out:
                # The child inherits the locked descriptor: the lock lasts as long as it trains.
                proc = subprocess.Popen(
                    train_command(run, nproc),
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    pass_fds=(lock.fileno(),),
                )
                note_pid(lock, proc.pid)
                code = proc.wait()
            took = time.monotonic() - start
            if code == 0:
                print(f"      done in {took:.0f} s", flush=True)
            else:
                failed += 1
                tail = log.read_text().strip().splitlines()[-1:] or [""]
                print(
                    f"      failed with exit code {code} after {took:.0f} s: {tail[0]}", flush=True
                )
    return failed


def launch_slurm(
    sweep: Sweep, todo: list[Run], opts: slurm.SlurmOptions, parallelism: int | None
) -> str:
    """Submit one job array for `todo`; returns its id."""
    script = array_script(sweep, todo, opts, parallelism)
    job_id = slurm.submit(script, sweep.dir / "logs" / "array.sbatch")
    for i, run in enumerate(todo):
        record_job(run.job_dir, f"{job_id}_{i}")
    return job_id


def array_script(
    sweep: Sweep, todo: list[Run], opts: slurm.SlurmOptions, parallelism: int | None
) -> str:
    for run in todo:
        slurm.check_world(run, opts)
    opts.job_name = opts.job_name or sweep.name
    limit = min(len(todo), parallelism or len(todo))
    return slurm.render_script(
        todo, opts, output=str(sweep.dir / "logs" / "%A_%a.out"), array_parallelism=limit
    )


def wait_for(todo: list[Run], poll: float = 2.0) -> None:
    while any(state_of(run).kind == "running" for run in todo):
        time.sleep(poll)


# --- command line ------------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = slurm._Parser(
        prog="launch.sweep",
        allow_abbrev=False,
        description="Run a sweep of training runs (docs/launch.md).",
    )
    p.add_argument("words", nargs="*", metavar="EXP [KEY=VALUE ...]")
    p.add_argument("--launcher", choices=("local", "slurm"), default="local")
    p.add_argument("--name", help="the sweep's folder name (job.group); default from the keys")
    p.add_argument("--dry", action="store_true", help="print the plan; start nothing")
    p.add_argument("--report", metavar="DIR", help="print the table of a sweep folder and plot")
    p.add_argument("--module", action="append", default=[], help="module registering experiments")
    p.add_argument("--nproc", type=int, default=1, help="local: processes per run (torchrun)")
    p.add_argument("--parallelism", type=int, help="slurm: array tasks running at once")
    p.add_argument("--wait", action="store_true", help="wait for runs still going, then report")
    slurm.add_slurm_options(p)
    args = p.parse_intermixed_args(argv)
    words = [w for w in args.words if w != "--"]
    if words and words[0].startswith("experiment="):
        words[0] = words[0].split("=", 1)[1]
    if args.report:
        return args
    if not words or "=" in words[0] or words[0].startswith(("~", "+")):
        raise LaunchError(
            "name the experiment first, e.g. `python -m launch.sweep tiny_gr1 "
            "optim.lr=1e-3,2e-3`; `python -m launch.train --list` lists them."
        )
    if args.nproc < 1 or (args.parallelism is not None and args.parallelism < 1):
        raise LaunchError("--nproc and --parallelism must be at least 1.")
    args.experiment, args.overrides = words[0], words[1:]
    return args


def print_plan(sweep: Sweep, states: list) -> None:
    print(f"sweep {sweep.name}: {len(sweep.runs)} runs of {sweep.experiment} in {sweep.dir}")
    width = max(len(r.name) for r in sweep.runs)
    for run, state in zip(sweep.runs, states):
        print(f"  {run.name:<{width}}  {state}")
        print(f"  {'':<{width}}  python -m launch.train {shlex.join(run.argv)}")


def todo_of(sweep: Sweep, states: list) -> list[Run]:
    return [run for run, s in zip(sweep.runs, states) if s.kind in ("new", "partial")]


def run(args: argparse.Namespace, argv: list[str]) -> int:
    if args.launcher == "slurm":
        if args.nproc != 1:
            raise LaunchError("--nproc is for --launcher local; on SLURM use --gpus-per-node.")
        opts = slurm.slurm_options(args)
    elif args.nodes != 1 or args.gpus_per_node:
        raise LaunchError("--nodes/--gpus-per-node are for --launcher slurm; locally use --nproc.")
    sweep = plan(args.experiment, args.overrides, args.module, args.name)
    if args.launcher == "local" and args.nproc > 1:
        slurm.check_world(sweep.runs[0], slurm.SlurmOptions(nproc_per_node=args.nproc))
    states = [state_of(r) for r in sweep.runs]
    todo = todo_of(sweep, states)
    if args.dry:
        print_plan(sweep, states)
        if args.launcher == "slurm" and todo:
            print(array_script(sweep, todo, opts, args.parallelism), end="")
        return 0
    write_index(sweep, argv)
    for run, state in zip(sweep.runs, states):
        if state.kind in ("finished", "running"):
            step = f" at step {state.step}" if state.step is not None else ""
            print(f"{run.name}: {state}{step}; skipped")
    going = [run for run, state in zip(sweep.runs, states) if state.kind == "running"]
    if not todo and not (args.wait and going):
        print(
            f"nothing to do: of {len(sweep.runs)} runs, {len(sweep.runs) - len(going)} are "
            f"finished and {len(going)} still going."
        )
        print(report(sweep.dir))
        return 0
    failed = 0
    if args.launcher == "local" and todo:
        failed = launch_local(todo, args.nproc)
    elif todo:
        job_id = launch_slurm(sweep, todo, opts, args.parallelism)
        print(
            f"submitted SLURM job array {job_id} ({len(todo)} runs); logs in "
            f"{sweep.dir / 'logs'} and each run's logs/ folder"
        )
    waiting = going + (todo if args.launcher == "slurm" else [])
    if args.wait and waiting:
        print(f"waiting for {len(waiting)} runs to end ...", flush=True)
        wait_for(waiting)
        failed += sum(state_of(r).kind != "finished" for r in waiting)
    elif args.launcher == "slurm":
        print(f"table and curves when done: python -m launch.sweep --report {sweep.dir}")
        return 0
    print(report(sweep.dir))
    return RUN_FAILED if failed else 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = parse_args(argv)
        if args.report:
            print(report(Path(args.report)))
            return 0
        return run(args, argv)
    except (ConfigError, OmegaConfBaseException, FileNotFoundError) as err:
        print(f"error: {str(err).splitlines()[0]}", file=sys.stderr)
        return USER_ERROR
    except KeyboardInterrupt:
        print("interrupted; run the same command again to resume.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
