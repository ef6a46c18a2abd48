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
import shutil
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fbench import FbenchError
from fbench_thesis.images import VIDEO_SUFFIXES, natural_key
from fbench_thesis.journal import Journal, read_journal
from fbench_thesis.progress import progress_bar

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

INDEX = "index.parquet"
REPORT = "report.json"
PARTIAL = ".partial"
INDEX_COLUMNS = ["video", "frame", "image", "mask", "x", "y", "w", "h", "score", "width",
                 "height", "video_frames", "video_width", "video_height"]


@dataclass(frozen=True)
class Box:
    """A face box in pixels, already clipped to the frame."""

    x: int
    y: int
    w: int
    h: int
    score: float


FaceDetector = Callable[["np.ndarray"], "Box | None"]
"""``detector(rgb uint8 [H, W, 3]) -> Box | None`` (the most confident face, or None)."""


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


@dataclass(frozen=True)
class VideoPair:
    video_id: str
    video: Path
    mask: Path


@dataclass(frozen=True)
class Probe:
    frames: int
    width: int
    height: int


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


def find_videos(videos: Path, masks: Path) -> list[VideoPair]:
    """Every video under ``videos`` paired with the mask video of the same name in
    ``masks`` (whether or not that exists: a missing one is reported per video)."""
    found = sorted((p for p in videos.iterdir()
                    if p.suffix.lower() in VIDEO_SUFFIXES and not p.name.startswith(".")),
                   key=lambda p: natural_key(p.name))
    by_stem = {}
    if masks.is_dir():
        by_stem = {p.stem: p for p in masks.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES}
    return [VideoPair(p.stem, p, by_stem.get(p.stem, masks / p.name)) for p in found]


def _open(path: Path, what: str):
    import cv2

    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        cap.release()
        raise FbenchError(f"{what} {path} cannot be opened (not a video, truncated, or a "
                          "codec this OpenCV build lacks).",
                          "re-download or re-encode it (e.g. ffmpeg -i in.mp4 -c:v libx264 "
                          "out.mp4), or pass --skip-bad to report it and go on.")
    return cap


def _probe_one(path: Path, what: str) -> Probe:
    import cv2

    cap = _open(path, what)
    try:
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        if n <= 0:  # some containers do not say: count by decoding
            n = 0
            while cap.grab():
                n += 1
        if n <= 0 or w <= 0 or h <= 0:
            raise FbenchError(f"{what} {path} holds no decodable frames.",
                              "re-download it, or pass --skip-bad to report it and go on.")
        return Probe(n, w, h)
    finally:
        cap.release()


def probe_pair(pair: VideoPair) -> Probe:
    """Check one video and its mask video before anything is written for it."""
    if not pair.mask.is_file():
        raise FbenchError(
            f"mask video for {pair.video} not found (looked for {pair.mask}).",
            "download the FaceForensics++ masks (manipulated_sequences/<method>/masks/videos) "
            "and pass --masks DIR, or pass --skip-bad to report it and go on.")
    video = _probe_one(pair.video, "video")
    mask = _probe_one(pair.mask, "mask video")
    if video.frames != mask.frames:
        raise FbenchError(
            f"video {pair.video} has {video.frames} frames but its mask video {pair.mask} "
            f"has {mask.frames}: frame i of one would not be frame i of the other.",
            "re-download the pair (the mask video must come from the same FaceForensics++ "
            "release), or pass --skip-bad to report it and go on.")
    if (video.width, video.height) != (mask.width, mask.height):
        raise FbenchError(
            f"video {pair.video} is {video.width}x{video.height} but its mask video "
            f"{pair.mask} is {mask.width}x{mask.height}: the face box would not fit both.",
            "re-download the pair, or pass --skip-bad to report it and go on.")
    return video


def _grow(box: Box, margin: float, w: int, h: int) -> tuple[int, int, int, int]:
    dx, dy = round(margin * box.w), round(margin * box.h)
    x0, y0 = max(0, box.x - dx), max(0, box.y - dy)
    x1, y1 = min(w, box.x + box.w + dx), min(h, box.y + box.h + dy)
    return x0, y0, x1, y1


