"""``fbench ablate``: run each variant (and seed) that has no stored run with the same
configuration, then table them side by side, with any reference columns a family declares."""

from __future__ import annotations

import signal
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from fbench.errors import FbenchError
from fbench.plugins.registry import get_registry
from fbench.plugins.specs import AblationSpec
from fbench.report.console import warnings_in_voice
from fbench.runs.writer import RunInterrupted
from fbench.train.config import RunConfig

if TYPE_CHECKING:  # pragma: no cover
    from fbench.use.executors import Executor, Task


def resolve_variants(names: Sequence[str], family: str | None = None
                     ) -> tuple[AblationSpec | None, list[tuple[str, str]]]:
    """Map short names (``fad``) or detector names (``f3net-fad``) to ``(label, detector)``."""
    reg = get_registry()
    groups = {f: spec for f, (spec, _) in reg.ablations().items()}
    if family is not None and family not in groups:
        import difflib

        raise FbenchError(f"no ablation family {family!r}.",
                          f"known: {', '.join(sorted(groups)) or 'none'}"
                          + (f"; did you mean {difflib.get_close_matches(family, groups)}?"
                             if difflib.get_close_matches(family, groups) else ""))
    chosen: AblationSpec | None = groups.get(family) if family else None
    out = []
    for name in names:
        hits = [g for g in ([chosen] if chosen else groups.values()) if name in g.variants]
        if len(hits) > 1:
            raise FbenchError(f"{name!r} is a variant of several families: "
                              f"{', '.join(h.family for h in hits)}.", "pass --family.")
        if hits:
            chosen = chosen or hits[0]
            if hits[0] is not chosen:
                raise FbenchError(f"variants from several families ({chosen.family}, "
                                  f"{hits[0].family}) in one ablation.", "pass --family.")
            out.append((name, hits[0].variants[name]))
        elif name in reg.specs("detector"):
            out.append((name, name))
        else:
            from fbench.errors import UnknownNameError

            shorts = [v for g in ([chosen] if chosen else groups.values()) for v in g.variants]
            raise UnknownNameError("variant", name, sorted(set(shorts) | set(reg.names(
                "detector"))))
    return chosen, out


def find_stored_run(out: str | Path, config: dict[str, Any]) -> Path | None:
    """A completed run under ``out`` with the same configuration and seed
    (:func:`fbench.report.tables.run_identity`), newest first."""
    from fbench.report.tables import run_identity as identity
    from fbench.runs.store import iter_run_dirs

    want = identity(config)
    for run_dir, stored in iter_run_dirs(out, "completed", newest_first=True):
        if identity(stored) == want:
            return run_dir
    return None


@dataclass(frozen=True)
class FinishedRun:
    """One run of an ablation that is done: trained now, or reused from the store."""

    label: str
    seed: int
    transform: str
    run_dir: Path
    reused: bool


@dataclass(frozen=True)
class FailedRun:
    """One run of an ablation that failed: left out of the table, the others go on."""

    label: str
    seed: int
    transform: str
    error: str


class AblationInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM during an ablation: which runs finished, which one was stopped (or,
    for runs side by side, which were unfinished), and how to go on. A KeyboardInterrupt, so
    whatever stops on Ctrl-C stops on it too."""

    def __init__(self, finished: Sequence[FinishedRun], current: str, cause: BaseException,
                 reuse: bool, unfinished: Sequence[str] = ()) -> None:
        self.finished, self.current, self.reuse = list(finished), current, reuse
        self.unfinished = list(unfinished)
        self.run = cause if isinstance(cause, RunInterrupted) else None
        self.signum = int(getattr(cause, "signum", signal.SIGINT))
        super().__init__()

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # the shell's code for "ended by this signal", as fbench run

    def lines(self) -> list[str]:
        """What happened and how to continue, one line each (plain text, no markup)."""
        if self.unfinished:  # runs side by side (or on a cluster): all of them were stopped
            n = len(self.unfinished)
            out = [f"interrupted with {n} run{'' if n == 1 else 's'} unfinished, now stopped: "
                   + ", ".join(self.unfinished) + "."]
        elif self.run is not None:  # its text says how far it got and whether it can resume
            out = [f"{self.current}: {self.run}"]
            if self.run.epoch:
                out.append("  (resumed to the end, it is reused by the ablation instead of "
                           "trained again)")
        else:
            out = [f"interrupted at {self.current} (no run was training)."]
        n = len(self.finished)
        out.append(f"{n} run{'' if n == 1 else 's'} finished before it:" if n
                   else "no run finished before it.")
        out += [f"  {f.label} (seed {f.seed}, transform {f.transform}): {f.run_dir}"
                + (" (reused)" if f.reused else "") for f in self.finished]
        again = "run the same command again" + ("" if self.reuse else " without --no-reuse")
        out.append(f"to continue, {again}: it reuses every completed run and trains the rest.")
        return out

    def __str__(self) -> str:
        return "\n".join(self.lines())


def ablate(variants: Sequence[tuple[str, str]], base: RunConfig, seeds: Sequence[int],
           reuse: bool = True, transforms: Sequence[str] | None = None,
           console: Any = None, progress: bool = True,
           checkpoint: str = "selected", executor: str | Executor | None = None
           ) -> pd.DataFrame:
    """Run (or reuse) every variant × transform × seed; returns one row per run, from the
    ``checkpoint`` selected on validation or the ``last`` epoch's. The runs not stored yet
    train on ``executor`` (:mod:`fbench.use.executors`; default: here, one after another). A
    run that fails is left out of the rows and listed in ``rows.attrs["failed"]``
    (:class:`FailedRun`); the others complete. Ctrl-C (or SIGTERM) is raised on as
    :class:`AblationInterrupted`, which names the finished runs; with a ``console``, Python
    warnings print there in fbench's voice (:func:`warnings_in_voice`)."""
    items = []
    for label, detector in variants:
        for transform in transforms or [base.transform]:
            for seed in seeds:
                cfg = base.replace(detector=detector, seed=seed, transform=transform)
                items.append((label, cfg, f"{label} (seed {seed}"
                              + (f", transform {transform})" if transform else ")")))
    seen: set[str] = set()
    done = sweep_runs(items, reuse, console, progress, executor, seen)
    finished = [d for d in done if isinstance(d, FinishedRun)]
    rows: list[dict[str, Any]] = []
    for run in finished:
        try:
            with warnings_in_voice(console, seen):
                rows.append(_row(run, checkpoint))
        except KeyboardInterrupt as exc:
            # every run is finished; the table was being read back
            raise AblationInterrupted(finished, f"{run.label} (seed {run.seed})", exc,
                                      reuse) from exc
    frame = pd.DataFrame(rows)
    frame.attrs["failed"] = [d for d in done if isinstance(d, FailedRun)]
    return frame


def sweep_runs(items: Sequence[tuple[str, RunConfig, str]], reuse: bool = True,
               console: Any = None, progress: bool = True,
               executor: str | Executor | None = None,
               seen: set[str] | None = None) -> list[FinishedRun | FailedRun]:
    """Each ``(label, config, title)`` as a finished (stored or reused) or failed run, in the
    order given. Every configuration is resolved here first (bad input stops everything before
    any training) and looked up in its store; the missing ones go to ``executor`` (a name or
    an :class:`fbench.use.executors.Executor`). Two identical configurations train once."""
    from fbench.use.executors import Task, make_executor

    engine = make_executor(executor)
    seen = set() if seen is None else seen
    done: list[FinishedRun | FailedRun | None] = [None] * len(items)
    tasks: list[Task] = []
    twins: dict[str, int] = {}  # identity -> the index that trains it
    copies: list[tuple[int, int]] = []
    for i, (label, cfg, title) in enumerate(items):
        try:
            with warnings_in_voice(console, seen):
                found, resolved, identity = _lookup(label, cfg, reuse, console)
        except KeyboardInterrupt as exc:
            raise AblationInterrupted([d for d in done if isinstance(d, FinishedRun)], title,
                                      exc, reuse) from exc
        if found is not None:
            done[i] = found
        elif identity is not None and identity in twins:
            copies.append((i, twins[identity]))
        else:
            if identity is not None:
                twins[identity] = i
            tasks.append(Task(i, label, f"seed {cfg.seed}, transform "
                              f"{resolved.config.transform}", cfg,
                              resolved if engine.in_process else None))
    _train(tasks, items, engine, done, reuse, console, progress, seen)
    for i, first in copies:
        label, cfg, _ = items[i]
        twin = done[first]
        if isinstance(twin, FinishedRun):
            if console:
                console.print(f"{label} (seed {cfg.seed}): reusing {twin.run_dir.name}")
            done[i] = FinishedRun(label, cfg.seed, twin.transform, twin.run_dir, reused=True)
        elif twin is not None:
            done[i] = FailedRun(label, cfg.seed, twin.transform, twin.error)
    _list_failures(done, console)
    return [d for d in done if d is not None]


