"""A synthetic generation that is killed or terminated (issue 17): its forked pool workers die
with it instead of living on, re-parented, for good; SIGTERM removes the temporary folder on the
way out; what SIGKILL leaves behind is removed by the next generation, but never the folder of a
generation that is still running.

The generations run in real subprocesses. Their workers write one chunk of images for real,
record their pid in a file and then hold (``signal.pause``) until they die, so the test signals
a generation whose workers are busy, at a point known from files, not from a guessed sleep."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fbench.tempdirs import OWNER_FILE, claim, owned_tmp_prefix
from fbench_synthetic import generate as gen
from fbench_synthetic import lifecycle, plugin
from fbench_synthetic.plugin import load_synthetic

N = 200  # per class: 600 images, the smallest set generate._workers hands to a worker pool
PX = 16  # the smallest image size: fast
DEADLINE_S = 10.0
START_DEADLINE_S = 25.0  # the child imports numpy/OpenCV and writes a chunk on a busy machine
MARK = "FBENCH_TEST_SIGNALS"

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="forked workers and /proc are Linux's")

# the generation's subprocess: argv = root, folder for worker pid files
HELD_GENERATION = """
import os, signal, sys
from fbench_synthetic import generate as gen
from fbench_synthetic.plugin import load_synthetic

root, held = sys.argv[1], sys.argv[2]
write_chunk = gen._write_chunk

def held_chunk(*args):
    rows = write_chunk(*args)  # real images in the temporary folder
    with open(os.path.join(held, f"worker-{os.getpid()}"), "w"):
        pass
    while True:  # busy from the parent's point of view, until killed
        signal.pause()

gen._write_chunk = held_chunk
load_synthetic(root, n_per_class=int(sys.argv[3]), image_size=int(sys.argv[4]))
"""


def _poll(done: Callable[[], bool], what: str, deadline_s: float = DEADLINE_S) -> None:
    """Wait until ``done()``, checking every 50 ms, and fail after ``deadline_s``."""
    end = time.monotonic() + deadline_s
    while not done():
        if time.monotonic() > end:
            raise AssertionError(f"after {deadline_s:.0f} s: {what}")
        time.sleep(0.05)


def _marked(token: str) -> set[int]:
    """Pids of the live (not zombie) processes whose environment carries ``token``: the
    generation's process and every worker forked from it, also once re-parented."""
    needle = f"{MARK}={token}".encode()
    found = set()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/environ", "rb") as f:
                env = f.read().split(b"\0")
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                state = f.read().rsplit(b")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue  # gone, or not ours to read
        if needle in env and state not in (b"Z", b"X"):
            found.add(int(entry.name))
    return found


class Held:
    """A generation in a subprocess whose workers are all busy (see the module docstring)."""

    def __init__(self, root: Path, held: Path, token: str) -> None:
        self.root, self.held, self.token = root, held, token
        held.mkdir()
        self.log = held.parent / f"{held.name}.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", HELD_GENERATION, str(root), str(held), str(N), str(PX)],
                env={**os.environ, MARK: token}, stdout=log, stderr=subprocess.STDOUT)

    def workers(self) -> set[int]:
        return {int(p.name.split("-")[1]) for p in self.held.glob("worker-*")}

    def wait_busy(self, n_workers: int) -> set[int]:
        def started() -> bool:
            assert self.proc.poll() is None, f"generation ended: {self.log.read_text()}"
            return len(self.workers()) == n_workers

        _poll(started, "the workers did not start", START_DEADLINE_S)
        return self.workers()

    def temporary(self) -> list[Path]:
        return sorted(self.root.glob(".*.tmp-*"))


@pytest.fixture
def held(tmp_path: Path) -> Iterator[Callable[[], Held]]:
    """Start held generations; whatever the test's outcome, kill every process they made (a
    worker that outlives its parent is the very fault under test)."""
    started: list[Held] = []

    def start() -> Held:
        h = Held(tmp_path / "cache", tmp_path / f"held{len(started)}", uuid.uuid4().hex)
        started.append(h)
        return h

    yield start
    for h in started:
        for pid in _marked(h.token):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if h.proc.poll() is None:
            h.proc.kill()
        h.proc.wait()


def _pool_size() -> int:
    n = gen._workers(3 * N)
    if n < 2:
        pytest.skip("one CPU: the generation runs without a worker pool")
    return n


@linux_only
def test_sigkill_takes_the_workers_along_and_the_next_generation_cleans_up(held) -> None:
    n_workers = _pool_size()
    h = held()
    workers = h.wait_busy(n_workers)
    assert workers <= _marked(h.token) - {h.proc.pid}  # the workers live, and we see them
    [tmp] = h.temporary()
    assert list((tmp / "images").glob("*.png"))  # written by the workers

    # meanwhile another generation in the same cache: the live one's folder is not stale
    other = load_synthetic(h.root, n_per_class=2, image_size=PX)
    assert len(other) == 6 and tmp.is_dir()

    h.proc.send_signal(signal.SIGKILL)
    h.proc.wait(DEADLINE_S)
    _poll(lambda: not _marked(h.token), f"workers outlived their parent: {_marked(h.token)}")
    assert tmp.is_dir()  # SIGKILL runs no cleanup

    m = load_synthetic(h.root, n_per_class=N, image_size=PX)  # runs the same generation again
    assert len(m) == 3 * N
    assert not tmp.exists()
    assert h.temporary() == []


@linux_only
def test_sigterm_kills_the_workers_and_removes_the_temporary_folder(held) -> None:
    n_workers = _pool_size()
    h = held()
    h.wait_busy(n_workers)
    [tmp] = h.temporary()

    h.proc.send_signal(signal.SIGTERM)
    # the workers never finish their chunk: waiting for them would hang here
    assert h.proc.wait(DEADLINE_S) == -signal.SIGTERM  # it still ends as SIGTERM ends it
    assert not tmp.exists()
    assert list(h.root.iterdir()) == []  # no dataset folder either: nothing was finished
    _poll(lambda: not _marked(h.token), f"workers outlived their parent: {_marked(h.token)}")
    assert "SIGTERM" in h.log.read_text()


# where the kernel has no parent-death signal, a worker polls its parent pid instead
ORPHAN_WITHOUT_PRCTL = """
import os, signal, sys
from fbench_synthetic import lifecycle

parent = os.getpid()
if os.fork() == 0:
    sys.platform = "darwin"  # this throwaway worker only: no prctl, the fallback
    lifecycle.worker_init(parent)
    open(sys.argv[1], "w").close()
while True:
    signal.pause()
"""


@linux_only
def test_without_the_death_signal_a_worker_still_follows_its_parent(tmp_path: Path) -> None:
    token, ready = uuid.uuid4().hex, tmp_path / "ready"
    proc = subprocess.Popen([sys.executable, "-c", ORPHAN_WITHOUT_PRCTL, str(ready)],
                            env={**os.environ, MARK: token})
    try:
        _poll(lambda: ready.exists() or proc.poll() is not None, "no worker", START_DEADLINE_S)
        assert proc.poll() is None
        [worker] = _marked(token) - {proc.pid}
        proc.kill()
        proc.wait(DEADLINE_S)
        _poll(lambda: worker not in _marked(token), "the worker outlived its parent")
    finally:
        for pid in _marked(token):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.kill()
        proc.wait()


# ------------------------------------------------------------------------------- stale folders


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()  # reaped: its pid names no process (until reused, which takes long)
    return proc.pid


def _leftover(root: Path, name: str, pid: int, tail: str = "abcd1234") -> Path:
    tmp = root / f"{owned_tmp_prefix(name, pid)}{tail}"
    (tmp / "images").mkdir(parents=True)
    (tmp / "images" / "0123456789abcdef.png").write_bytes(b"half")
    return tmp


@linux_only
def test_only_folders_of_dead_owners_are_removed(tmp_path: Path) -> None:
    name = plugin.dataset_dir_name(3, PX, 0, 0.2, gen.GENERATOR_VERSION)
    other = plugin.dataset_dir_name(50, 64, 7, 0.2, gen.GENERATOR_VERSION)
    dead = _leftover(tmp_path, name, _dead_pid())
    dead_other_dataset = _leftover(tmp_path, other, _dead_pid())
    live = _leftover(tmp_path, name, os.getpid())
    claim(live)
    # a pid now used by another process than the one that made the folder
    reused = _leftover(tmp_path, other, os.getpid(), "reused00")
    (reused / OWNER_FILE).write_text("1\n")
    foreign = tmp_path / f".{name}.tmp-{_dead_pid()}-00000000-zzzz"  # another host's
    foreign.mkdir()
    unnamed = tmp_path / f".{name}.tmp-killed"  # named before owners were recorded
    unnamed.mkdir()
    unrelated = tmp_path / f"{owned_tmp_prefix('notes', _dead_pid())}a"  # not a dataset
    unrelated.mkdir()

    removed = lifecycle.remove_stale(tmp_path, 3600.0)
    assert sorted(removed) == sorted([dead, dead_other_dataset, reused])
    assert live.is_dir() and foreign.is_dir() and unnamed.is_dir() and unrelated.is_dir()

    # folders whose owner cannot be checked go once older than the limit
    hour_ago = time.time() - 3700
    for path in (foreign, unnamed, unrelated):
        os.utime(path, (hour_ago, hour_ago))
    assert sorted(lifecycle.remove_stale(tmp_path, 3600.0)) == sorted([foreign, unnamed])
    assert live.is_dir() and unrelated.is_dir()


@linux_only
def test_a_generation_removes_dead_leftovers_and_keeps_no_owner_record(tmp_path: Path) -> None:
    name = plugin.dataset_dir_name(3, PX, 0, 0.2, gen.GENERATOR_VERSION)
    dead = _leftover(tmp_path, name, _dead_pid())
    m = load_synthetic(tmp_path, n_per_class=3, image_size=PX)
    assert not dead.exists()
    root = Path(m.attrs["root"])
    assert not (root / OWNER_FILE).exists()
    assert [p.name for p in tmp_path.iterdir()] == [root.name]