def extract_video(pair: VideoPair, probe: Probe, frames: list[int], out: Path,
                  detector: FaceDetector, margin: float = 0.0,
                  mask_threshold: int = 0) -> tuple[list[dict[str, Any]], int]:
    """Extract ``frames`` of one video into ``out/imgs`` and ``out/masks``; returns the index
    rows and how many sampled frames had no face. Nothing of this video is left in ``out`` if
    it fails."""
    import cv2
    import numpy as np

    staging = out / PARTIAL / pair.video_id
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "imgs").mkdir(parents=True)
    (staging / "masks").mkdir()
    wanted = set(frames)
    last = max(frames) if frames else -1
    rows: list[dict[str, Any]] = []
    no_face = 0
    cap = _open(pair.video, "video")
    mcap = _open(pair.mask, "mask video")
    try:
        for i in range(last + 1):
            # grab() both every frame keeps them in lock-step; retrieve() decodes only the
            # frames we keep
            got, mgot = cap.grab(), mcap.grab()
            if not (got and mgot):
                short = pair.video if not got else pair.mask
                raise FbenchError(
                    f"{short} ends at frame {i} although its header says {probe.frames} "
                    "frames.", "re-download it, or pass --skip-bad to report it and go on.")
            if i not in wanted:
                continue
            ok, frame = cap.retrieve()
            mok, mframe = mcap.retrieve()
            if not (ok and mok):
                bad = pair.video if not ok else pair.mask
                raise FbenchError(f"frame {i} of {bad} cannot be decoded.",
                                  "re-download it, or pass --skip-bad to report it and go on.")
            box = detector(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
            if box is None:
                no_face += 1
                continue
            x0, y0, x1, y1 = _grow(box, margin, frame.shape[1], frame.shape[0])
            crop = frame[y0:y1, x0:x1]
            mcrop = mframe[y0:y1, x0:x1]
            if mcrop.ndim == 3:
                mcrop = mcrop.max(axis=2)
            binary = np.where(mcrop > mask_threshold, 255, 0).astype(np.uint8)
            name = f"{pair.video_id}_{i:06d}.png"
            if not (cv2.imwrite(str(staging / "imgs" / name), crop)
                    and cv2.imwrite(str(staging / "masks" / name), binary)):
                raise FbenchError(f"cannot write frames under {staging}.",
                                  "check free disk space and permissions.")
            rows.append({"video": pair.video_id, "frame": i, "image": f"imgs/{name}",
                         "mask": f"masks/{name}", "x": x0, "y": y0, "w": x1 - x0,
                         "h": y1 - y0, "score": round(box.score, 4), "width": x1 - x0,
                         "height": y1 - y0, "video_frames": probe.frames,
                         "video_width": probe.width, "video_height": probe.height})
        # the video succeeded: move its files into place (same filesystem: renames)
        for sub in ("imgs", "masks"):
            (out / sub).mkdir(exist_ok=True)
            for f in (staging / sub).iterdir():
                f.replace(out / sub / f.name)
    finally:
        cap.release()
        mcap.release()
        shutil.rmtree(staging, ignore_errors=True)
    return rows, no_face


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
    import pandas as pd

    from fbench import write_json, write_parquet

    videos, out = Path(videos), Path(out)
    if every is None and per_video is None:
        per_video = 30  # the thesis's final recipes: 30 frames per video
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
    sample_frames(1, "check", seed, every, per_video)  # validates every/per_video early
    method = (method or infer_method(videos, out)).lower()

    settings = {"command": "prepare ffpp", "videos": str(videos.resolve()),
                "method": method, "sampling_seeded_by": "seed, method, video",
                "masks": str(masks.resolve()), "every": every, "per_video": per_video,
                "seed": seed, "min_confidence": min_confidence, "margin": margin,
                "mask_threshold": mask_threshold,
                "detector": "mediapipe face_detection model 0" if detector is None
                else "custom"}
    # A video is finished when its journal record says so and its files are still there (a
    # deleted frame makes the video run again rather than leave a hole in the index).
    finished = {k for k, r in read_journal(out).items()
                if all((out / f[c]).is_file() for f in r["frames"] for c in ("image", "mask"))}
    pending = [p for p in pairs if p.video_id not in finished]

    # Check every pending pair before writing anything: a missing mask video should not
    # surface hours into a run.
    probes: dict[str, Probe] = {}
    bad: list[dict[str, str]] = []
    for pair in pending:
        try:
            probes[pair.video_id] = probe_pair(pair)
        except FbenchError as exc:
            if not skip_bad:
                raise
            bad.append({"video": str(pair.video), "error": exc.format_message()})

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
                        if not skip_bad:
                            raise
                        bad.append({"video": str(pair.video), "error": exc.format_message()})
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
    rows = [row for r in records for row in r["frames"]]
    rows.sort(key=lambda r: (natural_key(r["video"]), r["frame"]))
    write_parquet(out / INDEX, pd.DataFrame(rows, columns=INDEX_COLUMNS))
    summary = {
        "method": method, "videos": len(pairs), "done_before": len(pairs) - len(pending),
        "processed": len(pending) - len(bad), "frames": len(rows),
        "videos_without_face": sorted((r["key"] for r in records if r["status"] == "no_face"),
                                      key=natural_key),
        "frames_without_face": sum(r["without_face"] for r in records),
        "bad_videos": bad, "seconds": round(seconds, 3),
        "sampled_frames_per_s": round(sampled / seconds, 2) if sampled and seconds else None,
    }
    write_json(out / REPORT, summary)
    return summary
