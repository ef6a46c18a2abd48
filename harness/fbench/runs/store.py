"""The run store: one directory per run, written atomically, read by every report.

    <out>/<run-id>/config.json        the resolved configuration
                   environment.json   versions, git commit, device, plugin providers
                   status.json        running | completed | failed (+ the error)
                   epochs.json        per-epoch train loss and validation metrics
                   predictions.parquet one row per val and eval image
                   summary.json       eval metrics of the selected checkpoint
                   digests.json       SHA-256 of the results above, written on completion
                                      (fbench.runs.digests; older runs have none)
                   digests.json       SHA-256 of the predictions and summary
                   checkpoints/best.pt  the selected model and transform
                   checkpoints/last.pt  resume state, until the run completes (--keep-last)

Every file is written to a temporary name and renamed into place, so a killed run never
leaves a half-written file that a report would read.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import os
import re
import secrets
import warnings
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from fbench.errors import FbenchError
from fbench.files import read_json


def check_out_dir(out: str | Path) -> Path:
    """Refuse an ``--out`` that exists as a file, or that this process cannot write (itself,
    or the nearest existing directory it would be created in), before any work starts: a
    dataset loaded for nothing costs minutes."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise FbenchError(f"--out {out} is a file, not a directory.",
                          "give a directory for runs (it is created if missing).")
    existing = next((p for p in (out, *out.absolute().parents) if p.exists()), None)
    # W_OK to add entries, X_OK to reach them; a missing --out needs both on its parent
    if existing is not None and existing.is_dir() and not os.access(existing,
                                                                   os.W_OK | os.X_OK):
        where = "it is" if existing == out else f"{existing} is"
        raise FbenchError(f"cannot write runs to --out {out}: {where} not writable.",
                          f"give a directory you can write to (--out), or make {existing} "
                          "writable (chmod u+wx).")
    return out


