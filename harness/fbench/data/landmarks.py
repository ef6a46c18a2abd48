"""Facial landmarks for detectors that need them (``DetectorSpec.needs_landmarks``).

Landmarks are computed once per dataset by a preparation step (a plugin's command, e.g.
`fbench data landmarks`), never per epoch, and stored in one cache file per manifest. The
core knows no landmark model: a cache holds points, whatever produced them.

Where the cache lives: inside a built dataset's directory (``landmarks.npz``, so it travels
with the dataset); for any other dataset (generated ones such as ``synthetic``, or a raw
root) under ``$FBENCH_CACHE/landmarks/`` (default ``~/.cache/fbench/landmarks``), named by a
fingerprint of the manifest's image paths, so another parameter set gets another file.

The file (``numpy.savez_compressed``, read with ``allow_pickle=False``):

- ``paths`` ``[N]`` str: the resolved image paths it was computed for;
- ``sizes`` ``[N]`` int64: their file sizes then (a changed image makes the cache stale);
- ``points`` ``[N, K, 2]`` float32: x, y in [0, 1] of the image's width and height;
- ``found`` ``[N]`` bool: False where no face was found (its points are 0);
- ``meta``: a JSON string (what produced it, with which settings).

A run attaches the points to its manifest as two columns, ``landmarks`` (one ``[K, 2]`` array
per row) and ``landmarks_found``; a dataset may also provide those columns itself.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fbench.data.manifest import resolve_path
from fbench.errors import FbenchError

FORMAT = 1
"""Bump when the file layout changes; an older file then reads as stale, not as garbage."""
BUILT_CACHE_FILE = "landmarks.npz"
_ARRAYS = ("paths", "sizes", "points", "found", "meta")


@dataclass(frozen=True)
class Landmarks:
    """A cache read back and aligned to a manifest's rows."""

    points: np.ndarray
    """``[N, K, 2]`` float32 in [0, 1], zeros where no face was found."""
    found: np.ndarray
    """``[N]`` bool."""
    path: Path
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n_missing(self) -> int:
        return int((~self.found).sum())


def _cache_dir() -> Path:
    base = os.environ.get("FBENCH_CACHE")
    return (Path(base) if base else Path.home() / ".cache" / "fbench") / "landmarks"


def _image_paths(manifest: pd.DataFrame) -> list[str]:
    return [os.path.abspath(resolve_path(manifest, p)) for p in manifest["path"]]


def manifest_fingerprint(manifest: pd.DataFrame) -> str:
    """SHA-256 of the manifest's resolved image paths, order-free (splits and row order do not
    change which images a cache must cover)."""
    digest = hashlib.sha256()
    for p in sorted(set(_image_paths(manifest))):
        digest.update(p.encode("utf-8", "surrogateescape") + b"\0")
    return digest.hexdigest()


def landmark_cache_path(manifest: pd.DataFrame) -> Path:
    """Where the landmark cache of ``manifest`` lives (whether or not it exists yet)."""
    root = manifest.attrs.get("root")
    if manifest.attrs.get("card") and root:  # a built dataset (fbench.data.built)
        return Path(root) / BUILT_CACHE_FILE
    name = "".join(c if c.isalnum() or c in "-_" else "_"
                   for c in str(manifest.attrs.get("name", "dataset")))
    return _cache_dir() / f"{name}-{manifest_fingerprint(manifest)[:16]}.npz"


def _file_sizes(paths: list[str]) -> np.ndarray:
    sizes = np.empty(len(paths), np.int64)
    for i, p in enumerate(paths):
        try:
            sizes[i] = os.path.getsize(p)
        except OSError:
            sizes[i] = -1
    return sizes


def write_landmark_cache(manifest: pd.DataFrame, points: np.ndarray, found: np.ndarray,
                         meta: dict[str, Any] | None = None) -> Path:
    """Store landmarks for every row of ``manifest`` (``points`` ``[N, K, 2]`` in [0, 1],
    ``found`` ``[N]``) atomically at :func:`landmark_cache_path`; returns that path."""
    from fbench.files import atomic_path

    points = np.asarray(points, dtype=np.float32)
    found = np.asarray(found, dtype=bool)
    n = len(manifest)
    if points.ndim != 3 or points.shape[0] != n or points.shape[2] != 2 or found.shape != (n,):
        raise ValueError(f"landmarks for {n} rows must be points [N, K, 2] and found [N], got "
                         f"{points.shape} and {found.shape}")
    if not np.isfinite(points).all():
        raise ValueError("landmark points must be finite (use found=False and zeros for rows "
                         "without a face)")
    points = np.where(found[:, None, None], points, 0.0).astype(np.float32)
    paths = _image_paths(manifest)
    path = landmark_cache_path(manifest)
    record = {"format": FORMAT, "dataset": manifest.attrs.get("name"), "images": n,
              "found": int(found.sum()), "no_face": int((~found).sum()),
              "points_per_face": int(points.shape[1]), **(meta or {})}
    try:
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez_compressed(fh, paths=np.array(paths, dtype=str),
                                sizes=_file_sizes(paths), points=points, found=found,
                                meta=np.array(json.dumps(record)))
    except OSError as exc:
        raise FbenchError(f"cannot write the landmark cache {path}: {exc.strerror or exc}.",
                          "make its directory writable (or set FBENCH_CACHE for datasets "
                          "that are not built).") from None
    return path


