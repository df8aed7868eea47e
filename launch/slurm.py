"""Submit a training run to SLURM: one sbatch job, one task per node, `srun torchrun` in each.

    python -m launch.slurm EXP [KEY=VALUE ...] --nodes N --gpus-per-node G
        [--partition P] [--time 4:00:00] [--account A] [--qos Q] [--cpus-per-task C] [--mem M]
        [--signal-secs 300] [--no-requeue] [--sbatch=--key=value ...] [--setup 'module load x']
        [--module MOD] [--dry]

The script (printed by --dry, written to <job folder>/logs/job.sbatch otherwise) starts one
torchrun agent per node with a c10d rendezvous on the first node, writes the logs of every node
and rank into the job folder, and handles the time limit: SLURM sends SIGUSR1 to the batch shell
--signal-secs before the end, the shell passes it to the training processes (not to the agents,
which would kill them), they finish the step, save a checkpoint and stop, and the shell requeues
the job, which resumes from that checkpoint. docs/launch.md explains each choice.

User mistakes print one line and exit with code 2, like launch/train.py.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf.errors import OmegaConfBaseException

from framework.config import ConfigError, apply_overrides, get, load_all
from framework.config.registry import resolve_name
from framework.trainer.validate import validate
from launch.runs import LaunchError, Run, record_job, state_of

USER_ERROR = 2
# Environment the training reads; copied into the script so it is the same at every requeue and
# when a user submits a --dry script by hand.
PASSED_ENV = ("OUTPUT_ROOT", "DATASETS", "CHECKPOINTS", "WORLDTUNE_EXPERIMENTS", "HF_HOME")


@dataclass
class SlurmOptions:
    nodes: int = 1
    gpus_per_node: int = 0
    nproc_per_node: int | None = None  # processes per node; default: the GPUs, or 1 on CPUs
    # torchrun agents per SLURM node: 1 on a cluster; more simulates nodes on one machine.
    tasks_per_node: int = 1
    cpus_per_task: int | None = None
    mem: str | None = None
    time: str | None = None
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    signal_secs: int = 300  # time to finish a step and save before the time limit
    requeue: bool = True
    exclusive: bool | None = None  # default: whole nodes for GPU jobs
    job_name: str | None = None
    port: int | None = None  # rendezvous port; default: a free one on the first node
    sbatch: list[str] = field(default_factory=list)  # extra options, e.g. --reservation=x
    setup: list[str] = field(default_factory=list)  # shell lines before srun (module load ...)

    @property
    def procs_per_node(self) -> int:
        return self.nproc_per_node or max(self.gpus_per_node, 1)

    @property
    def whole_nodes(self) -> bool:
        return self.exclusive if self.exclusive is not None else self.gpus_per_node > 0

    def srun_cpus(self) -> str | None:
        """CPUs for each srun task: since SLURM 22.05 srun no longer takes --cpus-per-task from
        the allocation, and a step task gets one CPU unless told (SRUN_CPUS_PER_TASK)."""
        if self.cpus_per_task:
            return "$SLURM_CPUS_PER_TASK"
        if self.whole_nodes:
            return f"$((SLURM_CPUS_ON_NODE / {self.tasks_per_node}))"
        return None

    @property
    def world_size(self) -> int:
        return self.nodes * self.tasks_per_node * self.procs_per_node

    def check(self) -> None:
        for name in ("nodes", "tasks_per_node", "procs_per_node"):
            if getattr(self, name) < 1:
                flag = "--" + name.replace("_", "-").replace("procs", "nproc")
                raise LaunchError(f"{flag} must be at least 1.")
        if self.gpus_per_node < 0:
            raise LaunchError("--gpus-per-node must be 0 (CPU) or more.")
        if not 0 <= self.signal_secs <= 65535:
            raise LaunchError("--signal-secs must be between 0 and 65535 (SLURM's limit).")
        for opt in self.sbatch:
            if not opt.startswith("--"):
                raise LaunchError(
                    f"--sbatch {opt!r}: give sbatch options whole, e.g. "
                    "--sbatch=--reservation=mine."
                )


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def check_script_values(runs, opts: SlurmOptions, python, workdir, output, env) -> None:
    """Refuse a control character (a newline above all) in any value the script carries: one
    would end an `#SBATCH` line or a quoted word and start a shell command of its own."""
    values = [("--python", python), ("the working folder", workdir), ("--output", output)]
    values += [(f"--{f.replace('_', '-')}", v) for f, v in vars(opts).items() if v is not None]
    values += [(k, env[k]) for k in PASSED_ENV if k in env]
    for run in runs:
        values += [(f"run {run.name!r}", run.name), (f"{run.name}'s job folder", run.job_dir)]
        values += [(f"{run.name}'s argument", a) for a in run.argv]
    for label, value in values:
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, (str, Path)) and _CONTROL.search(str(item)):
                raise LaunchError(
                    f"{label} {str(item)!r} holds a control character (newline, tab, ...), "
                    "which would escape the batch script's line; remove it."
                )


def _q(text: str | Path) -> str:
    return shlex.quote(str(text))


def sbatch_header(opts: SlurmOptions, output: str, array: str | None = None) -> list[str]:
    """The #SBATCH lines."""
    name = opts.job_name or "worldtune"
    lines = [
        f"--job-name={name}",
        f"--nodes={opts.nodes}",
        f"--ntasks-per-node={opts.tasks_per_node}",
    ]
    if opts.gpus_per_node:
        lines.append(f"--gpus-per-node={opts.gpus_per_node}")
    mem = opts.mem
    if opts.whole_nodes:
        lines.append("--exclusive")
        mem = "0" if mem is None else mem  # all of each node's memory, not a per-CPU default
    for flag, value in (
        ("cpus-per-task", opts.cpus_per_task),
        ("mem", mem),
        ("time", opts.time),
        ("partition", opts.partition),
        ("account", opts.account),
        ("qos", opts.qos),
        ("constraint", opts.constraint),
    ):
        if value is not None:
            lines.append(f"--{flag}={value}")
    lines += [f"--output={output}", "--open-mode=append"]
    if opts.signal_secs:
        lines.append(f"--signal=B:USR1@{opts.signal_secs}")
    lines.append("--requeue" if opts.requeue else "--no-requeue")
    if array:
        lines.append(f"--array={array}")
    lines += opts.sbatch
    return ["#SBATCH " + _q(line) if " " in line else "#SBATCH " + line for line in lines]


