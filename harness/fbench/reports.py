"""Terminal tables of runs (rich), built from stored files only."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from fbench.specs import LABELS


def _fmt(value: Any, pct: bool = True) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{100 * value:.2f}" if pct else f"{value:.4g}"
    return str(value)


def results_table(metrics: dict[str, Any], title: str) -> Table:
    """Headline and secondary metrics of one split, in percent."""
    table = Table(title=title, show_header=True, header_style="bold")
    table.add_column("metric")
    table.add_column("value (%)", justify="right")
    rows = [("macro-F1 (headline)", metrics["macro_f1"]), ("accuracy", metrics["accuracy"])]
    rows += [(f"F1 {LABELS[c]} ({c})", metrics[f"f1_{LABELS[c]}"]) for c in LABELS]
    rows += [("AUC one-vs-rest", metrics.get("auc_ovr")),
             ("binary AUC (real vs forged)", metrics.get("binary_auc")),
             ("binary AP", metrics.get("binary_ap")),
             ("binary EER", metrics.get("binary_eer")),
             ("binary F1 @ val threshold", metrics.get("binary_f1"))]
    if metrics.get("dice_edited") is not None:
        rows += [("Dice (edited, per image)", metrics["dice_edited"]),
                 ("IoU (edited, per image)", metrics["iou_edited"])]
    for name, value in rows:
        table.add_row(name, _fmt(value))
    table.add_row("images", str(metrics["n"]))
    if metrics.get("binary_threshold") is not None:
        table.add_row("binary threshold (chosen on val)", f"{metrics['binary_threshold']:.4f}")
    if metrics.get("collapsed"):
        table.add_row("[bold yellow]collapsed to majority class[/]", "yes")
    return table


def confusion_table(matrix: list[list[int]]) -> Table:
    table = Table(title="confusion matrix (rows: true, columns: predicted)")
    table.add_column("")
    for c in LABELS:
        table.add_column(LABELS[c], justify="right")
    for c, row in zip(LABELS, matrix, strict=False):
        table.add_row(LABELS[c], *map(str, row))
    return table