def load_landmarks(manifest: pd.DataFrame) -> Landmarks | None:
    """The landmark cache of ``manifest``, aligned to its rows; None when there is none.

    Raises :class:`FbenchError` naming the file when it is unreadable, or stale (made for
    other images, or an image changed since)."""
    path = landmark_cache_path(manifest)
    if not path.is_file():
        return None
    redo = "prepare the landmarks again (the preparation step overwrites the file)."
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [a for a in _ARRAYS if a not in z.files]
            if missing:
                raise ValueError(f"it lacks {', '.join(missing)}")
            cached_paths = [str(p) for p in z["paths"]]
            sizes, points, found = z["sizes"], z["points"], z["found"].astype(bool)
            meta = json.loads(str(z["meta"]))
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise FbenchError(f"landmark cache {path} cannot be read ({exc}).", redo) from None
    n = len(cached_paths)
    if (meta.get("format") != FORMAT or points.ndim != 3 or points.shape[0] != n
            or points.shape[2] != 2 or found.shape != (n,) or sizes.shape != (n,)):
        raise FbenchError(f"landmark cache {path} has an unexpected layout (format "
                          f"{meta.get('format')!r}, points {points.shape}).", redo)

    row_of = {p: i for i, p in enumerate(cached_paths)}
    paths = _image_paths(manifest)
    rows = np.array([row_of.get(p, -1) for p in paths], dtype=np.int64)
    absent = [p for p, r in zip(paths, rows, strict=True) if r < 0]
    if absent:
        raise FbenchError(f"landmark cache {path} is stale: {len(absent)} of the dataset's "
                          f"{len(paths)} images are not in it (e.g. {absent[0]}).", redo)
    changed = np.nonzero(_file_sizes(paths) != sizes[rows])[0]
    if len(changed):
        raise FbenchError(f"landmark cache {path} is stale: {len(changed)} image(s) changed "
                          f"since it was written (e.g. {paths[changed[0]]}).", redo)
    return Landmarks(points[rows].astype(np.float32), found[rows], path, meta)


def attach_landmarks(manifest: pd.DataFrame, landmarks: Landmarks) -> pd.DataFrame:
    """A copy of ``manifest`` with the columns ``landmarks`` (``[K, 2]`` per row) and
    ``landmarks_found``; ``attrs["landmarks"]`` says where they came from."""
    out = manifest.copy()
    out["landmarks"] = pd.Series(list(landmarks.points), index=out.index, dtype=object)
    out["landmarks_found"] = landmarks.found
    out.attrs["landmarks"] = {"cache": str(landmarks.path),
                              "producer": landmarks.meta.get("producer")}
    return out


def _normalise_columns(manifest: pd.DataFrame) -> pd.DataFrame:
    """Landmark columns a dataset provided itself: one ``[K, 2]`` array per row (or None for
    no face), the same K everywhere; ``landmarks_found`` derived where absent."""
    name = manifest.attrs.get("name", "dataset")
    cells = list(manifest["landmarks"])
    present = [np.asarray(c, np.float32) for c in cells
               if c is not None and not (np.isscalar(c) and pd.isna(c))]
    shapes = {a.shape for a in present}
    if len(shapes) > 1 or any(len(s) != 2 or s[1] != 2 for s in shapes):
        raise FbenchError(f"{name}: the manifest's landmarks column holds arrays of shapes "
                          f"{sorted(shapes)}; every row needs [K, 2] with one K.",
                          "fix the dataset plugin, or drop the column and prepare a cache.")
    k = next(iter(shapes))[0] if shapes else 0
    points = np.zeros((len(cells), k, 2), np.float32)
    found = np.zeros(len(cells), bool)
    for i, c in enumerate(cells):
        if c is not None and not (np.isscalar(c) and pd.isna(c)):
            a = np.asarray(c, np.float32)
            found[i] = bool(np.isfinite(a).all())
            points[i] = np.nan_to_num(a) if found[i] else 0.0
    if "landmarks_found" in manifest.columns:
        found &= manifest["landmarks_found"].fillna(False).to_numpy(bool)
    return attach_landmarks(manifest, Landmarks(points, found, Path("<manifest>"),
                                                {"producer": "dataset"}))


def require_landmarks(manifest: pd.DataFrame, detector: str, command: str) -> pd.DataFrame:
    """``manifest`` with landmark columns, from the dataset itself or from its cache.

    ``command`` is the one that prepares the cache, for the message when there is none."""
    if "landmarks" in manifest.columns:
        return _normalise_columns(manifest)
    cached = load_landmarks(manifest)
    if cached is None:
        raise FbenchError(
            f"detector {detector!r} needs facial landmarks, and dataset "
            f"{manifest.attrs.get('name', 'dataset')!r} has no landmark cache "
            f"({landmark_cache_path(manifest)}).",
            f"prepare it once: {command}")
    return attach_landmarks(manifest, cached)


def landmark_summary(manifest: pd.DataFrame) -> dict[str, Any] | None:
    """What a run records about its landmarks: where from, and how many images per split had
    no face (their landmark maps are empty); None when the run uses none."""
    if "landmarks_found" not in manifest.columns:
        return None
    missing = ~manifest["landmarks_found"].to_numpy(bool)
    by_split = pd.Series(missing).groupby(manifest["split"].to_numpy()).sum()
    return {**manifest.attrs.get("landmarks", {}),
            "images": int(len(manifest)), "no_face": int(missing.sum()),
            "no_face_by_split": {str(s): int(v) for s, v in by_split.items()}}
