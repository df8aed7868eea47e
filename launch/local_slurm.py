"""A private single-node SLURM cluster on 127.0.0.1: the tests' cluster, and a way to try
`launch.slurm` and `launch.sweep --launcher slurm` on one machine.

    python -m launch.local_slurm start DIR    # prints the `export SLURM_CONF=...` to use
    python -m launch.local_slurm stop DIR

Everything lives in DIR: slurm.conf, a munge key and socket, the controller's state, the logs
and the daemons' pid files; nothing under /etc or /var is used or changed, and the ports are
free ones. It needs root (slurmd starts jobs as their user) and Debian's slurmctld, slurmd,
slurm-client and munge (`make install` installs them).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

INSTALL_HINT = (
    "run `make install-test-system` (it apt-installs slurmctld slurmd slurm-client munge)"
)
DAEMONS = ("munged", "slurmctld", "slurmd")
COMMANDS = ("sbatch", "srun", "squeue", "scontrol", "scancel", "sinfo", "mungekey")


class SlurmUnavailable(RuntimeError):
    """SLURM or munge is missing, or cannot run here; the message says what to do."""


def _find(name: str) -> str | None:
    # Daemons live in /usr/sbin, which a normal user's PATH may lack.
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")


def missing_programs() -> list[str]:
    return [name for name in (*DAEMONS, *COMMANDS) if _find(name) is None]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def slurm_conf(
    root: Path, node: str, cpus: int, ports: tuple[int, int], munge_socket: Path, cred_expire: int
) -> str:
    lines = [
        "ClusterName=worldtune",
        f"SlurmctldHost={node}(127.0.0.1)",
        f"SlurmctldPort={ports[0]}",
        f"SlurmdPort={ports[1]}",
        "SlurmUser=root",
        "SlurmdUser=root",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        # cred_expire is also how long a requeued job waits before it may start again
        # (slurm.conf(5)); SLURM's 120 s default made the requeue test wait two minutes.
        f"AuthInfo=socket={munge_socket},cred_expire={cred_expire}",
        "MailProg=/bin/true",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "SwitchType=switch/none",
        "MpiDefault=none",
        "ReturnToService=2",
        # Look at pending jobs every second (defaults: 60 s and 30 s), so a requeued job starts
        # as soon as its begin time passes.
        "SchedulerType=sched/backfill",
        "SchedulerParameters=sched_interval=1,bf_interval=1",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core",
        # Trust the CPU count below rather than the hardware's, so a 2-core machine runs a
        # 2-task job next to another job.
        "SlurmdParameters=config_overrides",
        "KillWait=10",
        f"StateSaveLocation={root / 'state'}",
        f"SlurmdSpoolDir={root / 'spool'}",
        f"SlurmctldPidFile={root / 'slurmctld.pid'}",
        f"SlurmdPidFile={root / 'slurmd.pid'}",
        f"SlurmctldLogFile={root / 'log' / 'slurmctld.log'}",
        f"SlurmdLogFile={root / 'log' / 'slurmd.log'}",
        "JobCompType=jobcomp/none",
        "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none",
        f"NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory=1000 State=UNKNOWN",
        f"PartitionName=debug Nodes={node} Default=YES MaxTime=INFINITE State=UP",
    ]
    return "\n".join(lines) + "\n"


class LocalSlurm:
    """munged, slurmctld and slurmd for one node, all files under `root`.

    start() returns once `sinfo` shows the node idle; stop() cancels the jobs left, then ends
    the three daemons by their PIDs.
    """

    def __init__(self, root: str | Path, cpus: int | None = None, cred_expire: int = 5) -> None:
        self.root = Path(root).absolute()
        self.cpus = cpus or max(4, os.cpu_count() or 1)
        self.cred_expire = cred_expire
        self.conf = self.root / "slurm.conf"
        self.procs: dict[str, subprocess.Popen] = {}

    @property
    def env(self) -> dict[str, str]:
        """What SLURM commands need to talk to this cluster."""
        return {"SLURM_CONF": str(self.conf)}

    def _run(self, *cmd: str, check: bool = True, timeout: float = 30) -> str:
        done = subprocess.run(
            [_find(cmd[0]) or cmd[0], *cmd[1:]],
            capture_output=True,
            text=True,
            env={**os.environ, **self.env},
            timeout=timeout,
        )
        if check and done.returncode != 0:
            raise SlurmUnavailable(f"{' '.join(cmd)} failed: {done.stderr.strip()[-500:]}")
        return done.stdout

    def _daemon(self, name: str, *args: str) -> None:
        log = open(self.root / "log" / f"{name}.out", "ab")
        # Own session: a Ctrl-C in the terminal of the tests does not reach the daemons first.
        self.procs[name] = subprocess.Popen(
            [_find(name), *args],
            stdout=log,
            stderr=log,
            env={**os.environ, **self.env},
            start_new_session=True,
        )
        log.close()

    def start(self, timeout: float = 60) -> LocalSlurm:
        missing = missing_programs()
        if missing:
            raise SlurmUnavailable(
                f"SLURM is not installed ({', '.join(missing)} missing): {INSTALL_HINT}."
            )
        if os.geteuid() != 0:
            raise SlurmUnavailable(
                "a private SLURM cluster needs root (slurmd starts jobs as "
                "their user); run as root, e.g. in the CI container."
            )
        for sub in ("munge", "state", "spool", "log"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        munge = self.root / "munge"
        munge.chmod(0o755)  # the socket's folder must be searchable by every user of munge
        key = munge / "munge.key"
        if not key.exists():
            self._run("mungekey", "--create", f"--keyfile={key}", "--bits=1024")
        key.chmod(0o600)
        # The node is "localhost" (slurmd -N): it resolves on any machine, also one whose host
        # name does not, and the jobs use the node name as their rendezvous address.
        node = "localhost"
        self.conf.write_text(
            slurm_conf(
                self.root,
                node,
                self.cpus,
                (_free_port(), _free_port()),
                munge / "munge.sock",
                self.cred_expire,
            )
        )
        try:
            # --force: munged refuses root without it; foreground (-F, -D) keeps our PIDs real.
            self._daemon(
                "munged",
                "-F",
                "--force",
                f"--socket={munge / 'munge.sock'}",
                f"--key-file={key}",
                f"--pid-file={munge / 'munged.pid'}",
                f"--log-file={self.root / 'log' / 'munged.log'}",
                f"--seed-file={munge / 'munged.seed'}",
            )
            self._wait(lambda: (munge / "munge.sock").exists(), timeout, "munged")
            self._daemon("slurmctld", "-D", "-i")
            self._daemon("slurmd", "-D", "-N", node)
            self._wait(self._idle, timeout, "the node to come up idle")
        except BaseException:
            self.stop()
            raise
        return self

    def _idle(self) -> bool:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                log = (self.root / "log" / f"{name}.out").read_text()[-800:]
                raise SlurmUnavailable(f"{name} exited with {proc.returncode}: {log}")
        try:
            out = self._run("sinfo", "-h", "-o", "%t", check=False, timeout=10)
        except subprocess.TimeoutExpired:
            return False
        return out.strip() in ("idle", "mix", "alloc")

    def _wait(self, ready, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            if time.monotonic() > deadline:
                raise SlurmUnavailable(f"timed out waiting for {what}; logs in {self.root / 'log'}")
            time.sleep(0.2)

    def cancel_all(self, timeout: float = 30) -> None:
        """Cancel every job and wait until SLURM has ended their processes."""
        self._run("scancel", "--full", "--user", str(os.geteuid()), check=False)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self._run("squeue", "-h", "-o", "%i", check=False).strip():
                return
            time.sleep(0.3)

    def stop(self) -> None:
        if self._running("slurmctld"):
            try:
                self.cancel_all()
            except (subprocess.TimeoutExpired, OSError):
                pass
        # Reverse order: slurmd, slurmctld, then munged, which both need until they exit.
        for name in reversed(DAEMONS):
            proc = self.procs.pop(name, None)
            if proc is None:
                pid = _read_pid(self._pid_file(name))
                if pid:
                    _end_pid(pid)
                continue
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()

    def _running(self, name: str) -> bool:
        proc = self.procs.get(name)
        if proc is not None:
            return proc.poll() is None
        pid = _read_pid(self._pid_file(name))
        return pid is not None and _alive(pid)

    def _pid_file(self, name: str) -> Path:
        return self.root / "munge" / "munged.pid" if name == "munged" else self.root / f"{name}.pid"

    def __enter__(self) -> LocalSlurm:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _end_pid(pid: int, timeout: float = 15) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2 or argv[0] not in ("start", "stop"):
        print("usage: python -m launch.local_slurm start|stop DIR", file=sys.stderr)
        return 2
    cluster = LocalSlurm(argv[1])
    try:
        if argv[0] == "stop":
            cluster.stop()
            print(f"stopped the SLURM cluster of {cluster.root}")
            return 0
        cluster.start()
    except SlurmUnavailable as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    # The daemons outlive this command (their own sessions); `stop DIR` ends them by pid file.
    cluster.procs.clear()
    print(
        f"SLURM is up on 127.0.0.1 ({cluster.cpus} CPUs). Use it with:\n"
        f"  export SLURM_CONF={cluster.conf}\n"
        f"Stop it with: python -m launch.local_slurm stop {cluster.root}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
