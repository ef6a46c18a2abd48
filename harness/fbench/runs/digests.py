"""Digests of a finished run's results (``digests.json``), so a report can tell a stored result
from one edited afterwards.

When a run completes, the SHA-256 of the files every table is recomputed from (the selected and
the last epoch's predictions, and the summary) is written beside them. Readers
(:func:`fbench.runs.store.load_run`) compare the files with it and refuse an edited run unless
told to read it anyway, marked as edited. Runs stored before fbench wrote digests have no
``digests.json`` and are read as before.

A digest beside the files it covers catches an edit made by hand or by a script that did not
also rewrite ``digests.json``; it is not a signature against someone who rewrites both.
"""

from __future__ import annotations

from pathlib import Path

from fbench.data.audit import file_sha256  # the one file hash (datasets use it too)
from fbench.errors import FbenchError
from fbench.files import read_json, write_json

DIGESTS = "digests.json"
ALGORITHM = "sha256"  # what file_sha256 computes; recorded, so a reader can tell
# The results a table is made of. The names are the run store's (fbench.runs.store); spelled
# out here because the store reads this module, not the other way round.
DIGESTED = ("predictions.parquet", "predictions-last.parquet", "summary.json")


class EditedRunError(FbenchError):
    """A run whose results no longer match the digests written when it completed."""

    def __init__(self, run_dir: Path, edited: list[str]) -> None:
        self.run_dir = Path(run_dir)
        self.edited = tuple(edited)
        super().__init__(
            f"run {run_dir} was edited after it was stored: {', '.join(edited)} "
            f"(SHA-256 no longer matches its {DIGESTS}).",
            "restore the run's files, or pass --allow-edited (allow_edited=True in Python) to "
            "read it anyway, marked as edited in tables.")


def record_digests(run_dir: str | Path) -> dict[str, str]:
    """Write ``digests.json`` for the results present in ``run_dir`` (atomically; an earlier
    one is replaced, so it can be called again after a plugin added to ``summary.json``).
    Returns ``{file name: hex digest}``."""
    run_dir = Path(run_dir)
    files = {name: file_sha256(run_dir / name) for name in DIGESTED
             if (run_dir / name).is_file()}
    write_json(run_dir / DIGESTS, {"algorithm": ALGORITHM, "files": files})
    return files


def _recorded(run_dir: Path) -> dict[str, str] | None:
    """The digests ``digests.json`` holds, or None when it cannot be trusted to hold any
    (unreadable, another algorithm, a name that is not a plain file of the run)."""
    try:
        data = read_json(run_dir / DIGESTS)
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("algorithm") != ALGORITHM:
        return None
    files = data.get("files")
    if not isinstance(files, dict):
        return None
    # a name like ../x would make the check read outside the run
    if any(not isinstance(n, str) or Path(n).name != n or not isinstance(d, str)
           for n, d in files.items()):
        return None
    return files


def edited_files(run_dir: str | Path, expected: bool = False) -> list[str] | None:
    """What changed since ``digests.json`` was written: ``[]`` when every result matches,
    a description per file otherwise (``predictions.parquet``, ``summary.json (missing)``);
    None for a run without ``digests.json`` (stored before fbench wrote digests), unless
    its status says they were written (``expected``): then the digests were removed."""
    run_dir = Path(run_dir)
    if not (run_dir / DIGESTS).is_file():
        return [f"{DIGESTS} (missing)"] if expected else None
    recorded = _recorded(run_dir)
    if recorded is None:
        return [f"{DIGESTS} (unreadable)"]
    out = []
    for name, digest in recorded.items():
        file = run_dir / name
        if not file.is_file():
            out.append(f"{name} (missing)")
        elif file_sha256(file) != digest:
            out.append(name)
    # a result that appeared after the digests were written was not what the run stored
    out += [f"{name} (added)" for name in DIGESTED
            if name not in recorded and (run_dir / name).is_file()]
    return out


def check_digests(run_dir: str | Path, allow_edited: bool = False,
                  expected: bool = False) -> tuple[str, ...]:
    """The run's edited results (see :func:`edited_files`); raises :class:`EditedRunError`
    when there are any, unless ``allow_edited``."""
    edited = edited_files(run_dir, expected) or []
    if edited and not allow_edited:
        raise EditedRunError(Path(run_dir), edited)
    return tuple(edited)