def _run_lines(runs: list[Run], array: bool) -> list[str]:
    def assign(run: Run) -> tuple[str, str]:
        return f"job_dir={_q(run.job_dir)}", "args=(" + " ".join(_q(a) for a in run.argv) + ")"

    if not array:
        return [*assign(runs[0]), ""]
    lines = ['case "$SLURM_ARRAY_TASK_ID" in']
    for i, run in enumerate(runs):
        job_dir, args = assign(run)
        lines += [f"  {i})  # {run.name}", f"    {job_dir}", f"    {args} ;;"]
    lines += [
        '  *) echo "worldtune: no run for array task $SLURM_ARRAY_TASK_ID" >&2; exit 2 ;;',
        "esac",
        "",
    ]
    return lines


def _train_lines(opts: SlurmOptions, python: str) -> list[str]:
    """The signal traps and the srun of one torchrun agent per node, waited for."""
    return [
        "# SIGUSR1 (--signal=B:USR1, or a preemption with preempt_send_user_signal) comes to this",
        "# shell only; srun passes it to every process of the step. The torchrun agents ignore it",
        "# (trap '' survives exec): an agent acts only on TERM/INT/HUP/QUIT, by killing its",
        "# workers after a 30 s grace. The training processes finish the step, save, exit 75 and",
        "# leave $job_dir/PREEMPTED (torchrun turns 75 into 1), and this script requeues the job.",
        "srun_pid= cancelled=0",
        "on_usr1() {",
        '  echo "worldtune: SIGUSR1: the training processes save a checkpoint and stop"',
        '  [ -n "$srun_pid" ] && kill -USR1 "$srun_pid"',
        "}",
        "# scancel and the end of the time limit send TERM: no requeue then.",
        'on_term() { cancelled=1; echo "worldtune: SIGTERM: cancelled, no requeue"; }',
        "trap on_usr1 USR1",
        "trap on_term TERM",
        "",
        "# One torchrun agent per node (task). Logs: <job id>_node<task>.out per node, every line",
        "# tagged with its local rank, and one file per rank under ranks_<job id>/node<task>/",
        "# (torchrun's --log-dir, set per task through its PET_LOG_DIR variable).",
        'export RANK_LOGS="$job_dir/logs/ranks_$SLURM_JOB_ID"',
        *([f"export SRUN_CPUS_PER_TASK={opts.srun_cpus()}"] if opts.srun_cpus() else []),
        'srun --kill-on-bad-exit=1 --output="$job_dir/logs/%j_node%t.out" \\',
        '  bash -c \'trap "" USR1; export PET_LOG_DIR=$RANK_LOGS/node$SLURM_PROCID; exec "$@"\' \\',
        f"  agent {_q(python)} -m torch.distributed.run \\",
        f'    --nnodes="$SLURM_NTASKS" --nproc-per-node={opts.procs_per_node} \\',
        '    --rdzv-backend=c10d --rdzv-endpoint="$head_node:$port" --rdzv-id="$SLURM_JOB_ID" \\',
        "    --max-restarts=0 --tee=3 \\",
        '    -m launch.train "${args[@]}" &',
        "srun_pid=$!",
        "# wait returns early when a trapped signal arrives; wait again until srun is done.",
        'wait "$srun_pid"; code=$?',
        'while kill -0 "$srun_pid" 2>/dev/null; do wait "$srun_pid"; code=$?; done',
    ]


