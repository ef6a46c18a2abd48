"""The shortcut probe's feature families: the cheap cues (colour, file size, native size, JPEG
quality and format, global spectrum) it asks a logistic regression to predict the label from,
the plugins' families (``register_probe_features``), and one pass over the images that
decodes each once (with :func:`fbench.data.images.read_image`) for all of them.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from fbench.data.manifest import resolve_path
from fbench.errors import FbenchError
from fbench.plugins.specs import ProbeFeatureSpec

if TYPE_CHECKING:  # pragma: no cover
    from rich.progress import Progress

SPECTRUM_SIZE = 64
SPECTRUM_BANDS = 16
NO_QUANTISATION = -1.0
"""The JPEG-quality feature of a file without quantisation tables (PNG, lossless formats)."""
FORMATS = ("JPEG", "PNG")
"""File formats with their own indicator feature; anything else counts as "other"."""

# The JPEG standard's luminance quantisation table (ITU T.81, Annex K), in natural order: the
# table libjpeg scales by the quality setting, so the scale of a file's table tells its quality.
_STD_LUMINANCE = np.array([
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99], dtype=np.float64)

Extractor = Callable[[int, np.ndarray, str], Sequence[float]]


# -- the built-in feature families -------------------------------------------------------------
def jpeg_quality(tables: dict[int, Sequence[int]] | None) -> float | None:
    """The libjpeg quality (1-100) whose scaling of the standard luminance table is closest to
    ``tables[0]`` (PIL's ``im.quantization``); None without tables."""
    if not tables or 0 not in tables:
        return None
    q = np.asarray(tables[0], dtype=np.float64)
    if q.shape != _STD_LUMINANCE.shape:
        return None
    # libjpeg clips scaled entries to [1, 255]; the clipped ones no longer carry the scale
    free = (q > 1) & (q < 255)
    scale = 100.0 * (q[free] / _STD_LUMINANCE[free]).mean() if free.any() else (
        100.0 * q.sum() / _STD_LUMINANCE.sum())
    quality = 5000.0 / scale if scale > 100.0 else (200.0 - scale) / 2.0
    return float(np.clip(round(quality), 1, 100))


def _header(path: str, image: np.ndarray) -> tuple[str, int, int, float | None]:
    """Format, width, height and JPEG quality from the file header (PIL reads it without
    decoding the pixels); the decoded image's size where PIL cannot identify the file."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return (im.format or "", im.width, im.height,
                    jpeg_quality(getattr(im, "quantization", None)))
    except (UnidentifiedImageError, OSError):
        return "", image.shape[1], image.shape[0], None


def _colour(manifest: pd.DataFrame) -> Extractor:
    def extract(row: int, image: np.ndarray, path: str) -> list[float]:
        pixels = image.reshape(-1, 3).astype(np.float32) / 255.0
        return [*pixels.mean(axis=0), *pixels.std(axis=0)]

    return extract


def _file_size(manifest: pd.DataFrame) -> Extractor:
    def extract(row: int, image: np.ndarray, path: str) -> list[float]:
        return [math.log(max(os.path.getsize(path), 1))]

    return extract


def _native_size(manifest: pd.DataFrame) -> Extractor:
    def extract(row: int, image: np.ndarray, path: str) -> list[float]:
        _, width, height, _ = _header(path, image)
        return [float(width), float(height)]

    return extract


def _jpeg(manifest: pd.DataFrame) -> Extractor:
    def extract(row: int, image: np.ndarray, path: str) -> list[float]:
        fmt, _, _, quality = _header(path, image)
        known = [float(fmt == f) for f in FORMATS]
        return [NO_QUANTISATION if quality is None else quality, *known, 1.0 - sum(known)]

    return extract


def _band_index(size: int, bands: int) -> np.ndarray:
    """For each frequency of a centred ``size`` x ``size`` spectrum, its radial band: equal
    widths from the centre (DC) out to the corners, so every frequency is counted once."""
    centre = size // 2
    y, x = np.mgrid[:size, :size]
    radius = np.hypot(y - centre, x - centre)
    return np.minimum((radius / (radius.max() + 1e-9) * bands).astype(np.int64), bands - 1)


def _spectrum(manifest: pd.DataFrame) -> Extractor:
    import cv2

    from fbench.data.images import resize_square

    bands = _band_index(SPECTRUM_SIZE, SPECTRUM_BANDS)
    counts = np.bincount(bands.ravel(), minlength=SPECTRUM_BANDS)

    def extract(row: int, image: np.ndarray, path: str) -> list[float]:
        # fbench's own resize: the probe sees the frequencies a run's loader leaves
        small = resize_square(image, SPECTRUM_SIZE)
        gray = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY).astype(np.float64)
        # without the mean, band 0 would repeat the colour family's brightness
        power = np.abs(np.fft.fftshift(np.fft.fft2(gray - gray.mean()))) ** 2
        energy = np.bincount(bands.ravel(), weights=power.ravel(), minlength=SPECTRUM_BANDS)
        return list(np.log(energy / counts + 1e-6))

    return extract


BUILTIN_FAMILIES: tuple[ProbeFeatureSpec, ...] = (
    ProbeFeatureSpec("colour", "per-image RGB mean and std", False, _colour),
    ProbeFeatureSpec("file-size", "file size in bytes (log)", False, _file_size),
    ProbeFeatureSpec("native-size", "width and height from the file header", False,
                     _native_size),
    ProbeFeatureSpec("jpeg-quality", "JPEG quality from the quantisation tables (-1 without), "
                     "file format (JPEG, PNG, other)", False, _jpeg),
    ProbeFeatureSpec("spectrum", f"log energy of the centred 2-D FFT of the gray image at "
                     f"{SPECTRUM_SIZE} px, in {SPECTRUM_BANDS} radial bands", True, _spectrum),
)
CORE = "fbench (core)"


def feature_families() -> list[tuple[ProbeFeatureSpec, str]]:
    """Every family the probe scores, with who provides it: the built-ins, then the plugins'
    (``register_probe_features``); spectral families last."""
    from fbench.plugins.registry import get_registry

    families = [(spec, CORE) for spec in BUILTIN_FAMILIES]
    for name, (spec, plugin) in sorted(get_registry().specs("probe feature").items()):
        if name in {s.name for s in BUILTIN_FAMILIES}:
            raise FbenchError(f"plugin {plugin!r} registers probe feature {name!r}, a name "
                              "fbench uses for a built-in family.", "rename it.")
        families.append((spec, plugin))
    return sorted(families, key=lambda f: f[0].spectral)  # stable: otherwise as listed


# -- features ----------------------------------------------------------------------------------
def _open_families(manifest: pd.DataFrame, families: Sequence[tuple[ProbeFeatureSpec, str]]
                   ) -> list[tuple[ProbeFeatureSpec, str, Any]]:
    opened = []
    try:
        for spec, plugin in families:
            opened.append((spec, plugin, spec.factory(manifest)))
    except BaseException:
        _close(opened)
        raise
    return opened


def _close(opened: list[tuple[ProbeFeatureSpec, str, Any]]) -> None:
    for _, _, extract in opened:
        close = getattr(extract, "close", None)
        if callable(close):
            close()


def _stack(spec: ProbeFeatureSpec, plugin: str, vectors: list[np.ndarray]) -> np.ndarray:
    lengths = {len(v) for v in vectors}
    if len(lengths) != 1 or 0 in lengths:
        raise FbenchError(f"probe feature {spec.name!r} (plugin {plugin!r}) returned vectors "
                          f"of lengths {sorted(lengths)}; every image needs one length >= 1.")
    features = np.stack(vectors)
    if not np.isfinite(features).all():
        raise FbenchError(f"probe feature {spec.name!r} (plugin {plugin!r}) returned values "
                          "that are not finite.")
    return features


def extract_features(manifest: pd.DataFrame, rows: pd.DataFrame,
                     families: Sequence[tuple[ProbeFeatureSpec, str]],
                     progress: Progress | None = None
                     ) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Each family's feature matrix over ``rows`` (a subset of ``manifest``, which the families'
    factories receive whole), decoding every image once; and each family's note."""
    from fbench.data.images import read_image

    opened = _open_families(manifest, families)
    vectors: dict[str, list[np.ndarray]] = {spec.name: [] for spec, _ in families}
    task = progress.add_task("probe", total=len(rows), info="") if progress is not None else None
    try:
        for row, rel in zip(rows.index, rows["path"], strict=True):
            path = resolve_path(manifest, rel)
            image = read_image(path)
            for spec, _, extract in opened:
                vectors[spec.name].append(np.asarray(extract(int(row), image, path),
                                                     dtype=np.float64).ravel())
            if progress is not None:
                progress.advance(task)
    finally:
        _close(opened)
        if progress is not None and task is not None:
            progress.remove_task(task)
    notes = {spec.name: str(getattr(extract, "note", "") or "") for spec, _, extract in opened}
    return {s.name: _stack(s, p, vectors[s.name]) for s, p, _ in opened}, notes
