"""`python -m proxy.workers --status-fd FD --supervisor PID`: one worker of `run --concurrency`."""

from __future__ import annotations

import argparse
import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _bound_to(supervisor: int) -> bool:
    """Ask for SIGTERM (a drain) when the supervisor dies, even SIGKILLed; False when it is
    already gone (it died before the request was made, and this process must not linger)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    return os.getppid() == supervisor


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m proxy.workers")
    parser.add_argument("--status-fd", type=int, required=True)
    parser.add_argument("--supervisor", type=int, required=True)
    args = parser.parse_args()
    if not _bound_to(args.supervisor):
        return 0
    try:
        from proxy.workers.worker import run  # after the request above: imports take seconds
    except KeyboardInterrupt:  # Ctrl-C reaches the whole process group, the supervisor too
        return 130
    return run(args.status_fd)


if __name__ == "__main__":
    sys.exit(main())
