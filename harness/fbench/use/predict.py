"""Scoring images with a stored run: ``fbench predict`` and ``fbench.load_run(p).predict(...)``.

The run's own selected checkpoint (``checkpoints/best.pt``, read with ``weights_only=True``),
transform and input size score each image; the binary forged-or-not decision uses the
threshold the run chose on its validation split (recomputed from its stored val predictions,
as every report does) unless one is given.

Inputs (:mod:`fbench.use.inputs`) are read with fbench's one reader and its truncation rule,
resized as in training, and scored by the engine's own evaluation loop
(:func:`fbench.train.engine.predict`: the same batch preparation, transform and autocast), so a
dataset image scores as it did in the run. Strangers' folders are safe to point at: files are
recognised by their signature, never by handing OpenCV a path; FIFOs, sockets and devices are
skipped unopened; an image's header is checked against a pixel limit before it is decoded; and
one bad file gets a row naming the reason while the rest are still scored.
"""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from fbench.errors import FbenchError
from fbench.metrics import PROB_COLUMNS
from fbench.plugins.specs import LABELS
from fbench.use.inputs import (
    STATUS_ERROR,
    STATUS_SCORED,
    STATUS_SKIPPED,
    as_items,
    collect_inputs,
    load_input,
)

if TYPE_CHECKING:  # pragma: no cover
    from rich.progress import Progress
    from rich.table import Table

    from fbench.runs.store import Run

INPUT_COLUMNS = ("path", "status", "error")
SMALL_FACTOR = 4
"""An image under 1/SMALL_FACTOR of the run's input size on a side is warned about."""


def val_threshold(run: Run) -> float:
    """The forged-score threshold the run chose on validation, recomputed from its stored val
    predictions (the same rule as :func:`fbench.metrics.metrics_from_predictions`)."""
    from fbench.metrics import val_threshold as chosen_on_val

    threshold = None if run.predictions is None else chosen_on_val(run.predictions)
    if threshold is None:
        raise FbenchError(f"run {run.path} has no stored validation predictions to take the "
                          "binary threshold from.", "give one with --threshold 0.5.")
    return threshold


def parse_threshold(value: str | float | None, run: Run) -> float:
    if value is None or (isinstance(value, str) and value.strip().lower() == "val"):
        return val_threshold(run)
    try:
        t = float(value)
    except (TypeError, ValueError):
        t = float("nan")
    if not 0.0 <= t <= 1.0:
        raise FbenchError(f"--threshold {value!r} is neither 'val' nor a number in [0, 1].",
                          "use --threshold val (the run's choice) or e.g. --threshold 0.5.")
    return t


_LOADED: dict[tuple[str, int, str], tuple[Any, Any]] = {}


def _load_model(run: Run, device: Any) -> tuple[Any, Any]:
    """The run's model and transform on ``device``, kept for the next call: building a
    detector and reading its checkpoint costs more than scoring a few images, and a notebook
    calls ``run.predict`` again and again. One entry; a rewritten checkpoint is reloaded."""
    from fbench.use.model import load_trained

    ckpt = run.checkpoint("best")
    key = (str(run.path.resolve()), ckpt.stat().st_mtime_ns if ckpt.is_file() else 0,
           str(device))
    if key not in _LOADED:
        _LOADED.clear()
        model, transform, _ = load_trained(run)
        _LOADED[key] = (model.to(device), transform.to(device))
    return _LOADED[key]


def _mask_name(i: int, name: str) -> str:
    stem = "array" if name.startswith("<array") else Path(name).stem
    return f"{i:06d}-{stem}.png"


def _write_mask(mask: np.ndarray, row: dict[str, Any], hw: tuple[int, int],
                masks_path: Path) -> None:
    """The predicted mask at the image's own size, probability x 255, as a PNG. Encoded in
    memory and written by Python (OpenCV is never handed a path: it crashes on names that are
    not UTF-8), without following a link or waiting on a FIFO that sits at the mask's name."""
    import cv2

    masks_path.mkdir(parents=True, exist_ok=True)
    target = masks_path / _mask_name(row["_i"], row["path"])
    full = cv2.resize(mask, (hw[1], hw[0]), interpolation=cv2.INTER_LINEAR)
    png = (np.clip(full, 0, 1) * 255).round().astype(np.uint8)
    ok, encoded = cv2.imencode(".png", png)
    flags = (os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0)
             | getattr(os, "O_NONBLOCK", 0))
    try:
        if not ok:
            raise OSError("PNG encoding failed")
        with os.fdopen(os.open(target, flags, 0o666), "wb") as fh:
            fh.write(encoded.tobytes())
    except OSError as exc:
        raise FbenchError(f"cannot write mask {target}: {exc.strerror or exc}.",
                          "check the masks directory is writable (--masks DIR).") from None
    row["mask_path"] = str(target)


