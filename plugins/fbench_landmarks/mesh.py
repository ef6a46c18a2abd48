"""Landmark preparation: mediapipe face mesh (468 points) on every image of a dataset, once,
stored in the dataset's landmark cache (``fbench.write_landmark_cache``), which every later run
on that dataset reads."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fbench import FbenchError, read_image

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import pandas as pd

Mesher = Callable[["np.ndarray"], "np.ndarray | None"]
"""``mesher(rgb uint8 [H, W, 3]) -> [K, 2]`` points in [0, 1], or None when no face."""


class FaceMesh:
    """mediapipe face mesh in static-image mode (one face, no iris refinement: 468 points); its
    model ships inside the mediapipe wheel, so nothing is downloaded. Points are x, y divided
    by the image width and height (mediapipe's normalised coordinates), clipped to [0, 1]."""

    def __init__(self, min_confidence: float = 0.5) -> None:
        import mediapipe as mp

        self.min_confidence = min_confidence
        self._mesh = mp.solutions.face_mesh.FaceMesh(
            static_image_mode=True, max_num_faces=1, refine_landmarks=False,
            min_detection_confidence=min_confidence)

    def __call__(self, rgb: np.ndarray) -> np.ndarray | None:
        import numpy as np

        result = self._mesh.process(rgb)
        if not result.multi_face_landmarks:
            return None
        face = result.multi_face_landmarks[0].landmark
        return np.clip(np.array([(p.x, p.y) for p in face], np.float32), 0.0, 1.0)

    def close(self) -> None:
        self._mesh.close()


@contextlib.contextmanager
def _progress(total: int, enabled: bool) -> Iterator[Callable[[str], None]]:
    """Yield ``advance(note)``: fbench's progress bar on stderr (stdout keeps the summary)."""
    from fbench import make_progress

    with make_progress(enabled=enabled) as bar:
        task = bar.add_task("face mesh", total=total, info="")
        yield lambda note: bar.update(task, advance=1, info=note)


def compute_landmarks(paths: list[str], mesher: Mesher,
                      progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """``points`` ``[N, K, 2]`` and ``found`` ``[N]`` for ``paths`` (a path listed twice is
    meshed once)."""
    import numpy as np

    unique = list(dict.fromkeys(paths))
    done: dict[str, np.ndarray | None] = {}
    missing = 0
    with _progress(len(unique), progress) as advance:
        for p in unique:
            # fbench's one reader: the mesh sees the pixels training sees
            done[p] = mesher(read_image(p))
            missing += done[p] is None
            advance(f"{missing} without a face")
    shapes = {a.shape for a in done.values() if a is not None}
    if len(shapes) > 1:
        raise FbenchError(f"the landmark model returned faces of shapes {sorted(shapes)} "
                          "(a plugin bug).")
    k = next(iter(shapes))[0] if shapes else 0
    points = np.zeros((len(paths), k, 2), np.float32)
    found = np.zeros(len(paths), bool)
    for i, p in enumerate(paths):
        if done[p] is not None:
            points[i], found[i] = done[p], True
    return points, found


def prepare_landmarks(dataset: str, root: str | None = None,
                      options: dict[str, Any] | None = None, force: bool = False,
                      min_confidence: float = 0.5, progress: bool = True,
                      mesher: Mesher | None = None) -> dict[str, Any]:
    """Compute and cache the landmarks of ``dataset`` (loaded as `fbench run` loads it, through
    ``fbench.load_dataset`` with the same root and options). An up-to-date cache is kept
    unless ``force``; a stale or unreadable one is replaced. Returns a summary."""
    import importlib.metadata

    from fbench import load_dataset, load_landmarks, write_landmark_cache

    manifest = load_dataset(dataset, root, **(options or {}))
    replaced = None
    if not force:
        try:
            cached = load_landmarks(manifest)
        except FbenchError as exc:  # stale or corrupt: say so, and compute it again
            cached, replaced = None, exc.problem
        if cached is not None:
            return _summary(manifest, cached.path, cached.found, 0.0, up_to_date=True)

    paths = _resolved_paths(manifest)
    own = mesher is None
    mesher = FaceMesh(min_confidence) if own else mesher
    start = time.perf_counter()
    try:
        points, found = compute_landmarks(paths, mesher, progress)
    finally:
        if own:
            mesher.close()
    seconds = time.perf_counter() - start
    meta = {"producer": "mediapipe face_mesh" if own else type(mesher).__name__,
            "min_confidence": min_confidence if own else None, "seconds": round(seconds, 2)}
    if own:
        meta["mediapipe"] = importlib.metadata.version("mediapipe")
    path = write_landmark_cache(manifest, points, found, meta)
    return _summary(manifest, path, found, seconds, up_to_date=False, replaced=replaced)


def _resolved_paths(manifest: pd.DataFrame) -> list[str]:
    import os

    root = manifest.attrs.get("root")
    return [p if os.path.isabs(p) or not root else os.path.join(root, p)
            for p in manifest["path"]]


def _summary(manifest: pd.DataFrame, path: Path, found: np.ndarray, seconds: float,
             up_to_date: bool, replaced: str | None = None) -> dict[str, Any]:
    missing = ~found
    by_split = {str(s): int(missing[(manifest["split"] == s).to_numpy()].sum())
                for s in manifest["split"].unique()}
    return {"cache": str(path), "images": int(len(found)), "found": int(found.sum()),
            "no_face": int(missing.sum()), "no_face_by_split": by_split,
            "no_face_examples": [str(p) for p in manifest["path"][missing].head(5)],
            "seconds": round(seconds, 2), "up_to_date": up_to_date, "replaced": replaced}
