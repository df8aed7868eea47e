"""The checkpoint writer process (framework/trainer/checkpoint_proc.py) with a full disk: DCP's
file writer raises ENOSPC for folders whose path contains $FAULTY_WRITER_PATH; or, for those
whose path contains $FAULTY_WRITER_KILL, the process is killed by SIGKILL (as the kernel's
out-of-memory killer does). Tests point `WriterProcess.command` here."""

from __future__ import annotations

import errno
import os
import signal

from torch.distributed.checkpoint import FileSystemWriter

from framework.trainer import checkpoint_proc

_real = FileSystemWriter.write_data


def _full(self, plan, planner):
    if os.environ.get("FAULTY_WRITER_KILL", "\0") in str(self.path):
        os.kill(os.getpid(), signal.SIGKILL)
    if os.environ.get("FAULTY_WRITER_PATH", "\0") in str(self.path):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.path))
    return _real(self, plan, planner)


FileSystemWriter.write_data = _full

if __name__ == "__main__":
    raise SystemExit(checkpoint_proc.main())