class _Scorer:
    """Images gathered a batch at a time and scored through the engine's evaluation loop."""

    def __init__(self, run: Run, device: str, batch_size: int, masks_dir: Any,
                 progress: Progress | None, task: Any) -> None:
        from fbench.data.images import stored_resampler
        from fbench.train.engine import resolve_device

        self.device = resolve_device(device)
        self.model, self.transform = _load_model(run, self.device)
        self.size = int(run.config["input_size"])
        self.precision = run.config.get("precision", "fp32")
        self.resample = stored_resampler(run.config)
        self.masks_path = Path(masks_dir) if masks_dir is not None else None
        self.batch_size, self.progress, self.task = batch_size, progress, task
        self.pending: list[tuple[dict[str, Any], np.ndarray, tuple[int, int]]] = []
        self.seconds, self.n_scored = 0.0, 0

    def add(self, row: dict[str, Any], image: np.ndarray) -> None:
        from fbench.data.images import resize_square

        self.pending.append((row, resize_square(image, self.size, self.resample),
                             image.shape[:2]))
        if len(self.pending) >= self.batch_size:
            self.flush()

    def _on_output(self, batch: Any, out: Any) -> None:
        """Keep each image's predicted mask (the loop returns class probabilities only)."""
        if out.mask is None:
            return
        index, masks = batch.index.cpu().numpy(), out.mask.float().cpu().numpy()
        for j, m in zip(index, masks, strict=True):
            row, _, hw = self.pending[j]
            row["mask_area"] = float((m[0] >= 0.5).mean())
            if self.masks_path is not None:
                _write_mask(m[0], row, hw, self.masks_path)

    def flush(self) -> None:
        import torch
        from torch.utils.data import DataLoader

        from fbench.data.images import collate
        from fbench.train.engine import predict as engine_predict

        if not self.pending:
            return
        start = time.perf_counter()
        # a small in-memory dataset in the samples' layout the engine's collate stacks
        samples = [{"image": torch.from_numpy(img).permute(2, 0, 1).contiguous(), "label": 0,
                    "index": j} for j, (_, img, _) in enumerate(self.pending)]
        loader = DataLoader(samples, batch_size=len(samples), collate_fn=collate)
        result = engine_predict(self.model, self.transform, loader, self.device,
                                self.precision, on_output=self._on_output)
        for j, probs in zip(result["index"], result["probs"], strict=True):
            row = self.pending[j][0]
            row.update({"status": STATUS_SCORED, "error": ""})
            row.update({col: float(probs[c]) for c, col in enumerate(PROB_COLUMNS)})
        self.seconds += time.perf_counter() - start
        self.n_scored += len(self.pending)
        if self.progress is not None:
            self.progress.advance(self.task, len(self.pending))
        self.pending.clear()


def _check_run(r: Run, batch_size: int) -> None:
    from fbench.plugins.registry import get_registry

    if batch_size < 1:
        raise FbenchError(f"batch size {batch_size} must be at least 1.")
    spec = get_registry().get("detector", r.config["detector"])
    if spec.needs_landmarks:
        raise FbenchError(
            f"detector {spec.name!r} needs facial landmarks for every image, and predict "
            "has no landmark model to compute them for new files.",
            "score images that belong to a dataset with a landmark cache through a run "
            "(fbench run / fbench robustness) instead.")


