"""A job process ends when the server that supervises it dies.

The local executor starts each job in its own session (so cancelling signals the job's whole process group and
nothing else). That also means a SIGKILLed server used to leave its jobs running unsupervised until the next
start-up found them. Now the executor names itself in the job's environment (`ZP_SUPERVISOR_PID`), and the job
process asks Linux for SIGTERM when its parent dies (`prctl(PR_SET_PDEATHSIG)`); a recipe takes SIGTERM as an
interruption and marks its run `interrupted`, as for a cancel. Start-up recovery (`LocalExecutor.recover`) still
ends anything left over (another platform, a grandchild) and marks the job.
"""
from __future__ import annotations

import ctypes
import os
import signal
import sys

ENV = "ZP_SUPERVISOR_PID"
PR_SET_PDEATHSIG = 1


def die_with_supervisor() -> bool:
    """Call first thing in a job process. True if the death signal was armed. The variable is removed so that
    processes this job starts (whose parent is the job, not the server) do not act on it."""
    want = os.environ.pop(ENV, None)
    if not want or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
            return False
    except (OSError, AttributeError):
        return False
    if str(os.getppid()) != want:   # the server died before the signal was armed
        os.kill(os.getpid(), signal.SIGTERM)
    return True
