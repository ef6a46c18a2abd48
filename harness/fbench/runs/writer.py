"""``RunWriter``: every file of one run directory, written atomically and in an order that
keeps the directory honest at any moment (status first and small, the big files after).

The engine says what happened (settings resolved, an epoch ended, the run finished or failed);
the writer decides where it goes. Under torchrun only rank 0 writes: the other ranks hold a
writer with ``enabled=False``, whose calls do nothing. While a process writes a run it holds
the run's lock (:func:`lock_run`), so a second process (``--resume`` of a run still training)
is refused instead of interleaving its files with the first one's.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pandas as pd

from fbench.errors import FbenchError
from fbench.files import atomic_path, read_json, write_json, write_parquet
from fbench.runs.store import LAST_PREDICTIONS, PREDICTIONS, new_run_dir

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: runs are written unlocked
    fcntl = None  # type: ignore[assignment]

CONFIG, ENVIRONMENT, STATUS, EPOCHS, SUMMARY = (
    "config.json", "environment.json", "status.json", "epochs.json", "summary.json")
CHECKPOINTS = "checkpoints"
LOCK = ".lock"
"""Held (``flock``) by the process writing the run, and holding its pid. Left in place on
release: removing it would let a process that opened the old file and one that creates a new
one both hold "the" lock."""

DISK_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


@dataclass(frozen=True)
class RunWriter:
    """The files of the run directory at ``path``."""

    path: Path
    enabled: bool = True
    saved: dict[str, int] = field(default_factory=dict, compare=False)
    """The epoch of each checkpoint this writer saved (``{"last": 3}``)."""

    @classmethod
    def create(cls, out: str | Path, detector: str, dataset: str,
               name: str | None = None) -> RunWriter:
        """A fresh, uniquely named run directory under ``out``."""
        return cls(new_run_dir(out, detector, dataset, name))

    def lock(self) -> RunLock:
        """The run's lock, for as long as this process writes it (a no-op off rank 0)."""
        return lock_run(self.path) if self.enabled else RunLock(None)

    @contextlib.contextmanager
    def _writing(self, file: Path) -> Iterator[None]:
        """A full disk while writing ``file`` becomes one line that says what to do; the
        partial file is already gone (atomic_path removes its temporary name)."""
        try:
            yield
        except OSError as exc:
            if exc.errno not in DISK_FULL:
                raise
            raise FbenchError(f"disk full while writing {file} ({exc.strerror}; the partial "
                              "file was removed).", f"free space, then {self.how_to_go_on()}.") \
                from None

    def how_to_go_on(self) -> str:
        """Resume when an epoch was saved, else start again."""
        if self.checkpoint_path("last").is_file():
            return f"resume with: fbench run --resume {self.path}"
        return "start the run again (no epoch was saved to resume from)"

    def _json(self, name: str, data: Any) -> None:
        if self.enabled:
            with self._writing(self.path / name):
                write_json(self.path / name, data)

    def config(self, config: dict[str, Any]) -> None:
        self._json(CONFIG, config)

    def environment(self, environment: dict[str, Any]) -> None:
        self._json(ENVIRONMENT, environment)

    def dataset(self, manifest: pd.DataFrame, hashes: pd.DataFrame) -> dict[str, Any]:
        """Every image's hash beside the run (``dataset.parquet``); returns the fingerprint
        that goes into the config."""
        from fbench.data.fingerprint import DATASET_FILE, record_dataset

        if not self.enabled:
            return {}
        with self._writing(self.path / DATASET_FILE):
            return record_dataset(self.path, manifest, hashes)

    def status(self, state: str, **fields: Any) -> None:
        self._json(STATUS, {"state": state, **fields})

    def read_status(self) -> dict[str, Any]:
        file = self.path / STATUS
        return read_json(file) if file.is_file() else {}

    def running(self, started: float, resumed_after: int | None = None) -> None:
        self.status("running", started=started,
                    **({"resumed_after_epoch": resumed_after} if resumed_after else {}))

    def completed(self, started: float) -> None:
        """Seal the results (SHA-256 of predictions and summary, ``digests.json``: every reader
        checks them) and mark the run completed."""
        from fbench.runs.digests import record_digests

        if self.enabled:
            with self._writing(self.path / "digests.json"):
                record_digests(self.path)
        self.status("completed", started=started, finished=time.time(), digests=True)

    def stopped(self, state: str, started: float, error: str) -> str | None:
        """``failed`` or ``interrupted``, with the error in one short line: a tiny write, so
        that it still fits where the disk just filled up. Returns None when recorded, else
        the one line that says it could not be."""
        if not self.enabled:
            return None
        error = " ".join(error.split())
        try:
            write_json(self.path / STATUS, {"state": state, "started": started,
                                            "finished": time.time(), "error": error[:500]})
        except OSError as exc:
            return (f"could not mark it {state} either: writing {self.path / STATUS} failed "
                    f"({exc.strerror or exc}), so it may still say running")
        return None

    def epochs(self, rows: list[dict[str, Any]]) -> None:
        self._json(EPOCHS, rows)

    def checkpoint(self, name: str, state: dict[str, Any]) -> None:
        """``checkpoints/<name>.pt`` (model, transform, optimizer, epoch, ...)."""
        if not self.enabled:
            return
        import torch

        path = self.checkpoint_path(name)
        # through a Python file: a full disk then raises OSError(ENOSPC), where torch's own
        # file writer raises a RuntimeError that does not say why
        with self._writing(path), atomic_path(path) as tmp, open(tmp, "wb") as fh:
            torch.save(state, fh)
        self.saved[name] = int(state.get("epoch", 0))

    def checkpoint_path(self, name: str) -> Path:
        return self.path / CHECKPOINTS / f"{name}.pt"

    def remove_checkpoint(self, name: str) -> None:
        """Remove ``checkpoints/<name>.pt`` (``last``, once a completed run cannot resume)."""
        if self.enabled:
            self.checkpoint_path(name).unlink(missing_ok=True)

    def resume_state(self) -> dict[str, Any]:
        """What ``last.pt`` holds for ``fbench run --resume`` to continue the run from; a
        completed run, one stopped in its first epoch or a checkpoint without resume state
        is refused."""
        if self.read_status().get("state") == "completed":
            raise FbenchError(f"run {self.path} is already completed; nothing to resume.",
                              "start a new run (or `fbench reproduce` it).")
        last = self.checkpoint_path("last")
        if not last.is_file():
            raise FbenchError(f"run {self.path} has no checkpoint to resume from (it stopped "
                              "during its first epoch).", "start the run again.")
        state = read_checkpoint(last)
        if "rng" not in state or "epochs" not in state:
            raise FbenchError(f"{last} was written by an older fbench without resume state.",
                              "start the run again.")
        return state

    def predictions(self, selected: pd.DataFrame, last: pd.DataFrame) -> None:
        """The selected checkpoint's and the last epoch's predictions on val and eval."""
        if self.enabled:
            for name, frame in ((PREDICTIONS, selected), (LAST_PREDICTIONS, last)):
                with self._writing(self.path / name):
                    write_parquet(self.path / name, frame)

    def summary(self, summary: dict[str, Any]) -> None:
        self._json(SUMMARY, summary)


