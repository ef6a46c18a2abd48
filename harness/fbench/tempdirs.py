"""Folders written under a temporary name and renamed into place when whole (a synthetic
dataset, a decoded-image cache), and what writers that died left of them.

A temporary folder is named ``.<final name>.tmp-<pid>-<host>-<random>``: the pid of the process
writing it and a short hash of its host, so the next writer can tell a dead owner from a live
one (two may write at once, also on two hosts sharing a cache). Inside, :data:`OWNER_FILE`
holds the owner's start time, so a pid reused by another process does not keep a dead owner's
folder forever. SIGKILL runs no cleanup: :func:`remove_dead_tmp_dirs` is how such folders go.

Standard library only: plugins that ``fbench list`` imports use it.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import tempfile
import time
from pathlib import Path

OWNER_FILE = ".fbench-owner"


def host_tag() -> str:
    """A short hash of this host's name (a host name may hold dots and dashes)."""
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def owned_tmp_prefix(final_name: str, pid: int | None = None) -> str:
    """The name prefix of a temporary folder for ``final_name`` owned by ``pid`` (default:
    this process) on this host; ``tempfile.mkdtemp`` adds the random tail."""
    pid = os.getpid() if pid is None else pid
    return f".{final_name}.tmp-{pid}-{host_tag()}-"


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
    """Record this process's start time in ``tmp`` (see :func:`remove_dead_tmp_dirs`)."""
    stat = _proc_stat(os.getpid())
    if stat is not None:
        (tmp / OWNER_FILE).write_text(stat[1] + "\n")


def make_owned_tmp_dir(final: Path) -> Path:
    """A fresh temporary folder beside ``final``, named and claimed for this process, readable
    by others once renamed (``mkdtemp`` makes it private; a cache may be shared)."""
    tmp = Path(tempfile.mkdtemp(prefix=owned_tmp_prefix(final.name), dir=final.parent))
    tmp.chmod(0o755)
    claim(tmp)
    return tmp


def release_owned_tmp_dir(tmp: Path) -> None:
    """Remove the owner record before ``tmp`` is renamed into place."""
    (tmp / OWNER_FILE).unlink(missing_ok=True)


def _owner_alive(pid: int, tmp: Path) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: alive
    except OSError:
        return True  # cannot tell: never remove what may be a live writer's folder
    stat = _proc_stat(pid)
    if stat is None:
        return True
    if stat[0] in "ZX":  # killed, not yet reaped by its parent: it writes nothing
        return False
    try:
        recorded = (tmp / OWNER_FILE).read_text().strip()
    except OSError:
        return True  # no record (being created or renamed right now): trust the pid
    return not recorded or recorded == stat[1]  # another start time: the pid was reused


def remove_dead_tmp_dirs(folder: Path, final_names: str, stale_after_s: float) -> list[Path]:
    """Remove, in ``folder``, the temporary folders (of final names matching the regular
    expression ``final_names``) whose writer died: owned by a process of this host that is
    gone. One of another host, or named without an owner, is removed once ``stale_after_s``
    old. Returns what was removed; a live writer's folder is never touched."""
    any_tmp = re.compile(rf"^\.(?:{final_names})\.tmp")
    owned = re.compile(rf"^\.(?:{final_names})\.tmp-(\d+)-([0-9a-f]{{8}})-")
    removed = []
    host = host_tag()
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        if not any_tmp.match(entry.name):
            continue
        path = Path(entry.path)
        owner = owned.match(entry.name)
        try:
            if owner and owner.group(2) == host:
                dead = not _owner_alive(int(owner.group(1)), path)
            else:
                dead = time.time() - entry.stat().st_mtime > stale_after_s
        except OSError:
            continue
        if dead and entry.is_dir(follow_symlinks=False):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed
