"""``fbench ablate``: run each variant (and seed) that has no stored run with the same
configuration, then table them side by side, with any reference columns a family declares."""

from __future__ import annotations

import contextlib
import signal
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from fbench.errors import FbenchError
from fbench.plugins.registry import get_registry
from fbench.plugins.specs import AblationSpec
from fbench.runs.writer import RunInterrupted
from fbench.train.config import RunConfig


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


class AblationInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM during an ablation: which runs finished, which one was stopped, and
    how to go on. A KeyboardInterrupt, so whatever stops on Ctrl-C stops on it too."""

    def __init__(self, finished: Sequence[FinishedRun], current: str, cause: BaseException,
                 reuse: bool) -> None:
        self.finished, self.current, self.reuse = list(finished), current, reuse
        self.run = cause if isinstance(cause, RunInterrupted) else None
        self.signum = int(getattr(cause, "signum", signal.SIGINT))
        super().__init__()

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # the shell's code for "ended by this signal", as fbench run

    def lines(self) -> list[str]:
        """What happened and how to continue, one line each (plain text, no markup)."""
        if self.run is not None:  # its text says how far it got and whether it can resume
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


@contextlib.contextmanager
def warnings_in_voice(console: Any, seen: set[str]) -> Iterator[None]:
    """Python warnings raised inside print as ``warning: <text>``, once per text (``seen``
    holds the texts already printed), without the source path and line Python's own format
    adds beside fbench's advice. The filters in force still apply (an ignored warning stays
    ignored, ``-W error`` still raises). Without a console, warnings pass through untouched."""
    if console is None:
        yield
        return
    from rich.markup import escape

    caught: list[warnings.WarningMessage] = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            yield
    finally:
        for w in caught:
            text = " ".join(str(w.message).split())
            if text not in seen:
                seen.add(text)
                console.print(f"[bold yellow]warning:[/] {escape(text)}")


def ablate(variants: Sequence[tuple[str, str]], base: RunConfig, seeds: Sequence[int],
           reuse: bool = True, transforms: Sequence[str] | None = None,
           console: Any = None, progress: bool = True,
           checkpoint: str = "selected") -> pd.DataFrame:
    """Run (or reuse) every variant × transform × seed; returns one row per run, from the
    ``checkpoint`` selected on validation or the ``last`` epoch's. Ctrl-C (or SIGTERM) is
    raised on as :class:`AblationInterrupted`, which names the finished runs; with a
    ``console``, Python warnings print there in fbench's voice (:func:`warnings_in_voice`)."""
    rows: list[dict[str, Any]] = []
    finished: list[FinishedRun] = []
    seen: set[str] = set()
    for label, detector in variants:
        for transform in transforms or [base.transform]:
            for seed in seeds:
                cfg = base.replace(detector=detector, seed=seed, transform=transform)
                current = f"{label} (seed {seed}" + (f", transform {transform})"
                                                     if transform else ")")
                done: FinishedRun | None = None
                try:
                    with warnings_in_voice(console, seen):
                        done = _one_run(label, cfg, reuse, console, progress)
                        rows.append(_row(done, checkpoint))
                except KeyboardInterrupt as exc:
                    # a run stopped while its row was read back is finished all the same
                    raise AblationInterrupted(finished + ([done] if done else []), current,
                                              exc, reuse) from exc
                finished.append(done)
    return pd.DataFrame(rows)


def _one_run(label: str, cfg: RunConfig, reuse: bool, console: Any,
             progress: bool) -> FinishedRun:
    """Reuse the stored run with ``cfg``'s configuration, or train it."""
    from fbench.train.engine import train_and_evaluate
    from fbench.train.resolve import resolve

    resolved = resolve(cfg)
    stored = resolved.stored_config(dataset_fingerprint=resolved.dataset_identity())
    transform = str(resolved.config.transform)
    run_dir = find_stored_run(cfg.out, stored) if reuse else None
    if run_dir is not None:
        if console:
            console.print(f"{label} (seed {cfg.seed}): reusing {run_dir.name}")
        return FinishedRun(label, cfg.seed, transform, run_dir, reused=True)
    if console:
        console.print(f"[bold]{label}[/] (seed {cfg.seed}, transform {transform}): training")
    run_dir = train_and_evaluate(resolved, console=console, progress=progress)
    return FinishedRun(label, cfg.seed, transform, Path(run_dir), reused=False)


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