class RunLock:
    """An exclusive ``flock`` on a run's :data:`LOCK` file. The kernel drops it when the
    process ends, however it ends, so a killed run never leaves a lock that needs removing."""

    def __init__(self, handle: IO[str] | None) -> None:
        self._handle = handle

    def release(self) -> None:
        if self._handle is not None:
            self._handle.close()  # closing the descriptor releases the flock
            self._handle = None

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def lock_run(run_dir: str | Path) -> RunLock:
    """Take the run's lock, or refuse in one line naming the process that holds it."""
    run_dir = Path(run_dir)
    path = run_dir / LOCK
    if fcntl is None:  # pragma: no cover
        return RunLock(None)
    try:
        # "a+": opening must not erase the holder's pid, which a refused process reads
        handle = open(path, "a+")  # noqa: SIM115 - held open until release()
    except OSError as exc:
        raise FbenchError(f"cannot write run directory {run_dir}: {exc.strerror}.",
                          "check that it exists and that you may write it.") from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        if exc.errno not in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES):
            # a filesystem without flock (some network mounts): runs must still be possible
            warnings.warn(f"cannot lock run directory {run_dir} ({exc.strerror}): nothing "
                          "stops a second process from writing it", stacklevel=2)
            return RunLock(None)
        stop = f"stop it (kill {holder})" if holder.isdigit() else "stop it"
        raise FbenchError(f"run {run_dir} is being written by another fbench process "
                          f"(pid {holder}).", f"wait for it to end, or {stop} and then resume.") \
            from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return RunLock(handle)


