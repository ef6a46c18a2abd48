"""How a synthetic generation lives and dies (issue 17): its worker processes die with it, a
SIGTERM cleans up before the process exits, and the temporary folder of a generation that died
without cleaning up (SIGKILL, power loss) is removed by the next generation.

Temporary folders sit beside the dataset folders and are named
``.<dataset>.tmp-<pid>-<host>-<random>``: the pid of the generating process and a short hash of
its host name, so a later generation can tell a dead owner from a live one (two generations may
run at once, also on two hosts sharing a cache). Inside, :data:`OWNER_FILE` holds the owner's
start time, so a pid reused by another process does not keep a dead owner's folder forever.

Kept light (standard library only): the plugin module imports it, and ``fbench list`` imports
every plugin.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import TypeVar

OWNER_FILE = ".fbench-owner"
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
T = TypeVar("T")
# a dataset folder name (see plugin.dataset_dir_name) followed by the temporary marker
_TMP_RE = re.compile(r"^\.n\d+-px\d+-seed-?\d+-[0-9a-f]{12}\.tmp-")
_OWNED_RE = re.compile(r"^\.n\d+-px\d+-seed-?\d+-[0-9a-f]{12}\.tmp-(\d+)-([0-9a-f]{8})-")


def _host_tag() -> str:
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def tmp_prefix(dataset_name: str, pid: int | None = None) -> str:
    """The name prefix of a temporary folder for ``dataset_name`` owned by ``pid`` (default:
    this process) on this host; ``tempfile.mkdtemp`` adds the random tail."""
    pid = os.getpid() if pid is None else pid
    return f".{dataset_name}.tmp-{pid}-{_host_tag()}-"


def _proc_stat(pid: int) -> tuple[str, str] | None:
    """(state, start time in clock ticks since boot) of ``pid`` from ``/proc``, or None where
    there is no ``/proc`` or the process is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode(errors="replace")
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses: split after its last ")"
    fields = stat[stat.rfind(")") + 2:].split()
    return (fields[0], fields[19]) if len(fields) > 19 else None


def claim(tmp: Path) -> None:
    """Record this process's start time in ``tmp`` (see :func:`remove_stale`)."""
    stat = _proc_stat(os.getpid())
    if stat is not None:
        (tmp / OWNER_FILE).write_text(stat[1] + "\n")


def release(tmp: Path) -> None:
    """Remove the owner record before ``tmp`` becomes the dataset folder."""
    (tmp / OWNER_FILE).unlink(missing_ok=True)


def _owner_alive(pid: int, tmp: Path) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: alive
    except OSError:
        return True  # cannot tell: never remove what may be a live generation's folder
    stat = _proc_stat(pid)
    if stat is None:
        return True
    if stat[0] in "ZX":  # killed, not yet reaped by its parent: it generates nothing
        return False
    try:
        recorded = (tmp / OWNER_FILE).read_text().strip()
    except OSError:
        return True  # no record (being created or renamed right now): trust the pid
    return not recorded or recorded == stat[1]  # another start time: the pid was reused


def remove_stale(folder: Path, stale_after_s: float) -> list[Path]:
    """Remove, in ``folder``, the temporary folders of synthetic generations that died: owned
    by a process of this host that is gone. A folder of another host, or named before owners
    were recorded, is removed once ``stale_after_s`` old. Return what was removed."""
    removed = []
    host = _host_tag()
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        if not _TMP_RE.match(entry.name):
            continue
        path = Path(entry.path)
        owned = _OWNED_RE.match(entry.name)
        try:
            if owned and owned.group(2) == host:
                dead = not _owner_alive(int(owned.group(1)), path)
            else:
                dead = time.time() - entry.stat().st_mtime > stale_after_s
        except OSError:
            continue
        if dead and entry.is_dir(follow_symlinks=False):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


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
