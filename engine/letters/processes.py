"""Worker processes (a launch's, a print run's): started only when a core is idle, and ended
with the process that started them, however it ends."""

from __future__ import annotations

import ctypes
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import threading

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def exit_with_parent(parent_pid: int) -> None:
    """End this worker process as soon as the process `parent_pid` ends; call it first thing
    in a spawned worker.

    Pool workers wait for work on a queue each other holds open, so a command killed with
    SIGKILL would leave them blocked for ever, holding their memory.
    """
    if sys.platform.startswith("linux"):
        # The kernel kills this process when its parent dies, busy or not.
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, ctypes.c_ulong(signal.SIGKILL), ctypes.c_ulong(0), ctypes.c_ulong(0))
    if os.getppid() != parent_pid:
        os._exit(1)  # the parent died before it could be told to signal us
    # Elsewhere, and as a second guard: spawn started us with a pipe from the parent, and
    # the parent's end closes when it dies, which wakes this thread.
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(
            target=_exit_when_closed, args=(parent.sentinel,), name="exit-with-parent", daemon=True
        ).start()


def _exit_when_closed(sentinel: int) -> None:
    multiprocessing.connection.wait([sentinel])
    os._exit(1)


def idle_core() -> bool:
    """Whether a core waits idle for a worker process: more than one core is ours, and the
    1-minute load average (this process counted in it) leaves one free.

    On cores other programs keep busy, a worker only takes turns with this process, and
    handing every page to it and back made a launch slower than merging here (and a print run
    slower by the worker's start-up).
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return cores > 1 and os.getloadavg()[0] < cores - 0.5