class RunInterrupted(KeyboardInterrupt):
    """A run stopped by Ctrl-C (SIGINT) or SIGTERM, raised once its status says
    ``interrupted``; its text says how far it got and how to go on. A KeyboardInterrupt, so
    whatever stops on Ctrl-C stops on it too."""

    def __init__(self, run_dir: Path, epoch: int, epochs: int, cause: BaseException) -> None:
        self.run_dir, self.epoch, self.epochs = run_dir, epoch, epochs
        # the SIGTERM handler's exception says which signal; a plain KeyboardInterrupt is SIGINT
        self.signum = int(getattr(cause, "signum", signal.SIGINT))
        self.not_recorded: str | None = None
        super().__init__()

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # the shell's code for "ended by this signal"

    @property
    def reason(self) -> str:
        return (f"interrupted by {signal.Signals(self.signum).name} after epoch {self.epoch} "
                f"of {self.epochs}")

    def __str__(self) -> str:
        if self.epoch:
            line = (f"interrupted after epoch {self.epoch} of {self.epochs}; resume with: "
                    f"fbench run --resume {self.run_dir}")
        else:
            line = (f"interrupted before epoch 1 of {self.epochs} finished; nothing to resume "
                    f"in {self.run_dir}: start the run again")
        return line + (f" ({self.not_recorded})" if self.not_recorded else "")


def _load_problem(exc: Exception) -> tuple[str, str]:
    """What went wrong loading a checkpoint, in one line, and what to do about it."""
    import pickle
    import re

    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if isinstance(exc, pickle.UnpicklingError) and lines and "weights only" in lines[0].lower():
        # torch's text is a page of advice (that differs between versions); the name of the
        # refused global is the part worth a line
        found = re.search(r"GLOBAL\s+([\w.]+)", str(exc))
        detail = f": {found.group(1)}" if found else ""
        return (f"it holds Python objects that no fbench checkpoint contains (a global"
                f"{detail}), and loading them could run code, so it was refused",
                "do not load checkpoints from untrusted sources; rerun the run that made it, "
                "or restore the file from a copy you trust.")
    if isinstance(exc, FileNotFoundError):
        return "the file does not exist", "pass a run that finished at least one epoch."
    detail = lines[0].split(". ")[0][:160] if lines else ""
    reason = f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
    return (f"it is truncated or damaged ({reason})",
            "rerun the run that made it (or `--resume` from an intact last.pt), or restore "
            "the file from a copy.")


def read_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """A checkpoint as data: ``weights_only`` never unpickles arbitrary objects. Any file
    that does not load as one (truncated, damaged, not a checkpoint, or holding objects
    ``weights_only`` refuses) is one :class:`FbenchError` naming it."""
    import torch

    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a bad file
        problem, fix = _load_problem(exc)
        raise FbenchError(f"cannot load checkpoint {path}: {problem}.", fix) from None
    if not isinstance(state, dict) or "model" not in state:
        raise FbenchError(f"cannot load checkpoint {path}: it is not an fbench checkpoint (no "
                          "model state).", "pass the checkpoints of a run `fbench run` made.")
    return state
