"""Committed tables (``leaderboards/*.md``) and the one command that rebuilds them.

A board file (TOML, ``leaderboards/boards.toml``) declares each table: what to train (detectors,
dataset, settings, seeds) and how to show it (``leaderboard``: the standard leaderboard;
``ablation``: the thesis-layout table). ``fbench regenerate`` trains (or reuses) the runs and
rewrites the tables; ``--check`` retrains into a scratch directory and compares every metric
cell with the committed file, so a test can prove that a committed table is reproducible.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from fbench.errors import FbenchError

DEFAULT_BOARDS = Path("leaderboards") / "boards.toml"
KINDS = ("leaderboard", "ablation")
# Cells that measure the machine, not the model: never compared.
VOLATILE_COLUMNS = ("train img/s",)


@dataclass(frozen=True)
class Board:
    file: Path
    kind: str
    detectors: tuple[str, ...]
    dataset: str = "synthetic"
    seeds: int = 1
    family: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    dataset_options: dict[str, Any] = field(default_factory=dict)
    prepare: tuple[str, ...] = ()
    """fbench commands run first (e.g. the landmark cache a detector needs), idempotent."""

    def command(self, boards_file: Path) -> str:
        """The command written at the top of the table."""
        extra = "" if boards_file == DEFAULT_BOARDS else f" --boards {boards_file}"
        return f"fbench regenerate {self.file}{extra}"


def load_boards(path: str | Path = DEFAULT_BOARDS) -> list[Board]:
    """Read and check a boards file; table paths are relative to the file's folder."""
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text())
    except FileNotFoundError:
        raise FbenchError(f"boards file {p} does not exist.",
                          "run from the repository root or pass --boards FILE.") from None
    except tomllib.TOMLDecodeError as exc:
        raise FbenchError(f"boards file {p} is not valid TOML: {exc}.") from None
    boards = []
    for i, raw in enumerate(data.get("board", [])):
        where = f"{p}: board {i + 1}"
        unknown = set(raw) - {f for f in Board.__dataclass_fields__}
        if unknown:
            raise FbenchError(f"{where} has unknown key(s) {sorted(unknown)}.",
                              f"keys: {', '.join(Board.__dataclass_fields__)}")
        if raw.get("kind") not in KINDS or not raw.get("file") or not raw.get("detectors"):
            raise FbenchError(f"{where} needs file, detectors and kind ({' or '.join(KINDS)}).")
        boards.append(Board(**{**raw, "file": p.parent / raw["file"],
                               "detectors": tuple(raw["detectors"]),
                               "prepare": tuple(raw.get("prepare", ()))}))
    if not boards:
        raise FbenchError(f"{p} declares no [[board]].")
    return boards


def select(boards: Sequence[Board], files: Sequence[str | Path]) -> list[Board]:
    """The boards named by ``files`` (paths or bare file names); all when none is named."""
    if not files:
        return list(boards)
    chosen = []
    for f in files:
        hits = [b for b in boards if b.file == Path(f) or b.file.name == Path(f).name]
        if not hits:
            raise FbenchError(f"no board writes {f}.",
                              f"known: {', '.join(str(b.file) for b in boards)}")
        chosen += [h for h in hits if h not in chosen]
    return chosen


def build(board: Board, boards_file: Path, runs_dir: Path, reuse: bool = True,
          console: Any = None, progress: bool = True,
          run_command: Callable[[str], None] | None = None, allow_edited: bool = False,
          executor: Any = None) -> str:
    """Train (or reuse) the board's runs and return its markdown. ``run_command`` runs each
    of the board's preparation command lines (``fbench data landmarks ...``); the CLI passes
    its own, since this module sits below it. A reused run whose results were edited after
    it was stored is refused (:class:`fbench.runs.digests.EditedRunError`) unless
    ``allow_edited``: then the table marks it. The missing runs train on ``executor``
    (:mod:`fbench.use.executors`); a committed table is never written with a run missing,
    so a failed run is an :class:`fbench.use.executors.SweepFailed` (the others are stored)."""
    from fbench.runs.store import allow_edited_runs

    # ablate loads the runs it reuses itself: the setting reaches it through the store
    with allow_edited_runs(allow_edited):
        return _build(board, boards_file, runs_dir, reuse, console, progress, run_command,
                      executor)


def _build(board: Board, boards_file: Path, runs_dir: Path, reuse: bool, console: Any,
           progress: bool, run_command: Callable[[str], None] | None, executor: Any) -> str:
    from fbench.report.ablate import ablate, ablation_markdown, resolve_variants
    from fbench.report.leaderboard import leaderboard, render
    from fbench.runs.store import load_run, prepare_out_dir
    from fbench.train.config import RunConfig

    for command in board.prepare:
        if run_command is None:
            raise FbenchError(f"board {board.file} needs preparation ({command!r}) and no "
                              "command runner was given.", "run it with `fbench regenerate`.")
        if console:
            console.print(f"preparing: {command}")
        run_command(command)
    spec, variants = resolve_variants(board.detectors, board.family)
    base = RunConfig.from_dict({**board.settings, "dataset": board.dataset,
                                "out": str(runs_dir), "options": dict(board.options),
                                "dataset_options": dict(board.dataset_options)},
                               source=f"{boards_file} ({board.file.name})")
    prepare_out_dir(runs_dir)
    rows = ablate(variants, base, list(range(base.seed, base.seed + board.seeds)), reuse=reuse,
                  console=console, progress=progress, executor=executor)
    if rows.attrs.get("failed"):
        from fbench.use.executors import SweepFailed

        raise SweepFailed([(f"{f.label} (seed {f.seed}, transform {f.transform})", f.error)
                           for f in rows.attrs["failed"]])
    command = board.command(boards_file)
    if board.kind == "ablation":
        return ablation_markdown(rows, spec, command)
    runs = [load_run(Path(runs_dir) / r) for r in rows["run"]]
    return render(leaderboard(runs), "md", command)


def table_cells(markdown: str) -> list[dict[str, str]]:
    """The rows of the first markdown table as {column: cell}, without volatile columns."""
    lines = [ln for ln in markdown.splitlines() if ln.startswith("|")]
    if len(lines) < 2:
        return []
    split = [[c.strip() for c in re.split(r"(?<!\\)\|", ln.strip())[1:-1]] for ln in lines]
    header = split[0]
    return [{h: c for h, c in zip(header, row, strict=False) if h not in VOLATILE_COLUMNS}
            for row in split[2:]]


def differences(committed: str, rebuilt: str) -> pd.DataFrame:
    """Cells that differ between two renderings of a table (row, column, committed, rebuilt)."""
    a, b = table_cells(committed), table_cells(rebuilt)
    out = []
    if len(a) != len(b):
        out.append({"row": "-", "column": "rows", "committed": str(len(a)),
                    "rebuilt": str(len(b))})
    for i, (ra, rb) in enumerate(zip(a, b, strict=False)):
        for col in sorted(set(ra) | set(rb)):
            if ra.get(col) != rb.get(col):
                name = ra.get("model") or ra.get("detector") or str(i + 1)
                out.append({"row": name, "column": col, "committed": ra.get(col, "(none)"),
                            "rebuilt": rb.get(col, "(none)")})
    return pd.DataFrame(out, columns=["row", "column", "committed", "rebuilt"])