def predict(run: Run | str | os.PathLike, inputs: Any, *, threshold: str | float | None = "val",
            batch_size: int = 32, device: str = "auto", masks_dir: str | os.PathLike | None = None,
            progress: Progress | None = None, max_pixels: int | None = None) -> pd.DataFrame:
    """Score images with a stored run; one row per image, in input order.

    ``inputs``: a path (file or folder) or array, or a sequence of them. ``threshold``:
    ``"val"`` (the run's choice) or a number in [0, 1]. ``masks_dir``: where detectors with a
    mask head write one PNG per image (probability x 255 at the image's own size); without it
    only the mask's forged area is reported. ``max_pixels``: an image whose header claims more
    pixels is not decoded [default: 64 MP, the limit of ``fbench run``].

    Columns: ``path`` (names that are not UTF-8 with ``\\xNN`` escapes), ``status``
    (``scored`` | ``error`` | ``skipped``: a FIFO, socket or device, never opened), ``error``
    (the reason), ``pred`` (0 real, 1 generated, 2 edited), ``pred_name``, one ``prob_*``
    column per class, ``forged_score`` (P(generated) + P(edited)), ``forged`` (score >=
    threshold), ``threshold``; with a mask head ``mask_area`` (share of pixels >= 0.5) and,
    given ``masks_dir``, ``mask_path``. ``df.attrs`` holds ``skipped`` (non-image files),
    ``threshold``, ``run``, ``images_per_s`` and ``small`` (images under 1/4 of the run's
    input size on a side, also warned about: their scores say little).
    """
    from fbench.data.preflight import MAX_PIXELS
    from fbench.runs.store import Run, load_run

    r = run if isinstance(run, Run) else load_run(run)
    _check_run(r, batch_size)
    limit = MAX_PIXELS if max_pixels is None else int(max_pixels)
    if limit < 1:
        raise FbenchError(f"max_pixels {max_pixels} must be at least 1.")
    t = parse_threshold(threshold, r)
    found = collect_inputs(as_items(inputs))
    task = (progress.add_task("predict", total=found.n_images, info="")
            if progress is not None else None)
    scorer = _Scorer(r, device, batch_size, masks_dir, progress, task)
    rows: list[dict[str, Any]] = []
    small: list[tuple[str, tuple[int, int]]] = []
    start = time.perf_counter()
    for i, entry in enumerate(found.entries):
        row: dict[str, Any] = {"path": entry.name, "_i": i}
        rows.append(row)
        if entry.status:  # decided while listing: an error, or a special file never opened
            row.update({"status": entry.status, "error": entry.reason})
            continue
        try:
            image = load_input(entry.source, limit)
        except FbenchError as exc:  # one bad file is one row, never the end of the batch
            row.update({"status": STATUS_ERROR, "error": exc.problem})
            if progress is not None:
                progress.advance(task)
            continue
        if min(image.shape[:2]) * SMALL_FACTOR < scorer.size:
            small.append((entry.name, image.shape[:2]))
        scorer.add(row, image)
    scorer.flush()
    _warn_small(small, scorer.size)
    total_seconds = time.perf_counter() - start
    if progress is not None and task is not None:
        progress.remove_task(task)

    df = _frame(rows, t)
    n = scorer.n_scored
    df.attrs.update({
        "run": r.id, "threshold": t, "skipped": list(found.skipped),
        "images_per_s": n / total_seconds if n and total_seconds > 0 else None,
        "model_images_per_s": n / scorer.seconds if n and scorer.seconds else None,
        "small": [name for name, _ in small],
    })
    return df


def _warn_small(small: list[tuple[str, tuple[int, int]]], size: int) -> None:
    """One warning for the images far smaller than the run's input: upscaled many times,
    they hold almost nothing the model learned from, yet get a confident-looking score."""
    if not small:
        return
    name, (h, w) = small[0]
    others = f" and {len(small) - 1} more" if len(small) > 1 else ""
    warnings.warn(f"{name} ({w}x{h} px){others}: under 1/{SMALL_FACTOR} of the run's {size} px "
                  f"input on a side, upscaled {size / min(h, w):.0f}x before scoring; such "
                  "scores say little (df.attrs['small'] lists them).", stacklevel=3)


def _frame(rows: list[dict[str, Any]], threshold: float) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=list(INPUT_COLUMNS) if not rows else None)
    for col in (*INPUT_COLUMNS, *PROB_COLUMNS):
        if col not in df.columns:
            df[col] = np.nan if col.startswith("prob_") else ""
    df = df.drop(columns=["_i"], errors="ignore")
    probs = df[list(PROB_COLUMNS)].to_numpy(dtype=np.float64)
    scored = df["status"] == STATUS_SCORED
    pred = pd.array([pd.NA] * len(df), dtype="Int64")
    if scored.any():
        pred[scored.to_numpy()] = probs[scored.to_numpy()].argmax(1)
    df["pred"] = pred
    df["pred_name"] = [LABELS[int(p)] if p is not pd.NA else "" for p in df["pred"]]
    df["forged_score"] = np.where(scored, 1.0 - probs[:, 0], np.nan)
    forged = pd.array([pd.NA] * len(df), dtype="boolean")
    if scored.any():
        forged[scored.to_numpy()] = df.loc[scored, "forged_score"].to_numpy() >= threshold
    df["forged"] = forged
    df["threshold"] = threshold
    extra = [c for c in ("mask_area", "mask_path") if c in df.columns]
    if "mask_path" in df.columns:
        df["mask_path"] = df["mask_path"].fillna("")
    columns = [*INPUT_COLUMNS, "pred", "pred_name", *PROB_COLUMNS, "forged_score", "forged",
               "threshold", *extra]
    return df[columns].reset_index(drop=True)


