"""FaceForensics++ frames as the thesis made them, made reproducible: sample frames of each
manipulated video (every N-th, or K per video; seeded per method and video, so a resumed or
re-ordered run samples the same frames, and two methods of the same video do not), detect
the face with mediapipe face detection, crop the same box from the frame and from the mask
video, and save both (mask = 255 where the mask crop is not black). Every frame keeps the
video it came from, so splits can be grouped by the people that video shows.

Per video, all-or-nothing: its frames are written to a hidden folder and moved into place
only when the whole video succeeded; a bad video (unreadable, no mask video, frame counts or
sizes that disagree) stops the run with a message naming the file, or with ``skip_bad`` is
reported and left out."""

from __future__ import annotations

import contextlib
import time
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fbench import FbenchError
from fbench_thesis.ffpp_video import (
    PARTIAL,
    Box,
    FaceDetector,
    Probe,
    VideoPair,
    extract_video,
    find_videos,
    probe_pair,
)
from fbench_thesis.images import VIDEO_SUFFIXES, natural_key
from fbench_thesis.journal import Journal, read_journal
from fbench_thesis.progress import progress_bar

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

INDEX = "index.parquet"
REPORT = "report.json"
INDEX_COLUMNS = ["video", "frame", "image", "mask", "x", "y", "w", "h", "score", "width",
                 "height", "video_frames", "video_width", "video_height"]


class MediapipeFaceDetector:
    """mediapipe face detection (the short-range model, as the thesis used it); its weights
    ship inside the mediapipe 0.10.21 wheel."""

    def __init__(self, min_confidence: float = 0.9, model_selection: int = 0) -> None:
        import mediapipe as mp

        self._det = mp.solutions.face_detection.FaceDetection(
            model_selection=model_selection, min_detection_confidence=min_confidence)

    def __call__(self, rgb: np.ndarray) -> Box | None:
        found = self._det.process(rgb).detections
        if not found:
            return None
        best = max(found, key=lambda d: d.score[0])
        rel = best.location_data.relative_bounding_box
        h, w = rgb.shape[:2]
        # mediapipe boxes may reach past the frame edge; clip so both crops agree
        x0, y0 = max(0, round(rel.xmin * w)), max(0, round(rel.ymin * h))
        x1 = min(w, round((rel.xmin + rel.width) * w))
        y1 = min(h, round((rel.ymin + rel.height) * h))
        if x1 - x0 < 2 or y1 - y0 < 2:
            return None
        return Box(x0, y0, x1 - x0, y1 - y0, float(best.score[0]))

    def close(self) -> None:
        self._det.close()


def sample_frames(n_frames: int, video_id: str, seed: int, every: int | None = None,
                  per_video: int | None = None, method: str = "") -> list[int]:
    """The frame numbers to extract from one video. Seeded by ``(seed, method, video_id)`` so
    the choice does not depend on which other videos exist or in which order they run, and
    Face2Face and FaceSwap of the same pair do not get the same frame numbers by construction.
    ``every``: every N-th frame from a seeded offset in [0, N); ``per_video``: K distinct
    frames."""
    import numpy as np

    if (every is None) == (per_video is None):
        raise FbenchError("give exactly one of --every N and --per-video K.")
    rng = np.random.default_rng([seed, zlib.crc32(method.encode()),
                                 zlib.crc32(video_id.encode())])
    if every is not None:
        if every < 1:
            raise FbenchError(f"--every {every} must be at least 1.")
        # the offset stays inside a short video, so every video gives at least one frame
        return list(range(int(rng.integers(min(every, n_frames))), n_frames, every))
    if per_video < 1:
        raise FbenchError(f"--per-video {per_video} must be at least 1.")
    k = min(per_video, n_frames)
    return sorted(int(i) for i in rng.choice(n_frames, k, replace=False))


def infer_method(videos: Path, out: Path) -> str:
    """The manipulation method a videos folder holds, for seeding: FaceForensics++'s
    ``manipulated_sequences/<Method>/...`` (``original`` for ``original_sequences``), else the
    output folder's name (``SOURCES/face2face``)."""
    parts = videos.resolve().parts
    for i, part in enumerate(parts[:-1]):
        if part == "manipulated_sequences":
            return parts[i + 1].lower()
        if part == "original_sequences":
            return "original"
    return out.name.lower()


def default_masks_dir(videos: Path) -> Path | None:
    """FaceForensics++ keeps ``<method>/<quality>/videos`` beside ``<method>/masks/videos``."""
    if videos.name == "videos" and videos.parent.parent.name:
        guess = videos.parent.parent / "masks" / "videos"
        if guess.is_dir() and guess.resolve() != videos.resolve():
            return guess
    return None


def _checked_inputs(videos: Path, masks: str | Path | None,
                    min_confidence: float) -> tuple[Path, list[VideoPair]]:
    """The mask folder and the video pairs, after every argument is checked: one clear line
    per mistake, before any work starts."""
    if not videos.is_dir():
        raise FbenchError(f"videos directory {videos} does not exist.",
                          "point at e.g. manipulated_sequences/Face2Face/c23/videos.")
    if masks is None:
        masks = default_masks_dir(videos)
        if masks is None:
            raise FbenchError(f"no mask videos found beside {videos}.",
                              "pass --masks DIR (e.g. manipulated_sequences/Face2Face/masks/"
                              "videos).")
    masks = Path(masks)
    if not masks.is_dir():
        raise FbenchError(f"mask videos directory {masks} does not exist.",
                          "pass --masks DIR (e.g. manipulated_sequences/<method>/masks/videos).")
    if not 0 < min_confidence <= 1:
        raise FbenchError(f"--min-confidence {min_confidence} must lie in (0, 1].")
    pairs = find_videos(videos, masks)
    if not pairs:
        raise FbenchError(f"{videos} holds no videos ({', '.join(VIDEO_SUFFIXES)}).",
                          "point at the folder holding the manipulated videos.")
    return masks, pairs


