"""FFHQ "Crop & Seg" as the thesis did it: mediapipe selfie segmentation (model 0) finds the
person, the image is cropped to the person's bounding box, and optionally the background
(segmentation score <= threshold) is blanked to gray (192, 192, 192). The thesis compared
both; segmentation as a feature did not help, cropping did."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fbench import FbenchError
from fbench_thesis.images import list_images, write_image_atomically
from fbench_thesis.journal import Journal
from fbench_thesis.progress import progress_bar

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

GRAY = (192, 192, 192)
INDEX = "index.parquet"
REPORT = "report.json"

Segmenter = Callable[["np.ndarray"], "np.ndarray"]
"""``segmenter(rgb uint8 [H, W, 3]) -> float [H, W]`` person score in [0, 1]."""


class SelfieSegmenter:
    """mediapipe's selfie segmentation, model 0 (the general 256x256 model the thesis used);
    its weights ship inside the mediapipe 0.10.21 wheel, so nothing is downloaded."""

    def __init__(self, model_selection: int = 0) -> None:
        import mediapipe as mp

        self._seg = mp.solutions.selfie_segmentation.SelfieSegmentation(
            model_selection=model_selection)

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        return self._seg.process(rgb).segmentation_mask

    def close(self) -> None:
        self._seg.close()


def crop_person(bgr: np.ndarray, score: np.ndarray, threshold: float, blank: bool,
                margin: float = 0.0) -> tuple[np.ndarray, tuple[int, int, int, int]] | None:
    """Crop ``bgr`` to the box of pixels whose person score exceeds ``threshold`` (grown by
    ``margin`` times the box size on each side); blank the rest to gray first when ``blank``.
    Returns ``(crop, (x, y, w, h))``, or None when no pixel is a person."""
    import numpy as np

    person = score > threshold
    ys, xs = np.nonzero(person)
    if len(ys) == 0:
        return None
    x0, x1, y0, y1 = int(xs.min()), int(xs.max()) + 1, int(ys.min()), int(ys.max()) + 1
    if margin > 0:
        dx, dy = round(margin * (x1 - x0)), round(margin * (y1 - y0))
        h, w = person.shape
        x0, x1, y0, y1 = max(0, x0 - dx), min(w, x1 + dx), max(0, y0 - dy), min(h, y1 + dy)
    image = bgr.copy() if blank else bgr
    if blank:
        image[~person] = GRAY
    return np.ascontiguousarray(image[y0:y1, x0:x1]), (x0, y0, x1 - x0, y1 - y0)


def _checked_files(src: Path, out: Path, threshold: float, margin: float, limit: int | None,
                   seed: int) -> list[Path]:
    """The FFHQ images to crop, after every argument is checked: one clear line per mistake,
    before any work starts."""
    import numpy as np

    if not src.is_dir():
        raise FbenchError(f"FFHQ directory {src} does not exist.",
                          "point at the folder holding the FFHQ PNGs (e.g. images1024x1024).")
    if not 0.0 <= threshold < 1.0:
        raise FbenchError(f"--threshold {threshold} must lie in [0, 1).")
    if margin < 0:
        raise FbenchError(f"--margin {margin} must not be negative.")
    files = list_images(src)
    if not files:
        raise FbenchError(f"{src} holds no images (.png, .jpg, ...).",
                          "point at the folder holding the FFHQ PNGs.")
    stems: dict[str, Path] = {}
    for f in files:
        if f.stem in stems:
            raise FbenchError(f"two FFHQ images share the name {f.stem!r}: {stems[f.stem]} and "
                              f"{f}; outputs are named by it.", "remove one of them.")
        stems[f.stem] = f
    if limit is not None:
        if limit < 1:
            raise FbenchError(f"--limit {limit} must be at least 1.")
        if limit < len(files):
            pick = np.random.default_rng(seed).choice(len(files), limit, replace=False)
            files = [files[i] for i in sorted(pick)]
    if out.resolve() == src.resolve():
        raise FbenchError("--out is the FFHQ folder itself.", "give a separate directory.")
    return files


def _crop_one(f: Path, src: Path, out: Path, segmenter: Segmenter, journal: Journal,
              threshold: float, blank_background: bool, margin: float) -> None:
    """Crop one image to its person and record the outcome in the journal."""
    import cv2

    from fbench import UnreadableImage, read_image

    try:
        rgb = read_image(f)  # fbench's one reader and truncation rule, as training reads
    except UnreadableImage as exc:
        raise FbenchError(f"FFHQ {exc.problem}",
                          "replace or remove it, then re-run (finished images are kept).") from None
    score = segmenter(rgb)
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    result = crop_person(bgr, score, threshold, blank_background, margin)
    rel = str(f.relative_to(src))
    if result is None:
        journal.record(f.stem, status="no_person", source_image=rel)
        return
    crop, (x, y, w, h) = result
    name = f"{f.stem}.png"
    write_image_atomically(out / name, crop)
    journal.record(f.stem, status="ok", image=name, source_image=rel, x=x, y=y, w=w, h=h,
                   width=w, height=h, source_width=int(bgr.shape[1]),
                   source_height=int(bgr.shape[0]))


def _write_index(out: Path, records: list[dict[str, Any]]) -> int:
    """``out/index.parquet`` of the cropped images, by name; returns how many there are."""
    import pandas as pd

    from fbench import write_parquet

    ok = sorted((r for r in records if r["status"] == "ok"), key=lambda r: r["image"])
    cols = ["image", "source_image", "x", "y", "w", "h", "width", "height",
            "source_width", "source_height"]
    write_parquet(out / INDEX, pd.DataFrame([{c: r[c] for c in cols} for r in ok], columns=cols))
    return len(ok)


def prepare_ffhq(src: str | Path, out: str | Path, *, threshold: float = 0.1,
                 blank_background: bool = True, margin: float = 0.0, limit: int | None = None,
                 seed: int = 0, progress: bool = True,
                 segmenter: Segmenter | None = None) -> dict[str, Any]:
    """Crop every FFHQ image under ``src`` (searched recursively) to the person, writing
    ``out/<name>.png`` and ``out/index.parquet`` (image, source_image, x, y, w, h, width,
    height). ``limit``: a seeded random subset of that many images. Resumable: images already
    finished (with the same settings) are skipped. Returns the summary it also stores in
    ``out/report.json``."""
    from fbench import write_json

    src, out = Path(src), Path(out)
    files = _checked_files(src, out, threshold, margin, limit, seed)
    settings = {"command": "prepare ffhq", "source": str(src.resolve()),
                "threshold": threshold, "blank_background": blank_background,
                "margin": margin, "limit": limit, "seed": seed,
                "model": "mediapipe selfie_segmentation model 0"}
    own_segmenter = segmenter is None
    start = time.perf_counter()
    with Journal(out, settings, "fbench data prepare ffhq") as journal:
        pending = [f for f in files if not _finished(journal, out, f.stem)]
        if pending and own_segmenter:
            segmenter = SelfieSegmenter()
        try:
            with progress_bar("FFHQ crop", len(pending), progress) as advance:
                for f in pending:
                    assert segmenter is not None
                    _crop_one(f, src, out, segmenter, journal, threshold, blank_background,
                              margin)
                    advance()
        finally:
            if own_segmenter and segmenter is not None:
                segmenter.close()
        wanted = {f.stem for f in files}
        records = [r for k, r in journal.done.items() if k in wanted]
    seconds = time.perf_counter() - start
    processed = len(pending)
    no_person = sorted(r["source_image"] for r in records if r["status"] == "no_person")
    summary = {"images": len(files), "done_before": len(files) - processed,
               "processed": processed, "cropped": _write_index(out, records),
               "no_person": no_person, "seconds": round(seconds, 3),
               "images_per_s": round(processed / seconds, 2) if processed and seconds else None}
    write_json(out / REPORT, summary)
    return summary


def _finished(journal: Journal, out: Path, stem: str) -> bool:
    # An image counts as done when its crop is on disk, or it was found to hold no person.
    entry = journal.done.get(stem)
    return bool(entry) and (entry["status"] != "ok" or (out / entry["image"]).is_file())