def run_directory_of(path: str | os.PathLike, run: Run | None = None) -> Path | None:
    """The run directory that ``path`` (symbolic links resolved) lies in or is: ``run``'s own,
    or any directory holding both ``config.json`` and ``status.json``; None when there is
    none."""
    target = Path(path).resolve()
    if run is not None:
        own = run.path.resolve()
        if target == own or own in target.parents:
            return own
    for folder in (target, *target.parents):
        # os.path.isfile: an unreadable folder on the way up is no run, not a traceback
        if os.path.isfile(folder / "config.json") and os.path.isfile(folder / "status.json"):
            return folder
    return None


def check_output(path: str | os.PathLike, run: Run | None = None, *, force: bool = False,
                 masks_dir: str | os.PathLike | None = None) -> Path:
    """Refuse, before anything is scored, an output that would destroy something: a path in
    a run directory (its stored predictions are results), an existing directory, or an
    existing file unless ``force``; the same for the masks directory (inside a run). Returns
    the output path."""
    path = Path(path)
    if path.suffix.lower() not in (".csv", ".parquet"):
        raise FbenchError(f"cannot write {path}: unknown format {path.suffix or '(no suffix)'}.",
                          "name the output FILE.csv or FILE.parquet.")
    for what, where in (("output", path), ("masks directory", masks_dir)):
        inside = None if where is None else run_directory_of(where, run)
        if inside is not None:
            raise FbenchError(f"refusing to write the {what} {where} inside run directory "
                              f"{inside}: it would overwrite what the run stored.",
                              f"write it outside the run, e.g. -o predictions-{inside.name}.csv.")
    if path.is_dir():
        raise FbenchError(f"the output {path} is a directory.",
                          "give a file name, e.g. -o predictions.csv.")
    if os.path.lexists(path) and not force:
        raise FbenchError(f"the output {path} already exists.",
                          "pass --force to overwrite it, or choose another -o FILE.")
    return path


def write_predictions(df: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write the rows as CSV or Parquet (by suffix), atomically (a FIFO or link at ``path``
    is replaced, never written through)."""
    from fbench.files import atomic_path, write_parquet

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        write_parquet(path, df)
    elif suffix == ".csv":
        with atomic_path(path) as tmp:
            df.to_csv(tmp, index=False)
    else:
        raise FbenchError(f"cannot write {path}: unknown format {suffix or '(no suffix)'}.",
                          "name the output FILE.csv or FILE.parquet.")
    return path


def summary_table(df: pd.DataFrame) -> Table:
    """Counts per predicted class, the binary decision, bad and skipped files."""
    from rich.table import Table

    scored = df[df["status"] == STATUS_SCORED]
    n = max(len(scored), 1)
    table = Table(title=f"predictions of run {df.attrs.get('run', '?')}", header_style="bold")
    table.add_column("predicted")
    table.add_column("images", justify="right")
    table.add_column("share", justify="right")
    for c, name in LABELS.items():
        k = int((scored["pred"] == c).sum())
        table.add_row(f"{name} ({c})", str(k), f"{100 * k / n:.1f}%")
    k = int(scored["forged"].sum()) if len(scored) else 0
    table.add_row(f"forged (score >= {df.attrs.get('threshold', float('nan')):.4f})", str(k),
                  f"{100 * k / n:.1f}%", end_section=True)
    table.add_row("scored", str(len(scored)), "")
    table.add_row("bad files (named in the output)", str(int((df["status"] == STATUS_ERROR)
                                                            .sum())), "")
    table.add_row("skipped (not images)", str(len(df.attrs.get("skipped", []))), "")
    table.add_row("skipped (FIFOs, sockets, devices)",
                  str(int((df["status"] == STATUS_SKIPPED).sum())), "")
    return table
