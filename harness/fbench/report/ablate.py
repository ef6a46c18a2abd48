"""``fbench ablate``: run each variant (and seed) that has no stored run with the same
configuration, then table them side by side, with any reference columns a family declares."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from fbench.errors import FbenchError
from fbench.plugins.registry import get_registry
from fbench.plugins.specs import AblationSpec
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


def ablate(variants: Sequence[tuple[str, str]], base: RunConfig, seeds: Sequence[int],
           reuse: bool = True, transforms: Sequence[str] | None = None,
           console: Any = None, progress: bool = True,
           checkpoint: str = "selected") -> pd.DataFrame:
    """Run (or reuse) every variant × transform × seed; returns one row per run, from the
    ``checkpoint`` selected on validation or the ``last`` epoch's."""
    from fbench.report.tables import run_row
    from fbench.runs.store import load_run
    from fbench.train.engine import train_and_evaluate
    from fbench.train.resolve import resolve

    rows = []
    for label, detector in variants:
        for transform in transforms or [base.transform]:
            for seed in seeds:
                cfg = base.replace(detector=detector, seed=seed, transform=transform)
                resolved = resolve(cfg)
                stored = resolved.stored_config(
                    dataset_fingerprint=resolved.dataset_identity())
                run_dir = find_stored_run(cfg.out, stored) if reuse else None
                if run_dir is not None:
                    if console:
                        console.print(f"{label} (seed {seed}): reusing {run_dir.name}")
                else:
                    if console:
                        console.print(f"[bold]{label}[/] (seed {seed}, transform "
                                      f"{resolved.config.transform}): training")
                    run_dir = train_and_evaluate(resolved, console=console, progress=progress)
                row = run_row(load_run(run_dir), checkpoint)
                row["variant"] = label
                rows.append(row)
    return pd.DataFrame(rows)


def ablation_markdown(rows: pd.DataFrame, spec: AblationSpec | None, command: str,
                      by: str = "variant", references: bool = True) -> str:
    """The ablation as a table laid out like the thesis's final table (see fbench.report.layout)."""
    from fbench.report.layout import layout_markdown

    return layout_markdown(rows, command, by=by, references=references, ablation=spec)
