"""Worker processes that end with the process that started them, however it ends."""

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
