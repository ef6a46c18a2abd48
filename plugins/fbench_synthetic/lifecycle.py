"""How a synthetic generation lives and dies (issue 17): its worker processes die with it, a
SIGTERM cleans up before the process exits, and the temporary folder of a generation that died
without cleaning up (SIGKILL, power loss) is removed by the next generation.

Temporary folders are fbench's owned temporary folders (``fbench.make_owned_tmp_dir``: named
by the generating process and host, with its start time inside), so a later generation can tell
a dead owner from a live one.

Kept light (standard library only): the plugin module imports it, and ``fbench list`` imports
every plugin.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import TypeVar

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
T = TypeVar("T")
# the dataset folder names (see plugin.dataset_dir_name) whose temporary folders are ours
DATASET_NAMES = r"n\d+-px\d+-seed-?\d+-[0-9a-f]{12}"


def remove_stale(folder: Path, stale_after_s: float) -> list[Path]:
    """Remove, in ``folder``, the temporary folders of synthetic generations that died
    (:func:`fbench.remove_dead_tmp_dirs` over the dataset folder names)."""
    from fbench import remove_dead_tmp_dirs

    return remove_dead_tmp_dirs(folder, DATASET_NAMES, stale_after_s)


# --------------------------------------------------------------------------------------------
# SIGTERM in the generating process


class Terminated(BaseException):
    """Raised by the SIGTERM handler of :class:`sigterm_cleans_up` in the main thread: a
    BaseException, so that ``except Exception`` on the way does not swallow it while every
    ``finally`` and ``except BaseException`` cleanup runs."""


class sigterm_cleans_up:  # lower case: a context manager, named like contextlib's
    """While generating, turn SIGTERM into :class:`Terminated` so the worker pool is shut down
    and the temporary folder removed on the way out; then deliver SIGTERM again to whatever
    handled it before (by default: the process ends, killed by SIGTERM, as it would have).

    Only in the main thread (the only one Python runs signal handlers in) and only where
    SIGTERM was neither ignored nor handled outside Python."""

    def __init__(self) -> None:
        self._previous: object = None
        self._installed = False
        self.fired = False

    def _handler(self, signum: int, frame: object) -> None:
        if self.fired:
            return  # a second SIGTERM while cleaning up: let the cleanup finish
        self.fired = True
        raise Terminated(f"signal {signum}")

    def __enter__(self) -> sigterm_cleans_up:
        if threading.current_thread() is threading.main_thread():
            previous = signal.getsignal(signal.SIGTERM)
            if previous not in (signal.SIG_IGN, None):
                self._previous = previous
                signal.signal(signal.SIGTERM, self._handler)
                self._installed = True
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> bool:
        if not self._installed:
            return False
        signal.signal(signal.SIGTERM, self._previous)  # type: ignore[arg-type]
        if not self.fired:
            return False
        print("fbench: SIGTERM: synthetic generation stopped, its workers and temporary "
              "folder removed.", file=sys.stderr, flush=True)
        # the previous disposition decides: default ends the process here, a Python handler
        # runs now (and may raise); if the process is still here, exit as SIGTERM would
        signal.raise_signal(signal.SIGTERM)
        raise SystemExit(128 + signal.SIGTERM)


# --------------------------------------------------------------------------------------------
# worker processes


def _exit_if_orphaned(parent_pid: int) -> None:
    if os.getppid() != parent_pid:  # re-parented: the generation is gone, its work with it
        os._exit(1)


def _watch_parent(parent_pid: int) -> None:
    while True:
        _exit_if_orphaned(parent_pid)
        time.sleep(1.0)


def worker_init(parent_pid: int) -> None:
    """Initializer of a generation's pool workers: die with the parent ``parent_pid``.

    On Linux the kernel sends SIGKILL when the parent dies (``PR_SET_PDEATHSIG``), whatever
    kills it; checked against a parent that died before the call. Elsewhere a thread polls
    the parent pid (a worker blocked on the task queue would never see another task). The
    workers are forked by the thread that runs the pool, which stays in it until the pool is
    shut down, so the death signal cannot fire early when another thread ends."""
    # the parent handles SIGINT and SIGTERM (kills the workers, removes the folder); a worker
    # that got them too would send back tracebacks or a Terminated instead of dying
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    armed = False
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            # prctl is variadic: pass full unsigned longs, as the kernel reads them
            arg = [ctypes.c_ulong(v) for v in (int(signal.SIGKILL), 0, 0, 0)]
            armed = libc.prctl(ctypes.c_int(_PR_SET_PDEATHSIG), *arg) == 0
        except (OSError, AttributeError):
            armed = False
    _exit_if_orphaned(parent_pid)
    if not armed:
        threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True).start()


def run_in_worker(parent_pid: int, job: Callable[..., T], *args: object) -> T:
    """Run one task of the pool, unless the parent is gone (checked between tasks too)."""
    _exit_if_orphaned(parent_pid)
    return job(*args)
