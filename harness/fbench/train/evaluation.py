"""Evaluation: a model's class probabilities (and per-image Dice/IoU for mask heads) over a
loader, gathered across ranks so each image counts once, and as a predictions table with the
manifest's columns. The one inference loop: runs, ``fbench predict`` and robustness use it."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from fbench.metrics import PROB_COLUMNS
from fbench.metrics import segmentation_scores as seg_scores
from fbench.plugins.detector import Detector
from fbench.train.distributed import DistContext, gather_concat
from fbench.train.runtime import autocast, memory_format_of, prepare_batch

if TYPE_CHECKING:  # pragma: no cover
    from rich.progress import Progress

    from fbench.plugins.batch import Batch, DetectorOutput
    from fbench.train.loaders import Loaders
    from fbench.train.resolve import ResolvedRun


@torch.no_grad()
def predict(model: Detector, transform: torch.nn.Module, loader: DataLoader,
            device: torch.device, precision: str = "fp32",
            progress: Progress | None = None, description: str = "predict",
            ctx: DistContext | None = None,
            on_output: Callable[[Batch, DetectorOutput], None] | None = None) -> dict[str, Any]:
    """Class probabilities (and per-image Dice/IoU where the model predicts masks) for every
    sample of a loader, in loader order. ``on_output(batch, output)`` sees each batch's whole
    output (``fbench predict`` saves the predicted masks from it): the one inference loop."""
    model.eval()
    memory_format = memory_format_of(model)  # batches laid out as the weights are
    probs, index, dice, iou = [], [], [], []
    task = progress.add_task(description, total=len(loader), info="") if progress else None
    for batch in loader:
        batch = prepare_batch(batch, transform, device, memory_format)
        with autocast(device, precision):
            out = model(batch)
        if on_output is not None:
            on_output(batch, out)
        probs.append(torch.softmax(out.logits.float(), dim=1).cpu())
        index.append(batch.index.cpu())
        if out.mask is not None and batch.masks is not None:
            pm = out.mask.float().cpu().numpy()
            tm = batch.masks.cpu().numpy()
            known = batch.has_mask.cpu().numpy()
            for j in range(len(pm)):
                d, i = seg_scores(pm[j], tm[j]) if known[j] else (math.nan, math.nan)
                dice.append(d)
                iou.append(i)
        if progress:
            progress.advance(task)
    if progress:
        progress.remove_task(task)
    out_dict: dict[str, Any] = {
        "probs": (torch.cat(probs).numpy().astype(np.float64) if probs
                  else np.zeros((0, 3), np.float64)),
        "index": torch.cat(index).numpy() if index else np.zeros(0, np.int64)}
    if dice:
        out_dict["dice"] = np.array(dice)
        out_dict["iou"] = np.array(iou)
    if ctx is not None and ctx.enabled:
        out_dict = _merge_shards(gather_concat(out_dict, ctx))
    return out_dict


def _merge_shards(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """The ranks' predictions as one, in dataset order (each index appears once)."""
    keys = set().union(*parts)
    merged = {k: np.concatenate([p[k] for p in parts if k in p]) for k in keys}
    order = np.argsort(merged["index"], kind="stable")
    if len(np.unique(merged["index"])) != len(merged["index"]):
        raise RuntimeError("distributed evaluation scored an image twice (a sharding bug)")
    return {k: v[order] for k, v in merged.items()}


def predictions_frame(r: ResolvedRun, loader: DataLoader, result: dict[str, Any],
                       split: str) -> pd.DataFrame:
    rows = r.manifest.loc[loader.dataset.row_ids[result["index"]]]
    probs = result["probs"]
    df = pd.DataFrame({
        "id": rows.index.to_numpy(),
        "path": rows["path"].to_numpy(),
        "source": rows["source"].to_numpy(),
        "group": rows["group"].to_numpy(),
        "split": split,
        "label": rows["label"].to_numpy(),
        "pred": probs.argmax(1),
    })
    for c, col in enumerate(PROB_COLUMNS):
        df[col] = probs[:, c]
    if "dice" in result:
        df["dice"] = result["dice"]
        df["iou"] = result["iou"]
    return df


def evaluate_splits(r: ResolvedRun, model: Detector, transform: torch.nn.Module, loaders: Loaders,
              device: torch.device, bar: Progress, ctx: DistContext) -> pd.DataFrame:
    """The model's predictions on the val and eval splits, one frame (rank 0's is whole)."""
    precision = r.config.precision
    val = predict(model, transform, loaders.val, device, precision, bar, "validate", ctx)
    ev = predict(model, transform, loaders.eval, device, precision, bar, "evaluate", ctx)
    return pd.concat([predictions_frame(r, loaders.val, val, "val"),
                      predictions_frame(r, loaders.eval, ev, "eval")], ignore_index=True)