def prepare_out_dir(out: str | Path) -> Path:
    out = check_out_dir(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FbenchError(f"cannot create runs directory {out}: {exc.strerror}.") from None
    return out


def new_run_dir(out: str | Path, detector: str, dataset: str, name: str | None = None) -> Path:
    """Create a fresh, uniquely named run directory (never reuses or touches another run)."""
    out = prepare_out_dir(out)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    label = re.sub(r"[^A-Za-z0-9_.-]+", "-", name or f"{detector}-{dataset}")
    for _ in range(100):
        run_dir = out / f"{stamp}-{label}-{secrets.token_hex(3)}"
        try:
            run_dir.mkdir()
        except FileExistsError:
            continue
        except OSError as exc:  # a full disk, permissions changed since the check
            raise FbenchError(f"cannot create a run directory in {out}: {exc.strerror}.",
                              "free space or choose another --out.") from None
        (run_dir / "checkpoints").mkdir()
        return run_dir
    raise FbenchError(f"could not create a unique run directory in {out}.")


PREDICTIONS = "predictions.parquet"
LAST_PREDICTIONS = "predictions-last.parquet"
"""The last epoch's model's predictions (``predictions.parquet`` holds the selected one's)."""

# Read errors that mean "this file is damaged" (truncated, cut mid-JSON, not a parquet file):
# JSONDecodeError and pyarrow's ArrowInvalid are ValueErrors, its IO errors are OSErrors.
_READ_ERRORS: tuple[type[Exception], ...] = (OSError, ValueError, TypeError)

# Whether load_run reads edited runs when its caller does not say (allow_edited=None): set by
# allow_edited_runs() for code paths that load runs several layers down (ablate's reuse).
_ALLOW_EDITED: ContextVar[bool] = ContextVar("fbench_allow_edited", default=False)


@contextlib.contextmanager
def allow_edited_runs(allow: bool = True) -> Iterator[None]:
    """Within the block, :func:`load_run` reads edited runs (marked, with a warning) unless a
    caller says otherwise: ``fbench regenerate --allow-edited`` reuses runs through ablate."""
    token = _ALLOW_EDITED.set(allow)
    try:
        yield
    finally:
        _ALLOW_EDITED.reset(token)


class DamagedRunError(FbenchError):
    """A run directory with a file that cannot be read back."""

    def __init__(self, run_dir: Path, file: str, reason: str) -> None:
        self.run_dir, self.file, self.reason = Path(run_dir), file, reason
        super().__init__(f"run {run_dir} is damaged: {file} {reason}.",
                         "restore the file from a copy, or delete the run directory and "
                         "train it again.")


def _why(exc: Exception) -> str:
    """An exception as a short clause (its first line), for a one-line error."""
    first = (str(exc).strip().splitlines() or [""])[0]
    text = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."


@dataclass(frozen=True)
class Run:
    """A stored run, read back from its directory."""

    path: Path
    config: dict[str, Any]
    environment: dict[str, Any]
    status: dict[str, Any]
    epochs: pd.DataFrame
    predictions: pd.DataFrame | None
    summary: dict[str, Any] | None
    edited: tuple[str, ...] = ()
    """Results changed since the run stored them (read with ``allow_edited``); tables mark
    such a run. Empty for an intact run and for one stored before digests were written."""

    @property
    def id(self) -> str:
        return self.path.name

    def predictions_of(self, checkpoint: str = "selected") -> pd.DataFrame:
        """Stored predictions of the ``selected`` checkpoint (chosen on validation) or of the
        ``last`` epoch's model."""
        if checkpoint == "selected":
            preds = self.predictions
        elif checkpoint == "last":
            last = self.path / LAST_PREDICTIONS
            if not last.is_file():
                raise FbenchError(f"run {self.path} stored no last-epoch predictions (it was "
                                  "made by an older fbench).",
                                  "use the selected checkpoint, or rerun it.")
            preds = _read(self.path, LAST_PREDICTIONS, pd.read_parquet)
        else:
            raise FbenchError(f"unknown checkpoint {checkpoint!r}.", "use selected or last.")
        if preds is None:
            raise FbenchError(f"run {self.path} has no predictions (state: "
                              f"{self.status.get('state')}).")
        return preds

    def metrics(self, split: str = "eval", checkpoint: str = "selected") -> dict[str, Any]:
        """Recompute a split's metrics from the stored predictions alone."""
        from fbench.metrics import metrics_from_predictions

        return metrics_from_predictions(self.predictions_of(checkpoint), split)

    def checkpoint(self, which: str = "best") -> Path:
        return self.path / "checkpoints" / f"{which}.pt"


def _read(run_dir: Path, name: str, reader: Callable[[Path], Any],
          kind: type | None = None) -> Any:
    """``reader(run_dir / name)``, or None when the file is absent; a file that cannot be read
    (or is not a ``kind``) raises :class:`DamagedRunError` naming the run and the file."""
    file = run_dir / name
    if not file.is_file():
        return None
    try:
        data = reader(file)
    except _READ_ERRORS as exc:
        raise DamagedRunError(run_dir, name, f"cannot be read ({_why(exc)})") from None
    if kind is not None and not isinstance(data, kind):
        raise DamagedRunError(run_dir, name, f"holds a {type(data).__name__}, not a "
                              f"{kind.__name__}")
    return data


def _parquet_footer(path: Path) -> Any:
    """A parquet file's metadata: reads only its footer, enough to tell a truncated file."""
    import pyarrow.parquet as pq

    return pq.read_metadata(path)


def load_run(path: str | Path, allow_edited: bool | None = None) -> Run:
    """Read a run directory. Raises :class:`FbenchError` when it is not one,
    :class:`DamagedRunError` (naming the file) when a file of it cannot be read or a completed
    run lacks its predictions, and :class:`fbench.runs.digests.EditedRunError` when its
    results no longer match its ``digests.json`` unless ``allow_edited`` (then the run comes
    back with ``edited`` set and a warning). ``allow_edited=None``: as
    :func:`allow_edited_runs` says (default: refuse)."""
    from fbench.runs.digests import check_digests

    p = Path(path)
    if not (p / "config.json").is_file():
        raise FbenchError(f"{p} is not a run directory (no config.json).",
                          "pass a directory under your --out (default: runs/).")
    status = _read(p, "status.json", read_json, dict) or {}
    predictions = _read(p, PREDICTIONS, pd.read_parquet)
    if predictions is None and status.get("state") == "completed":
        raise DamagedRunError(p, PREDICTIONS, "is missing (the run is marked completed)")
    # read before the digests are compared: a truncated file is damage, not an edit
    _read(p, LAST_PREDICTIONS, _parquet_footer)
    epochs = _read(p, "epochs.json", lambda f: pd.DataFrame(read_json(f)))
    run = Run(
        path=p,
        config=_read(p, "config.json", read_json, dict),
        environment=_read(p, "environment.json", read_json, dict) or {},
        status=status,
        epochs=epochs if epochs is not None else pd.DataFrame(),
        predictions=predictions,
        summary=_read(p, "summary.json", read_json, dict),
    )
    allow = _ALLOW_EDITED.get() if allow_edited is None else allow_edited
    # a status that says digests were written makes a deleted digests.json an edit too
    edited = check_digests(p, allow_edited=allow, expected=status.get("digests") is True)
    if edited:
        warnings.warn(f"run {p} was edited after it was stored ({', '.join(edited)}); read "
                      "anyway (--allow-edited) and marked as edited in tables", stacklevel=2)
        run = dataclasses.replace(run, edited=edited)
    return run


def _read_state(run_dir: Path) -> tuple[dict[str, Any], str | None] | None:
    """``(config, state)`` of a run directory, or None when its config or status cannot be
    parsed (warned: a damaged run never stops a report over the others)."""
    try:
        config = read_json(run_dir / "config.json")
        status_file = run_dir / "status.json"
        state = read_json(status_file).get("state") if status_file.is_file() else None
    except (OSError, ValueError, AttributeError) as exc:
        warnings.warn(f"skipping damaged run {run_dir}: {exc}", stacklevel=3)
        return None
    return config, state


def iter_run_dirs(runs_dir: str | Path, state: str | None = "completed",
                  newest_first: bool = False) -> Iterator[tuple[Path, dict[str, Any]]]:
    """Run directories under ``runs_dir`` in name (= start time) order, with their stored
    config, whose status is ``state`` (``None``: any). Cheap: reads two small JSON files per
    run; use :func:`iter_runs` for the whole record."""
    for cfg_file in sorted(Path(runs_dir).glob("*/config.json"), reverse=newest_first):
        read = _read_state(cfg_file.parent)
        if read is not None and (state is None or read[1] == state):
            yield cfg_file.parent, read[0]


def iter_runs(runs_dir: str | Path, state: str | None = "completed",
              allow_edited: bool | None = None) -> Iterator[Run]:
    """Every stored :class:`Run` under ``runs_dir`` whose status is ``state``: the one walk
    of a run store that reports use. A run whose files are damaged (a truncated JSON or
    parquet, a completed run without predictions) is skipped with a warning naming it; an
    edited run (see :func:`load_run`) stops the walk, unless ``allow_edited``."""
    from fbench.runs.digests import EditedRunError

    for run_dir, _ in iter_run_dirs(runs_dir, state):
        try:
            run = load_run(run_dir, allow_edited)
        except EditedRunError:
            raise  # an edited result is refused, not quietly left out of a table
        except DamagedRunError as exc:
            warnings.warn(f"skipping damaged run {run_dir}: {exc.file} {exc.reason}",
                          stacklevel=2)
            continue
        except Exception as exc:  # noqa: BLE001 - any other read failure also means "damaged"
            warnings.warn(f"skipping damaged run {run_dir}: {type(exc).__name__}: {exc}",
                          stacklevel=2)
            continue
        yield run
