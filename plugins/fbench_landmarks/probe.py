"""The ``face-found`` family of the shortcut probe (``fbench data probe``): 1 where the face
mesh found a face, else 0.

two-stream-landmark draws empty landmark maps where no face was found, so when finding a face
depends on the class, that detector can score on it without looking at forgery. The probe must
see exactly what the detector sees: the landmarks the dataset carries itself, else its landmark
cache (what `fbench data landmarks` wrote, what every run reads), else the same mediapipe face
mesh, run on the fly on the images the probe decodes.

Nothing heavy at import; mediapipe loads only when no cache answers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fbench import FbenchError

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import pandas as pd

    from fbench_landmarks.mesh import Mesher


def _from_dataset(manifest: pd.DataFrame) -> dict[int, bool]:
    """Rows with a face, from landmark columns the dataset provides itself (as the core reads
    them for a run: a finite ``[K, 2]`` array, and ``landmarks_found`` where given)."""
    import numpy as np
    import pandas as pd

    found = {}
    for row, cell in manifest["landmarks"].items():
        missing = cell is None or (np.isscalar(cell) and pd.isna(cell))
        found[int(row)] = not missing and bool(np.isfinite(np.asarray(cell, float)).all())
    if "landmarks_found" in manifest.columns:
        for row, flag in manifest["landmarks_found"].fillna(False).items():
            found[int(row)] &= bool(flag)
    return found


class FaceFound:
    """``extract(row, image, path) -> [0.0 | 1.0]`` for the probe; ``note`` says where the
    answers came from."""

    def __init__(self, manifest: pd.DataFrame, mesher: Mesher | None = None,
                 min_confidence: float = 0.5) -> None:
        self._found: dict[int, bool] | None = None
        self._mesher: Any = None
        self._own = False
        if "landmarks" in manifest.columns:
            self._found, self.note = _from_dataset(manifest), "landmarks the dataset provides"
            return
        self._found, self.note = self._from_cache(manifest)
        if self._found is None:
            self._own = mesher is None
            if self._own:
                from fbench_landmarks.mesh import FaceMesh

                # the default of `fbench data landmarks`, so on the fly matches a fresh cache
                mesher = FaceMesh(min_confidence)
            self._mesher = mesher

    @staticmethod
    def _from_cache(manifest: pd.DataFrame) -> tuple[dict[int, bool] | None, str]:
        from fbench import load_landmarks

        try:
            cached = load_landmarks(manifest)
        except FbenchError as exc:  # stale or unreadable: what a fresh preparation would find
            return None, f"face mesh on the fly ({exc.problem})"
        if cached is None:
            return None, ("face mesh on the fly: no landmark cache "
                          "(`fbench data landmarks` makes one)")
        found = {int(r): bool(f) for r, f in zip(manifest.index, cached.found, strict=True)}
        return found, f"from the landmark cache {cached.path}"

    def __call__(self, row: int, image: np.ndarray, path: str) -> list[float]:
        if self._found is not None:
            return [float(self._found[row])]
        return [float(self._mesher(image) is not None)]

    def close(self) -> None:
        if self._own and self._mesher is not None:
            self._mesher.close()
            self._mesher = None