def render_script(
    runs: list[Run],
    opts: SlurmOptions,
    *,
    output: str | None = None,
    array_parallelism: int | None = None,
    python: str = sys.executable,
    workdir: Path | None = None,
    env: dict[str, str] | None = None,
) -> str:
    """The sbatch script for one run, or for a job array of `runs` (array_parallelism given)."""
    array = array_parallelism is not None
    if not runs or (len(runs) > 1 and not array):
        raise ValueError("one run, or an array of runs with array_parallelism")
    env = os.environ if env is None else env
    workdir = Path.cwd() if workdir is None else workdir
    if output is None:
        output = str(runs[0].job_dir / "logs" / "slurm-%j.out")
    check_script_values(runs, opts, python, workdir, output, env)
    spec = f"0-{len(runs) - 1}%{max(1, array_parallelism)}" if array else None
    # The batch shell runs on the first node, where the rendezvous store listens: ask that node
    # for a free port. A port derived from the job id clashed between jobs sharing a node.
    free_port = "import socket; s = socket.socket(); s.bind(('', 0)); print(s.getsockname()[1])"
    port = str(opts.port) if opts.port else f'$({_q(python)} -c "{free_port}")'

    requeue = (
        [
            '  echo "worldtune: stopped at step $(cat "$job_dir/PREEMPTED") with a checkpoint;'
            ' requeueing job $SLURM_JOB_ID"',
            '  scontrol requeue "$SLURM_JOB_ID" && exit 0',
        ]
        if opts.requeue
        else [
            '  echo "worldtune: stopped at step $(cat "$job_dir/PREEMPTED") with a checkpoint;'
            ' submit the same command again to go on (requeue is off)"'
        ]
    )
    lines = [
        "#!/bin/bash",
        "# worldtune training job, written by launch/slurm.py (docs/launch.md).",
        *sbatch_header(opts, output, spec),
        "",
        "set -uo pipefail",
        f"cd {_q(workdir)}",
        *[f"export {k}={_q(env[k])}" for k in PASSED_ENV if k in env],
        *opts.setup,
        "",
        *_run_lines(runs, array),
        'mkdir -p "$job_dir/logs"',
        "# Written by the trainer when a signal stopped it; one from an earlier attempt must not",
        "# requeue this one.",
        'rm -f "$job_dir/PREEMPTED"',
        'head_node=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
        f"port={port}",
        f'echo "worldtune: job $SLURM_JOB_ID (restart ${{SLURM_RESTART_COUNT:-0}}) on'
        f" $SLURM_JOB_NODELIST: $SLURM_NTASKS x {opts.procs_per_node} processes, rendezvous"
        f' $head_node:$port, logs in $job_dir/logs"',
        "",
        *_train_lines(opts, python),
        "",
        'if [ -f "$job_dir/PREEMPTED" ] && [ "$cancelled" = 0 ]; then',
        *requeue,
        "fi",
        'exit "$code"',
    ]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# Talking to SLURM


def need(command: str) -> str:
    path = shutil.which(command)
    if path is None:
        raise LaunchError(
            f"{command} not found: run this on a SLURM login node (or use "
            "--launcher local; `python -m launch.local_slurm` starts a private "
            "cluster on this machine)."
        )
    return path


