"""Scoring images with a stored run: ``fbench predict`` and ``fbench.load_run(p).predict(...)``.

The run's own selected checkpoint (``checkpoints/best.pt``, read with ``weights_only=True``),
transform and input size score each image; the binary forged-or-not decision uses the
threshold the run chose on its validation split (recomputed from its stored val predictions,
as every report does) unless one is given.

Inputs are files, folders (walked recursively) and arrays. A file is an image when OpenCV
recognises its content, whatever its name; a file that is neither recognised nor named like an
image is skipped and counted; one that should be an image and cannot be decoded (zero bytes,
truncated, corrupt, unreadable) gets a row naming the reason, and the rest are still scored.
Decoding goes the way training went (``IMREAD_UNCHANGED``, then gray, RGBA and 16-bit to
8-bit RGB, then the same square resize), so a dataset image scores as it did in the run.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from fbench.errors import FbenchError
from fbench.metrics import PROB_COLUMNS
from fbench.plugins.specs import LABELS

if TYPE_CHECKING:  # pragma: no cover
    from rich.progress import Progress
    from rich.table import Table

    from fbench.runs.store import Run

IMAGE_EXTENSIONS = frozenset({
    ".png", ".jpg", ".jpeg", ".jpe", ".jp2", ".bmp", ".dib", ".tif", ".tiff", ".webp",
    ".pbm", ".pgm", ".ppm", ".pnm", ".pxm", ".sr", ".ras", ".exr", ".hdr", ".pic", ".gif",
    ".avif",
})
"""Names that promise an image: such a file that cannot be decoded is reported as bad, not
skipped silently. Content decides everything else."""

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"
STATUS_SCORED = "scored"
STATUS_ERROR = "error"
INPUT_COLUMNS = ("path", "status", "error")


@dataclass
class Inputs:
    """What :func:`collect_inputs` found, in input order: ``entries`` are ``(name, source,
    reason)``, with ``source`` a path or an array to decode, or ``None`` and a ``reason`` for
    a file that is bad before any decoding; ``skipped`` are files that are not images."""

    entries: list[tuple[str, str | np.ndarray | None, str]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def add_image(self, name: str, source: str | np.ndarray) -> None:
        self.entries.append((name, source, ""))

    def add_bad(self, name: str, reason: str) -> None:
        self.entries.append((name, None, reason))

    @property
    def n_images(self) -> int:
        return sum(source is not None for _, source, _ in self.entries)


def _looks_like_image(path: str) -> bool:
    return os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS


def _classify_file(path: str, inputs: Inputs) -> None:
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as fh:
            fh.read(1)
    except OSError as exc:
        inputs.add_bad(path, f"cannot be read: {exc.strerror or exc}")
        return
    import cv2

    if size > 0 and cv2.haveImageReader(path):  # OpenCV knows the signature: content decides
        inputs.add_image(path, path)
    elif _looks_like_image(path):
        inputs.add_bad(path, "zero bytes" if size == 0 else
                       "not an image OpenCV can decode (its content does not match its name)")
    else:
        inputs.skipped.append(path)


def collect_inputs(items: Iterable[str | os.PathLike | np.ndarray]) -> Inputs:
    """Expand files, folders (recursively, in sorted order) and arrays into :class:`Inputs`."""
    inputs = Inputs()
    n_arrays = 0
    for item in items:
        if not isinstance(item, (str, os.PathLike)):
            arr = np.asarray(item)
            # a stack [N, H, W, C] is N images
            for a in (arr if arr.ndim == 4 else [arr]):
                inputs.add_image(f"<array {n_arrays}>", a)
                n_arrays += 1
            continue
        path = os.fspath(item)
        if os.path.isdir(path):
            for root, dirs, files in os.walk(path):
                dirs.sort()
                for name in sorted(files):
                    _classify_file(os.path.join(root, name), inputs)
        elif os.path.exists(path):
            _classify_file(path, inputs)
        else:
            inputs.add_bad(path, "does not exist")
    return inputs


@contextlib.contextmanager
def _quiet_opencv() -> Iterator[None]:
    """OpenCV prints a warning per broken file; the reason goes into the output instead."""
    import cv2

    if not hasattr(cv2, "setLogLevel"):  # pragma: no cover - older OpenCV builds
        yield
        return
    level = cv2.getLogLevel()
    cv2.setLogLevel(0)  # 0 is LOG_LEVEL_SILENT
    try:
        yield
    finally:
        cv2.setLogLevel(level)


def _truncation(data: bytes) -> str | None:
    """Why a PNG or JPEG file stops early, judged by its end marker (a decoder may return a
    half-grey image from a truncated file instead of failing)."""
    if data.startswith(_PNG_MAGIC) and b"IEND" not in data[-64:]:
        return "truncated (the PNG ends before its IEND chunk)"
    # Entropy-coded JPEG data escapes 0xFF, so FF D9 near the end is the real end marker;
    # some cameras append data after it, hence a window rather than the last two bytes.
    if data.startswith(_JPEG_MAGIC) and b"\xff\xd9" not in data[-4096:]:
        return "truncated (the JPEG ends before its end-of-image marker)"
    return None


def decode_file(path: str) -> np.ndarray:
    """Decode an image file as uint8 RGB ``[H, W, 3]``; raises :class:`FbenchError` whose
    ``problem`` is the reason when it cannot be used."""
    import cv2

    from fbench.data.images import to_uint8_rgb

    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise FbenchError(f"cannot be read: {exc.strerror or exc}") from None
    if not data:
        raise FbenchError("zero bytes")
    with _quiet_opencv():
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    truncated = _truncation(data)
    if truncated:
        raise FbenchError(truncated)
    if img is None:
        raise FbenchError("corrupt (OpenCV recognises the format but cannot decode it)")
    try:
        return to_uint8_rgb(img, path)
    except FbenchError as exc:
        raise FbenchError(exc.problem.removeprefix(f"{path}: ")) from None


def array_to_rgb(arr: np.ndarray) -> np.ndarray:
    """An array image as uint8 RGB. Arrays are taken as RGB(A) (numpy, PIL, matplotlib
    convention), ``[H, W]``, ``[H, W, 1|3|4]``, uint8, uint16 or float in [0, 1]."""
    from fbench.data.images import to_uint8_rgb

    a = np.asarray(arr)
    if a.dtype == bool:
        a = a.astype(np.uint8) * 255
    if a.ndim == 3 and a.shape[2] in (3, 4):
        # to_uint8_rgb speaks OpenCV's BGR(A); flip the colour channels, keep alpha last.
        a = np.concatenate([a[:, :, 2::-1], a[:, :, 3:]], axis=2)
    if a.size == 0:
        raise FbenchError(f"empty array of shape {a.shape}")
    try:
        return to_uint8_rgb(np.ascontiguousarray(a), "array")
    except FbenchError as exc:
        raise FbenchError(exc.problem.removeprefix("array: ")) from None


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


def predict(run: Run | str | os.PathLike, inputs: Any, *, threshold: str | float | None = "val",
            batch_size: int = 32, device: str = "auto", masks_dir: str | os.PathLike | None = None,
            progress: Progress | None = None) -> pd.DataFrame:
    """Score images with a stored run; one row per image, in input order.

    ``inputs``: a path (file or folder) or array, or a sequence of them. ``threshold``:
    ``"val"`` (the run's choice) or a number in [0, 1]. ``masks_dir``: where detectors with a
    mask head write one PNG per image (probability x 255 at the image's own size); without it
    only the mask's forged area is reported.

    Columns: ``path``, ``status`` (``scored`` | ``error``), ``error`` (the reason), ``pred``
    (0 real, 1 generated, 2 edited), ``pred_name``, one ``prob_*`` column per class,
    ``forged_score`` (P(generated) + P(edited)), ``forged`` (score >= threshold),
    ``threshold``; with a mask head ``mask_area`` (share of pixels >= 0.5) and, given
    ``masks_dir``, ``mask_path``. ``df.attrs`` holds ``skipped`` (non-image files),
    ``threshold``, ``run`` and ``images_per_s``.
    """
    import cv2
    import torch

    from fbench.data.images import resize_square, stored_resampler
    from fbench.plugins.batch import Batch
    from fbench.plugins.registry import get_registry
    from fbench.runs.store import Run, load_run
    from fbench.train.engine import resolve_device

    r = run if isinstance(run, Run) else load_run(run)
    if batch_size < 1:
        raise FbenchError(f"batch size {batch_size} must be at least 1.")
    t = parse_threshold(threshold, r)
    spec = get_registry().get("detector", r.config["detector"])
    if spec.needs_landmarks:
        raise FbenchError(
            f"detector {spec.name!r} needs facial landmarks for every image, and predict "
            "has no landmark model to compute them for new files.",
            "score images that belong to a dataset with a landmark cache through a run "
            "(fbench run / fbench robustness) instead.")
    if isinstance(inputs, (str, os.PathLike, np.ndarray)) and not (
            isinstance(inputs, np.ndarray) and inputs.ndim == 4):
        inputs = [inputs]
    found = collect_inputs(inputs if isinstance(inputs, Sequence | np.ndarray)
                           else list(inputs))
    dev = resolve_device(device)
    model, transform = _load_model(r, dev)
    size = int(r.config["input_size"])
    precision = r.config.get("precision", "fp32")
    resample = stored_resampler(r.config)
    masks_path = Path(masks_dir) if masks_dir is not None else None

    rows: list[dict[str, Any]] = []
    task = (progress.add_task("predict", total=found.n_images, info="")
            if progress is not None else None)
    pending: list[tuple[dict[str, Any], np.ndarray, tuple[int, int]]] = []
    scored_seconds, n_scored = 0.0, 0

    def flush() -> None:
        nonlocal scored_seconds, n_scored
        if not pending:
            return
        start = time.perf_counter()
        x = torch.from_numpy(np.stack([p[1] for p in pending])).permute(0, 3, 1, 2)
        rgb = x.to(dev).float().div_(255.0)
        with torch.inference_mode():
            autocast = (torch.autocast(device_type=dev.type, dtype=torch.bfloat16)
                        if precision == "bf16" else contextlib.nullcontext())
            with autocast:
                out = model(Batch(images=transform(rgb), rgb=rgb))
            probs = torch.softmax(out.logits.float(), dim=1).cpu().numpy().astype(np.float64)
            masks = out.mask.float().cpu().numpy() if out.mask is not None else None
        for j, (row, _, hw) in enumerate(pending):
            row.update({"status": STATUS_SCORED, "error": ""})
            row.update({col: float(probs[j, c]) for c, col in enumerate(PROB_COLUMNS)})
            if masks is not None:
                m = masks[j, 0]
                row["mask_area"] = float((m >= 0.5).mean())
                if masks_path is not None:
                    masks_path.mkdir(parents=True, exist_ok=True)
                    target = masks_path / _mask_name(row["_i"], row["path"])
                    full = cv2.resize(m, (hw[1], hw[0]), interpolation=cv2.INTER_LINEAR)
                    png = (np.clip(full, 0, 1) * 255).round().astype(np.uint8)
                    if not cv2.imwrite(str(target), png):
                        raise FbenchError(f"cannot write mask {target}.",
                                          "check the masks directory is writable.")
                    row["mask_path"] = str(target)
        scored_seconds += time.perf_counter() - start
        n_scored += len(pending)
        if progress is not None:
            progress.advance(task, len(pending))
        pending.clear()

    decode_start = time.perf_counter()
    for i, (name, source, reason) in enumerate(found.entries):
        row: dict[str, Any] = {"path": name, "_i": i}
        rows.append(row)
        if source is None:
            row.update({"status": STATUS_ERROR, "error": reason})
            continue
        try:
            rgb_img = array_to_rgb(source) if isinstance(source, np.ndarray) else \
                decode_file(source)
        except FbenchError as exc:
            row.update({"status": STATUS_ERROR, "error": exc.problem})
            if progress is not None:
                progress.advance(task)
            continue
        pending.append((row, resize_square(rgb_img, size, resample), rgb_img.shape[:2]))
        if len(pending) >= batch_size:
            flush()
    flush()
    total_seconds = time.perf_counter() - decode_start
    if progress is not None and task is not None:
        progress.remove_task(task)

    df = _frame(rows, t)
    df.attrs.update({
        "run": r.id, "threshold": t, "skipped": list(found.skipped),
        "images_per_s": n_scored / total_seconds if n_scored and total_seconds > 0 else None,
        "model_images_per_s": n_scored / scored_seconds if n_scored and scored_seconds else None,
    })
    return df


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


def write_predictions(df: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write the rows as CSV or Parquet (by suffix), atomically."""
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
    return table
