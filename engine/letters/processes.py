"""Worker processes that end with the process that started them, however it ends."""

from __future__ import annotations

import ctypes
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import threading
import time

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


def idle_cores(sample: float = 0.2) -> int:
    """Cores no process is using now, judged over `sample` seconds (elsewhere than Linux: by
    the last minute's load average, as `make -l` judges it). A worker process on a machine
    already busy only adds its start-up to the work."""
    cores = os.cpu_count() or 1
    try:
        before = _cpu_times()
        time.sleep(sample)
        after = _cpu_times()
    except (OSError, ValueError):
        try:
            return max(0, int(cores - os.getloadavg()[0] + 0.5))
        except OSError:  # neither: take every core as free
            return cores
    idle, total = (a - b for a, b in zip(after, before, strict=True))
    return int(cores * idle / total + 0.5) if total > 0 else cores


def _cpu_times() -> tuple[int, int]:
    """All cores' idle time (idle and waiting for I/O) and total time, in ticks, from Linux."""
    with open("/proc/stat", encoding="ascii") as stat:
        ticks = [int(field) for field in stat.readline().split()[1:]]
    return ticks[3] + ticks[4], sum(ticks[:8])  # user nice system idle iowait irq softirq steal
