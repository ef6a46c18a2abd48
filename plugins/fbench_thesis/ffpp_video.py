"""One FaceForensics++ video and its mask video: listing the pairs, checking a pair before
anything is written for it, and extracting the face crops of its sampled frames, all or nothing
(the frames go to a hidden folder and move into place only when the whole video succeeded)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fbench import FbenchError
from fbench_thesis.images import VIDEO_SUFFIXES, natural_key

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

PARTIAL = ".partial"
"""The staging folder under the output directory, for the video being extracted."""


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