def _report_or_raise(exc: FbenchError, pair: VideoPair, skip_bad: bool,
                     bad: list[dict[str, str]]) -> None:
    # --skip-bad: a bad video is reported in the summary and left out; otherwise it stops here
    if not skip_bad:
        raise exc
    bad.append({"video": str(pair.video), "error": exc.format_message()})


def _probe_all(pending: list[VideoPair], skip_bad: bool,
               bad: list[dict[str, str]]) -> dict[str, Probe]:
    # Check every pending pair before writing anything: a missing mask video should not
    # surface hours into a run.
    probes: dict[str, Probe] = {}
    for pair in pending:
        try:
            probes[pair.video_id] = probe_pair(pair)
        except FbenchError as exc:
            _report_or_raise(exc, pair, skip_bad, bad)
    return probes


def _finished_videos(out: Path) -> set[str]:
    # A video is finished when its journal record says so and its files are still there (a
    # deleted frame makes the video run again rather than leave a hole in the index).
    return {k for k, r in read_journal(out).items()
            if all((out / f[c]).is_file() for f in r["frames"] for c in ("image", "mask"))}


def _write_index(out: Path, records: list[dict[str, Any]]) -> int:
    """``out/index.parquet``, one row per frame in video and frame order; returns its length."""
    import pandas as pd

    from fbench import write_parquet

    rows = [row for r in records for row in r["frames"]]
    rows.sort(key=lambda r: (natural_key(r["video"]), r["frame"]))
    write_parquet(out / INDEX, pd.DataFrame(rows, columns=INDEX_COLUMNS))
    return len(rows)


def prepare_ffpp(videos: str | Path, out: str | Path, *, masks: str | Path | None = None,
                 every: int | None = None, per_video: int | None = None, seed: int = 0,
                 min_confidence: float = 0.9, margin: float = 0.0, mask_threshold: int = 0,
                 skip_bad: bool = False, progress: bool = True,
                 detector: FaceDetector | None = None,
                 method: str | None = None) -> dict[str, Any]:
    """Extract face crops and mask crops from the FaceForensics++ videos under ``videos``
    (mask videos of the same names under ``masks``) into ``out/imgs``, ``out/masks`` and
    ``out/index.parquet`` (one row per frame: video, frame, image, mask, box, size). Videos
    finished by an earlier run with the same settings are skipped. ``method`` (default: from
    the FaceForensics++ path, else ``out``'s name) seeds the sampling with the video id.
    Returns the summary it also stores in ``out/report.json``."""
    from fbench import write_json

    videos, out = Path(videos), Path(out)
    if every is None and per_video is None:
        per_video = 30  # the thesis's final recipes: 30 frames per video
    masks, pairs = _checked_inputs(videos, masks, min_confidence)
    sample_frames(1, "check", seed, every, per_video)  # validates every/per_video early
    method = (method or infer_method(videos, out)).lower()

    settings = {"command": "prepare ffpp", "videos": str(videos.resolve()),
                "method": method, "sampling_seeded_by": "seed, method, video",
                "masks": str(masks.resolve()), "every": every, "per_video": per_video,
                "seed": seed, "min_confidence": min_confidence, "margin": margin,
                "mask_threshold": mask_threshold,
                "detector": "mediapipe face_detection model 0" if detector is None
                else "custom"}
    finished = _finished_videos(out)
    pending = [p for p in pairs if p.video_id not in finished]
    bad: list[dict[str, str]] = []
    probes = _probe_all(pending, skip_bad, bad)

    own_detector = detector is None
    start = time.perf_counter()
    sampled = 0
    with Journal(out, settings, "fbench data prepare ffpp") as journal:
        todo = [p for p in pending if p.video_id in probes]
        if todo and own_detector:
            detector = MediapipeFaceDetector(min_confidence)
        try:
            with progress_bar("FF++ frames", len(todo), progress) as advance:
                for pair in todo:
                    probe = probes[pair.video_id]
                    frames = sample_frames(probe.frames, pair.video_id, seed, every, per_video,
                                           method=method)
                    try:
                        rows, no_face = extract_video(pair, probe, frames, out, detector,
                                                      margin, mask_threshold)
                    except FbenchError as exc:
                        _report_or_raise(exc, pair, skip_bad, bad)
                        advance(note=f"bad: {pair.video_id}")
                        continue
                    sampled += len(frames)
                    journal.record(pair.video_id, status="ok" if rows else "no_face",
                                   sampled=len(frames), without_face=no_face, frames=rows)
                    advance(note=f"{pair.video_id}: {len(rows)}/{len(frames)} frames")
        finally:
            if own_detector and detector is not None:
                detector.close()
        ids = {p.video_id for p in pairs}
        records = [r for k, r in journal.done.items() if k in ids]
    seconds = time.perf_counter() - start
    with contextlib.suppress(OSError):  # the staging folder, when nothing is left in it
        (out / PARTIAL).rmdir()
    summary = {
        "method": method, "videos": len(pairs), "done_before": len(pairs) - len(pending),
        "processed": len(pending) - len(bad), "frames": _write_index(out, records),
        "videos_without_face": sorted((r["key"] for r in records if r["status"] == "no_face"),
                                      key=natural_key),
        "frames_without_face": sum(r["without_face"] for r in records),
        "bad_videos": bad, "seconds": round(seconds, 3),
        "sampled_frames_per_s": round(sampled / seconds, 2) if sampled and seconds else None,
    }
    write_json(out / REPORT, summary)
    return summary
