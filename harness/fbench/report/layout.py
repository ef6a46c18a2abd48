"""Tables laid out like the thesis's final table: what each model is made of (backbone, head,
feature fusion, multi-task), then ACC, macro-F1, Dice and parameters, with numbers measured
elsewhere (the thesis's, a paper's) as optional reference columns beside fbench's own.

What a model is made of comes from its detector spec's ``traits``; reference numbers from the
spec's ``references`` and from the ablation family's. The metrics come only from the runs'
stored predictions (rows made by :func:`fbench.report.tables.run_row`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from fbench.plugins.specs import AblationSpec, DetectorSpec

TRAIT_TITLES = {"backbone": "backbone", "head": "head", "fusion": "feature fusion",
                "multi_task": "multi-task"}


def _spec(detector: str) -> DetectorSpec | None:
    """The detector's spec, or None when its plugin is no longer installed (the table still
    shows the stored numbers, with unknown traits)."""
    from fbench.errors import UnknownNameError
    from fbench.plugins.registry import get_registry

    try:
        return get_registry().get("detector", detector)
    except UnknownNameError:  # an uninstalled plugin must not hide the runs it made
        return None


def _fmt(value: float | None, digits: int = 2) -> str:
    return "–" if value is None or pd.isna(value) else f"{value:.{digits}f}"


def _reference_cell(values: Mapping[str, float]) -> str:
    """``ACC / F1 / Dice / params`` in the thesis's order, '–' where not given."""
    return " / ".join(_fmt(values.get(k)) for k in ("accuracy", "macro_f1", "dice", "params_m"))


def aggregated(rows: pd.DataFrame, by: str = "variant", ranked: bool | None = None
               ) -> pd.DataFrame:
    """The rows of a layout table: runs aggregated per (``by``, detector, transform,
    configuration) with :func:`fbench.report.tables.aggregate`. ``ranked``: by mean macro-F1
    with :func:`fbench.report.tables.rank`'s fixed tie order; by default an ablation's rows
    (with a ``variant`` column) keep the order its variants were declared in, any other
    table is ranked like a leaderboard."""
    from fbench.report.tables import aggregate, rank

    if by not in rows:
        rows = rows.assign(**{by: rows["detector"]})
    if "config" not in rows:
        rows = rows.assign(config="", options="")
    agg = aggregate(rows, [by, "detector", "transform", "config", "options"],
                    ["params_m", "accuracy", "macro_f1", "dice"])
    if ranked is None:
        ranked = "variant" not in rows
    return rank(agg) if ranked else agg


def layout_table(rows: pd.DataFrame, by: str = "variant", references: bool = True,
                 ablation: AblationSpec | None = None, ranked: bool | None = None
                 ) -> tuple[list[str], list[list[Any]]]:
    """Header and rows of the thesis-layout table, one row per (``by``, transform) with seeds
    aggregated as mean ± std (order: :func:`aggregated`). ``rows``: one row per run, from
    :func:`fbench.report.tables.run_row` (plus ``by``)."""
    from fbench.report.tables import differing_settings, fmt_mean_std, settings_cell

    agg = aggregated(rows, by, ranked)
    specs = {d: _spec(d) for d in agg["detector"]}
    several_transforms = agg["transform"].nunique() > 1
    shown = differing_settings(agg)  # e.g. protocol or resampler, when rows differ in it
    ref_titles: list[str] = []
    if references:
        for spec in specs.values():
            for title in (spec.references if spec else {}):
                if title not in ref_titles:
                    ref_titles.append(title)
    family_refs = (ablation.references if (ablation and references) else {})

    header = ["model", *TRAIT_TITLES.values(), *(["transform"] if several_transforms else []),
              *(["settings"] if shown else []),
              "ACC %", "macro-F1 %", "Dice % (edited)", "params (M)", "seeds",
              *[f"ref: {t} (ACC / F1 / Dice / params)" for t in ref_titles], *family_refs]
    table: list[list[Any]] = []
    for _, r in agg.iterrows():
        spec = specs[r["detector"]]
        traits = spec.traits if spec else {}
        seeds = int(r["seeds"])
        collapsed = int(r.get("collapsed") or 0)
        # detector options name the row when one detector ran with several
        label = r[by] + (f" ({r['options']})" if r["options"] and
                         (agg[by] == r[by]).sum() > 1 else "")
        table.append([
            label, *[traits.get(k, "–") for k in TRAIT_TITLES],
            *([r["transform"]] if several_transforms else []),
            *([settings_cell(r, shown)] if shown else []),
            fmt_mean_std(r["accuracy"], r["accuracy_std"], seeds),
            fmt_mean_std(r["macro_f1"], r["macro_f1_std"], seeds),
            fmt_mean_std(r["dice"], r["dice_std"], seeds),
            _fmt(r["params_m"]),
            str(seeds) + _seed_notes(collapsed, int(r.get("not_converged") or 0)),
            *[_reference_cell(spec.references[t]) if spec and t in spec.references else "–"
              for t in ref_titles],
            *[_fmt(col.get(r[by])) for col in family_refs.values()],
        ])
    return header, table


def _seed_notes(collapsed: int, not_converged: int) -> str:
    notes = [f"{collapsed} collapsed"] * bool(collapsed) + \
        [f"{not_converged} not converged"] * bool(not_converged)
    return f" ({', '.join(notes)})" if notes else ""


def layout_markdown(rows: pd.DataFrame, command: str, by: str = "variant",
                    references: bool = True, ablation: AblationSpec | None = None,
                    ranked: bool | None = None) -> str:
    """The thesis-layout table as markdown, with how it was made at its top."""
    from fbench import __version__
    from fbench.markdown import to_markdown
    from fbench.report.tables import table_notes

    header, table = layout_table(rows, by, references, ablation, ranked)
    first_metric = header.index("ACC %")
    datasets = ", ".join(f"`{d}`" for d in dict.fromkeys(rows["dataset"]))
    lines = [
        f"<!-- generated by fbench {__version__}; regenerate with: {command} -->",
        "",
        f"Dataset {datasets}; eval split; every metric recomputed from each run's stored "
        "predictions; "
        + ("the last epoch's model" if (rows.get("checkpoint") == "last").all()
           else "model selected on the validation split")
        + "; several seeds as mean ± std. "
        f"Runs ({len(rows)}): "
        + ", ".join(f"`{r}`" for r in rows["run"]) + ".",
        "",
        to_markdown(header, table, [False] * first_metric
                    + [True] * (len(header) - first_metric)),
    ]
    if any(h.startswith("ref:") for h in header):
        lines.append("Columns starting with `ref:` are numbers measured elsewhere, on other data "
                     "and settings: references beside fbench's results, not comparable one to "
                     "one.\n")
    lines += [f"{note}\n" for note in table_notes(rows)]
    return "\n".join(lines)
