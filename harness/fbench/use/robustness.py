"""Robustness of stored runs: re-evaluate a run's eval split under perturbations.

A perturbation is any registered transform (the built-in ones are ``jpeg``, ``blur``,
``noise``, ``resize`` and ``crop`` from the ``perturb`` plugin): it is applied to the eval
images after they are decoded and resized, re-quantised to 8 bits as a saved image would be,
and then the run's own transform and checkpoint score them, exactly as in evaluation. A
perturbation that moves pixels may define ``map_masks`` and ``map_points`` so that forgery
masks (for Dice) and landmarks move with the image.

Every prediction is stored (``predictions.parquet``: one row per run, perturbation, level and
image), and the table and plot are computed from that file alone.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from fbench.errors import FbenchError
from fbench.metrics import PROB_COLUMNS, compute_metrics
from fbench.plugins.specs import LABELS

if TYPE_CHECKING:  # pragma: no cover
    from rich.progress import Progress
    from rich.table import Table

    from fbench.runs.store import Run

CLEAN = "none"
"""The perturbation name of the unperturbed baseline rows."""
TABLE_METRICS = ("macro_f1", "accuracy", *(f"f1_{LABELS[c]}" for c in LABELS), "binary_auc")
# Cache decoded eval images across levels when they fit in this many bytes.
_CACHE_BYTES = 1 << 30


@dataclass(frozen=True)
class Perturbation:
    """One ``--perturb`` argument: a transform name, the factory option its levels set, and
    the levels in the order given (the plot keeps that order: weakest first, usually)."""

    name: str
    option: str
    levels: tuple[Any, ...]

    def build(self, level: Any, seed: int) -> Any:
        """The transform module at ``level``, seeded when the factory takes a seed."""
        from fbench.plugins.registry import get_registry
        from fbench.plugins.specs import factory_options
        from fbench.train.config import check_options

        spec = get_registry().get("transform", self.name)
        options = {self.option: level}
        if "seed" in factory_options(spec.factory):
            options["seed"] = seed
        check_options("transform", self.name, spec.factory, options)
        return spec.factory(**options)


def parse_perturbation(text: str) -> Perturbation:
    """``NAME:V1,V2,...`` (the levels set the transform's first option, its level) or
    ``NAME:OPTION=V1,V2,...``. Values are TOML literals (``95``, ``0.5``)."""
    from fbench.plugins.registry import get_registry
    from fbench.plugins.specs import factory_options
    from fbench.train.config import parse_value

    name, sep, rest = text.partition(":")
    name = name.strip()
    example = "e.g. --perturb jpeg:95,75,50 or --perturb blur:sigma=1,2"
    if not sep or not name or not rest.strip():
        raise FbenchError(f"--perturb {text!r} is not NAME:LEVEL,LEVEL,...", example)
    spec = get_registry().get("transform", name)  # unknown names answer with close matches
    options = [k for k in factory_options(spec.factory) if k not in ("seed", "**")]
    option, eq, values = rest.partition("=")
    if not eq:
        option, values = "", rest
    option = option.strip().replace("-", "_")
    if not option:
        if not options:
            raise FbenchError(f"transform {name!r} takes no option to set a level with.",
                              "choose a perturbation from `fbench list transforms`.")
        option = options[0]
    elif option not in options and "**" not in factory_options(spec.factory):
        raise FbenchError(f"transform {name!r} takes no option {option!r}.",
                          f"its options are: {', '.join(options) or 'none'}.")
    levels = tuple(parse_value(v.strip()) for v in values.split(",") if v.strip())
    if not levels:
        raise FbenchError(f"--perturb {text!r} gives no levels.", example)
    if len(set(map(repr, levels))) != len(levels):
        raise FbenchError(f"--perturb {text!r} repeats a level.", "give each level once.")
    return Perturbation(name, option, levels)


class PerturbedCollate:
    """Collate samples into a uint8 :class:`fbench.Batch`, perturbed: the images go through
    ``module`` in [0, 1] and are re-quantised to 8 bits; masks and landmarks follow a module
    that moves pixels."""

    def __init__(self, module: Any) -> None:
        self.module = module

    def __call__(self, samples: list[dict[str, Any]]) -> Any:
        import torch

        from fbench.data.images import collate

        batch = collate(samples)
        if self.module is None:
            return batch
        x = batch.images.float().div_(255.0)
        with torch.no_grad():
            y = self.module(x)
        batch.images = (y.clamp(0, 1) * 255).round_().to(torch.uint8)
        if batch.masks is not None and hasattr(self.module, "map_masks"):
            batch.masks = self.module.map_masks(batch.masks)
        if batch.landmarks is not None and hasattr(self.module, "map_points"):
            batch.landmarks = self.module.map_points(batch.landmarks, tuple(x.shape[-2:]))
        return batch


def evaluate_run(run: Run | str | Path, perturbations: Sequence[Perturbation], *,
                 seed: int = 0, batch_size: int | None = None, device: str = "auto",
                 progress: Progress | None = None) -> pd.DataFrame:
    """Predictions of ``run`` on its eval split, clean and under every level of every
    perturbation: one row per (perturbation, level, image)."""
    from torch.utils.data import DataLoader

    from fbench.data.images import ManifestDataset, stored_resampler
    from fbench.runs.store import Run, load_run
    from fbench.train.engine import predict, resolve_device
    from fbench.use.model import load_trained
    from fbench.use.reproduce import resolve_stored

    r = run if isinstance(run, Run) else load_run(run)
    if r.predictions is None:
        raise FbenchError(f"run {r.path} has no predictions (state: "
                          f"{r.status.get('state', 'unknown')}).", "use a completed run.")
    # Only the eval rows are needed: the leakage audit (perceptual hashes of every image on a
    # built dataset) is the training run's business, and fbench reproduce checks the data.
    resolved = resolve_stored(r, audit=False)
    rows = resolved.manifest[resolved.manifest["split"] == "eval"]
    stored = r.predictions[r.predictions["split"] == "eval"]
    if sorted(rows["path"]) != sorted(stored["path"]):
        raise FbenchError(f"the eval split of {r.config['dataset']!r} is not the one run "
                          f"{r.id} was evaluated on ({len(rows)} images now, {len(stored)} "
                          "stored).", f"check the dataset with `fbench reproduce {r.path}`.")
    dev = resolve_device(device)
    model, transform, _ = load_trained(r)
    model, transform = model.to(dev), transform.to(dev)
    size = int(r.config["input_size"])
    ds = ManifestDataset(rows, size, with_masks=resolved.dataset.has_masks,
                         cache=len(rows) * size * size * 3 < _CACHE_BYTES,
                         resample=stored_resampler(r.config))
    bs = int(batch_size or r.config.get("batch_size") or 32)
    precision = r.config.get("precision", "fp32")

    frames = []
    levels: list[tuple[str, str, Any]] = [(CLEAN, "", None)]
    levels += [(p.name, p.option, lvl) for p in perturbations for lvl in p.levels]
    by_name = {p.name: p for p in perturbations}
    for name, option, level in levels:
        module = None if name == CLEAN else by_name[name].build(level, seed)
        if module is not None:
            module = module.eval()
        loader = DataLoader(ds, batch_size=bs, shuffle=False, collate_fn=PerturbedCollate(module))
        what = "clean" if name == CLEAN else f"{name} {option}={level}"
        result = predict(model, transform, loader, dev, precision, progress,
                         f"{r.config['detector']}: {what}")
        picked = rows.iloc[result["index"]]
        probs = result["probs"]
        frame = pd.DataFrame({
            "run": r.id, "detector": r.config["detector"], "perturbation": name,
            "option": option, "level": np.nan if level is None else float(level),
            "id": picked.index.to_numpy(), "path": picked["path"].to_numpy(),
            "label": picked["label"].to_numpy(), "pred": probs.argmax(1),
        })
        for c, col in enumerate(PROB_COLUMNS):
            frame[col] = probs[:, c]
        if "dice" in result:
            frame["dice"] = result["dice"]
            frame["iou"] = result["iou"]
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def robustness_table(predictions: pd.DataFrame) -> pd.DataFrame:
    """Metrics per run, perturbation and level, recomputed from stored predictions (clean
    rows first, then levels in the order they were evaluated)."""
    out = []
    keys = ["run", "detector", "perturbation", "option", "level"]
    for key, part in predictions.groupby(keys, sort=False, dropna=False):
        m = compute_metrics(part["label"].to_numpy(), part[list(PROB_COLUMNS)].to_numpy(),
                            part["pred"].to_numpy())
        row = dict(zip(keys, key, strict=True))
        row.update({k: m[k] for k in TABLE_METRICS})
        if "dice" in part.columns:
            edited = part[(part["label"] == 2) & part["dice"].notna()]
            row["dice_edited"] = float(edited["dice"].mean()) if len(edited) else None
        row["n"] = m["n"]
        out.append(row)
    return pd.DataFrame(out)


def _level_text(row: Any) -> str:
    if row["perturbation"] == CLEAN:
        return "clean"
    level = row["level"]
    text = f"{level:g}" if isinstance(level, float) else str(level)
    return f"{row['option']}={text}"


def _pct(value: Any) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) \
        else f"{100 * value:.2f}"


def markdown(table: pd.DataFrame, command: str) -> str:
    """The table in markdown, percent, with the command that regenerates it on top."""
    cols = [c for c in (*TABLE_METRICS, "dice_edited") if c in table.columns]
    several = table["run"].nunique() > 1
    head = (["run"] if several else []) + ["perturbation", "level"] + cols
    lines = [f"<!-- generated by: {command} -->", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, row in table.iterrows():
        cells = ([f"{row['detector']} ({row['run']})"] if several else []) + [
            "clean" if row["perturbation"] == CLEAN else row["perturbation"], _level_text(row)]
        cells += [_pct(row[c]) for c in cols]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


_SHORT = {"macro_f1": "macro-F1", "accuracy": "acc.", "f1_real": "F1 real",
          "f1_generated": "F1 gen.", "f1_edited": "F1 edit.", "binary_auc": "bin. AUC",
          "dice_edited": "Dice"}


def rich_table(table: pd.DataFrame, title: str) -> Table:
    """The table for a terminal, percent (accuracy is left to the files: 80 columns)."""
    from rich.table import Table

    cols = [c for c in (*TABLE_METRICS, "dice_edited") if c in table.columns
            and c != "accuracy"]
    several = table["run"].nunique() > 1
    t = Table(title=title, header_style="bold")
    if several:
        t.add_column("run")
    t.add_column("perturbation")
    t.add_column("level", justify="right")
    for c in cols:
        t.add_column(_SHORT.get(c, c), justify="right")
    previous: tuple[str, str] | None = None
    for _, row in table.iterrows():
        key = (row["run"], row["perturbation"])
        clean = row["perturbation"] == CLEAN
        cells = [f"{row['detector']} {row['run'][-6:]}"
                 if previous is None or row["run"] != previous[0] else ""] if several else []
        cells += ["clean" if clean else
                  (f"{row['perturbation']} {row['option']}" if key != previous else ""),
                  "–" if clean else _level_text(row).partition("=")[2]]
        t.add_row(*cells, *[_pct(row[c]) for c in cols],
                  end_section=clean and not several)
        previous = key
    return t


def plot_robustness(table: pd.DataFrame, output: str | Path, dpi: int = 100) -> Path:
    """Macro-F1 against level, one panel per perturbation, one line per run; the clean
    macro-F1 of each run as a dashed line of its colour. The x axis runs in the order the
    levels were given (inverted for decreasing levels such as JPEG quality)."""
    from fbench.figures import new_figure, save_figure

    perturbed = table[table["perturbation"] != CLEAN]
    names = list(dict.fromkeys(perturbed["perturbation"]))
    if not names:
        raise FbenchError("no perturbed levels to plot.", "give at least one --perturb.")
    runs = list(dict.fromkeys(table["run"]))
    detectors = [table.loc[table["run"] == r, "detector"].iloc[0] for r in runs]
    labels = detectors if len(set(detectors)) == len(detectors) else runs
    ncols = min(3, len(names))
    nrows = math.ceil(len(names) / ncols)
    fig = new_figure(4.0 * ncols, 3.5 * nrows, dpi)
    grid = fig.subplots(nrows, ncols, squeeze=False)
    axes = grid.ravel()
    for ax in axes[len(names):]:
        ax.set_axis_off()
    for ax, name in zip(axes, names, strict=False):
        part = perturbed[perturbed["perturbation"] == name]
        for i, (run, label) in enumerate(zip(runs, labels, strict=True)):
            colour = f"C{i % 10}"
            mine = part[part["run"] == run]
            ax.plot(mine["level"], mine["macro_f1"], marker="o", color=colour, label=label)
            clean = table[(table["run"] == run) & (table["perturbation"] == CLEAN)]
            if len(clean):
                ax.axhline(float(clean["macro_f1"].iloc[0]), color=colour, linestyle="--",
                           linewidth=1, alpha=0.7)
        levels = part["level"].drop_duplicates().to_numpy()
        if len(levels) > 1 and levels[0] > levels[-1]:
            ax.invert_xaxis()
        ax.set_xticks(levels)
        ax.set_xlabel(f"{name}: {part['option'].iloc[0]}")
        ax.set_ylabel("eval macro-F1")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.set_title(f"{name} (dashed: clean)", fontsize=10)
    axes[0].legend(fontsize=8)
    return save_figure(fig, output)


def robustness(runs: Sequence[Run | str | Path], perturbations: Sequence[Perturbation | str],
               out: str | Path, *, seed: int = 0, batch_size: int | None = None,
               device: str = "auto", command: str = "", progress: Progress | None = None
               ) -> dict[str, Any]:
    """Evaluate ``runs`` under ``perturbations`` and write into ``out``:
    ``predictions.parquet`` (every prediction), ``robustness.csv`` and ``robustness.md`` (the
    table, recomputed from the predictions), ``robustness.png`` (the plot) and
    ``robustness.json`` (what was run). Returns the paths and the table."""
    from fbench.files import atomic_path, write_json, write_parquet
    from fbench.runs.environment import describe_environment
    from fbench.runs.store import load_run, prepare_out_dir

    if not runs:
        raise FbenchError("no runs given.", "pass one or more run directories.")
    if not perturbations:
        raise FbenchError("no perturbation given.", "e.g. --perturb jpeg:95,75,50 "
                          "--perturb blur:1,2 (see `fbench list transforms`).")
    parsed = [p if isinstance(p, Perturbation) else parse_perturbation(p)
              for p in perturbations]
    names = [p.name for p in parsed]
    if len(set(names)) != len(names):
        raise FbenchError("a perturbation is given twice.",
                          "list all its levels in one --perturb NAME:L1,L2.")
    for p in parsed:  # every level is checked before any evaluation starts
        for level in p.levels:
            try:
                p.build(level, seed)
            except FbenchError as exc:  # said as the --perturb syntax the user typed
                raise FbenchError(exc.problem, f"give --perturb {p.name}:L1,L2,... levels of "
                                  "that type (`fbench list transforms` shows each option)."
                                  ) from None
    loaded = [load_run(r) if not hasattr(r, "config") else r for r in runs]
    ids = [r.id for r in loaded]
    if len(set(ids)) != len(ids):
        raise FbenchError("a run is given twice.", "name each run once.")
    out = prepare_out_dir(out)
    preds = pd.concat([evaluate_run(r, parsed, seed=seed, batch_size=batch_size, device=device,
                                    progress=progress) for r in loaded], ignore_index=True)
    write_parquet(out / "predictions.parquet", preds)
    table = robustness_table(pd.read_parquet(out / "predictions.parquet"))
    with atomic_path(out / "robustness.csv") as tmp:
        table.to_csv(tmp, index=False)
    with atomic_path(out / "robustness.md") as tmp:
        tmp.write_text(markdown(table, command or "fbench.use.robustness.robustness(...)"))
    png = plot_robustness(table, out / "robustness.png")
    record = {
        "command": command, "seed": seed,
        "runs": [{"run": r.id, "path": str(r.path), "detector": r.config["detector"]}
                 for r in loaded],
        "perturbations": [{"name": p.name, "option": p.option, "levels": list(p.levels)}
                          for p in parsed],
        "environment": describe_environment(),
    }
    # The clean rows must give the run's stored eval numbers; say so when they do not.
    record["clean_matches_stored"] = {}
    for r in loaded:
        clean = table[(table["run"] == r.id) & (table["perturbation"] == CLEAN)]
        stored = r.metrics("eval")["macro_f1"]
        record["clean_matches_stored"][r.id] = bool(
            abs(float(clean["macro_f1"].iloc[0]) - stored) < 1e-9)
    write_json(out / "robustness.json", json.loads(json.dumps(record, default=str)))
    return {"out": out, "table": table, "predictions": out / "predictions.parquet",
            "csv": out / "robustness.csv", "markdown": out / "robustness.md", "png": png,
            "record": record}
