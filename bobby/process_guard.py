"""Commands that die with the worker: ``python -m bobby.process_guard <parent pid> <command...>``.

A retraining project is a tree of processes (``mlflow run``, the shell it starts, the
entry point's own command). A worker killed with SIGKILL runs no cleanup, and the kernel's
parent-death signal (``prctl(PR_SET_PDEATHSIG)``) reaches only the direct child: its
children would live on, reparented. So the worker starts this guard instead, in a new
session (the guard leads the process group of the whole tree) with a parent-death signal;
the guard runs the command in its group and, on that signal (or SIGTERM/SIGINT/SIGHUP),
kills the group, itself last. A process of the tree that leaves the group (``setsid``)
escapes; ``mlflow run`` runs the entry point in its own group.

The parent-death signal fires when the *thread* that started the guard ends: the job thread
that starts it waits for it, so the two end together.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from types import FrameType

PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """``preexec_fn``: SIGTERM to this process when the thread that forked it ends."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")


def guarded(command: list[str]) -> list[str]:
    """``command`` run under the guard, with this process as the parent it watches."""
    return [sys.executable, "-m", "bobby.process_guard", str(os.getpid()), *command]


def _kill_group(signum: int = signal.SIGKILL, frame: FrameType | None = None) -> None:
    os.killpg(os.getpgrp(), signal.SIGKILL)


def main(argv: list[str]) -> int:
    parent, command = int(argv[0]), argv[1:]
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, _kill_group)
    if os.getppid() != parent:  # the worker died before the parent-death signal was set
        _kill_group()
    code = subprocess.call(command)
    return 128 - code if code < 0 else code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