def submit(script: str, path: Path) -> str:
    """Write `script` to `path`, sbatch it and return the job id."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(script)
    done = subprocess.run([need("sbatch"), "--parsable", str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        why = (done.stderr.strip() or done.stdout.strip() or "no message").splitlines()[-1]
        raise LaunchError(f"sbatch refused {path}: {why}")
    return done.stdout.strip().split(";")[0]


# ---------------------------------------------------------------------------------------------
# Command line


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line and exit 2, like launch/train.py
        raise LaunchError(f"{message}; see `python -m {self.prog} --help`.")


def add_slurm_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("SLURM")
    g.add_argument("--nodes", type=int, default=1)
    g.add_argument("--gpus-per-node", type=int, default=0)
    g.add_argument(
        "--nproc-per-node",
        type=int,
        default=None,
        help="processes per node (default: the GPUs, 1 without)",
    )
    g.add_argument(
        "--tasks-per-node",
        type=int,
        default=1,
        help="torchrun agents per node; >1 only simulates nodes on one machine",
    )
    g.add_argument("--cpus-per-task", type=int)
    g.add_argument("--mem", help="memory per node (default with --exclusive: 0, all of it)")
    g.add_argument(
        "--exclusive",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="whole nodes (default: yes with GPUs, no without)",
    )
    g.add_argument("--time", help="time limit, e.g. 4:00:00")
    g.add_argument("--partition")
    g.add_argument("--account")
    g.add_argument("--qos")
    g.add_argument("--constraint")
    g.add_argument(
        "--signal-secs",
        type=int,
        default=300,
        help="SIGUSR1 this long before the time limit: save and requeue",
    )
    g.add_argument("--no-requeue", action="store_true")
    g.add_argument("--job-name")
    g.add_argument(
        "--port", type=int, help="rendezvous port (default: a free port of the first node)"
    )
    g.add_argument(
        "--sbatch",
        action="append",
        default=[],
        metavar="--OPT=VALUE",
        help="extra sbatch option, e.g. --sbatch=--reservation=mine",
    )
    g.add_argument(
        "--setup",
        action="append",
        default=[],
        metavar="LINE",
        help="a shell line run before training, e.g. 'module load cuda'",
    )


def slurm_options(args: argparse.Namespace) -> SlurmOptions:
    opts = SlurmOptions(
        nodes=args.nodes,
        gpus_per_node=args.gpus_per_node,
        nproc_per_node=args.nproc_per_node,
        tasks_per_node=args.tasks_per_node,
        cpus_per_task=args.cpus_per_task,
        mem=args.mem,
        time=args.time,
        partition=args.partition,
        account=args.account,
        qos=args.qos,
        constraint=args.constraint,
        exclusive=args.exclusive,
        signal_secs=args.signal_secs,
        requeue=not args.no_requeue,
        job_name=args.job_name,
        port=args.port,
        sbatch=args.sbatch,
        setup=args.setup,
    )
    opts.check()
    return opts


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = _Parser(
        prog="launch.slurm",
        allow_abbrev=False,
        description="Submit one training run to SLURM (docs/launch.md).",
    )
    p.add_argument("words", nargs="*", metavar="EXP [KEY=VALUE ...]")
    p.add_argument("--module", action="append", default=[], help="module registering experiments")
    p.add_argument("--dry", action="store_true", help="print the script; submit nothing")
    add_slurm_options(p)
    args = p.parse_intermixed_args(argv)
    words = [w for w in args.words if w != "--"]
    if words and words[0].startswith("experiment="):
        words[0] = words[0].split("=", 1)[1]
    if not words or "=" in words[0] or words[0].startswith(("~", "+")):
        raise LaunchError(
            "name the experiment first, e.g. `python -m launch.slurm groot_gr1_480 "
            "--nodes 2 --gpus-per-node 8`; `python -m launch.train --list` lists "
            "them."
        )
    args.experiment, args.overrides = words[0], words[1:]
    return args


def build_run(experiment: str, overrides: list[str], modules: list[str]) -> Run:
    """The run, its config built and checked; nothing is written."""
    from framework.jobs import job_dir_of

    load_all(modules)
    name = resolve_name(experiment)
    cfg = validate(apply_overrides(get(name), overrides))
    job_dir = job_dir_of(cfg).absolute()
    argv = [name, *overrides, *[a for m in modules for a in ("--module", m)]]
    run = Run(
        name=job_dir.name,
        job_dir=job_dir,
        argv=argv,
        max_steps=int(cfg.train.max_steps),
        overrides=list(overrides),
        strategy=str(cfg.parallel.strategy),
    )
    return run


def check_world(run: Run, opts: SlurmOptions) -> None:
    if opts.world_size > 1 and run.strategy == "none":
        raise LaunchError(
            f"the job starts {opts.world_size} training processes but "
            "parallel.strategy=none; add parallel.strategy=ddp (or fsdp)."
        )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = parse_args(argv)
        opts = slurm_options(args)
        run = build_run(args.experiment, args.overrides, args.module)
        check_world(run, opts)
        opts.job_name = opts.job_name or run.name
        script = render_script([run], opts)
        if args.dry:
            print(script, end="")
            return 0
        state = state_of(run)
        if state.kind == "finished":
            print(
                f"{run.job_dir} is already at step {state.step} (train.max_steps="
                f"{run.max_steps}): nothing to train; raise train.max_steps to go on."
            )
            return 0
        if state.kind == "running":
            print(f"{run.job_dir} is still being trained ({state.detail}); not starting a copy.")
            return 0
        job_id = submit(script, run.job_dir / "logs" / "job.sbatch")
        record_job(run.job_dir, job_id)
    except (ConfigError, OmegaConfBaseException) as err:
        print(f"error: {str(err).splitlines()[0]}", file=sys.stderr)
        return USER_ERROR
    print(f"submitted SLURM job {job_id}: {run.job_dir}")
    print(f"  logs    {run.job_dir / 'logs'} (slurm-{job_id}.out, {job_id}_node<N>.out)")
    print(f"  follow  tail -f {run.job_dir / 'logs' / f'slurm-{job_id}.out'}")
    print(f"  stop    scancel {job_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