def _lookup(label: str, cfg: RunConfig, reuse: bool, console: Any
            ) -> tuple[FinishedRun | None, Any, str | None]:
    """(the stored run with ``cfg``'s configuration, or None; ``cfg`` resolved; its
    identity, with ``reuse``)."""
    from fbench.report.tables import run_identity
    from fbench.train.resolve import resolve

    resolved = resolve(cfg)
    if not reuse:
        return None, resolved, None
    stored = resolved.stored_config(dataset_fingerprint=resolved.dataset_identity())
    run_dir = find_stored_run(cfg.out, stored)
    if run_dir is None:
        return None, resolved, run_identity(stored)
    if console:
        console.print(f"{label} (seed {cfg.seed}): reusing {run_dir.name}")
    return (FinishedRun(label, cfg.seed, str(resolved.config.transform), run_dir, reused=True),
            None, None)


def _train(tasks: Sequence[Task], items: Sequence[tuple[str, RunConfig, str]],
           executor: Executor,
           done: list[Any], reuse: bool, console: Any, progress: bool,
           seen: set[str]) -> None:
    """Hand ``tasks`` to ``executor`` and record each outcome in ``done`` as it comes. Runs
    side by side draw one bar for the sweep and a line per finished run (theirs train
    quietly); runs here draw their own bars, as ``fbench run`` does."""
    from fbench.progress import make_progress
    from fbench.use.executors import STOPPED_BY_SIGNAL

    if not tasks:
        return
    by_index = {t.index: t for t in tasks}
    shown = executor.parallel
    with make_progress(console, progress and shown and console is not None) as bar:
        sweep = bar.add_task("sweep", total=len(tasks), info=executor.name)
        outcomes = executor.run(tasks, console, progress)
        outcome: Any = True
        while outcome is not None:
            try:
                with warnings_in_voice(console, seen):
                    outcome = next(outcomes, None)
                    if outcome is not None:
                        done[outcome.index] = _record(by_index[outcome.index], outcome, console,
                                                      shown)
                        bar.advance(sweep)
                        for text in outcome.warnings:  # the worker's, after its line
                            warnings.warn(text, UserWarning, stacklevel=1)
            except KeyboardInterrupt as exc:
                stopped = [items[i][2] for i in executor.unfinished]
                raise AblationInterrupted(
                    [d for d in done if isinstance(d, FinishedRun)],
                    stopped[0] if stopped else "the sweep", exc, reuse,
                    stopped if shown else ()) from exc
    # Workers stopped by the signal say so in their outcomes. This process's own
    # KeyboardInterrupt normally arrives above; once, in CI, it never did (cause not found),
    # and the sweep ended as "every run failed" (exit 2): runs that were stopped mean the
    # sweep was interrupted.
    stopped = [items[t.index][2] for t in tasks if isinstance(done[t.index], FailedRun)
               and done[t.index].error.startswith(STOPPED_BY_SIGNAL)]
    if stopped and shown:
        raise AblationInterrupted([d for d in done if isinstance(d, FinishedRun)], stopped[0],
                                  KeyboardInterrupt(), reuse, stopped)


def _record(task: Task, outcome: Any, console: Any, done_line: bool) -> FinishedRun | FailedRun:
    """The outcome as a finished or failed run; with a ``console``, a line for a failure and,
    with ``done_line``, one for a finished run."""
    cfg, transform = task.config, task.detail.rpartition("transform ")[2]  # sweep_runs wrote it
    if outcome.error is not None:
        if console:
            console.print(f"[red]failed[/] {task.label} ({task.detail}): {_escape(outcome.error)}")
        return FailedRun(task.label, cfg.seed, transform, outcome.error)
    run_dir = Path(outcome.run_dir)
    if console and done_line:
        console.print(f"[green]done[/] {task.label} ({task.detail}): {run_dir.name} "
                      f"({outcome.seconds:.0f} s)")
    return FinishedRun(task.label, cfg.seed, transform, run_dir, reused=False)


def _list_failures(done: Sequence[Any], console: Any) -> None:
    failed = [d for d in done if isinstance(d, FailedRun)]
    if not failed or not console:
        return
    n = len(done)
    console.print(f"[bold red]{len(failed)} of {n} run{'' if n == 1 else 's'} failed[/] "
                  "(left out of the table):")
    for f in failed:
        console.print(f"  {f.label} (seed {f.seed}, transform {f.transform}): "
                      f"{_escape(f.error)}")


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def _row(done: FinishedRun, checkpoint: str) -> dict[str, Any]:
    from fbench.report.tables import run_row
    from fbench.runs.store import load_run

    row = run_row(load_run(done.run_dir), checkpoint)
    row["variant"] = done.label
    return row


def ablation_markdown(rows: pd.DataFrame, spec: AblationSpec | None, command: str,
                      by: str = "variant", references: bool = True) -> str:
    """The ablation as a table laid out like the thesis's final table (see fbench.report.layout)."""
    from fbench.report.layout import layout_markdown

    return layout_markdown(rows, command, by=by, references=references, ablation=spec)
