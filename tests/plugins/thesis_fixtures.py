"""Small source trees in the thesis's real layouts, for the fbench_thesis tests: FFHQ-like
PNGs, GAN folders at their (scaled-down) native sizes, and FaceForensics++-like videos with mask
videos written by OpenCV. Image content is noise, so every file has its own perceptual hash
(the audit would otherwise call them near-duplicates); a small white marker stands in for a
face and :class:`MarkerDetector` finds it, so most tests need no mediapipe."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from fbench_thesis.ffpp import Box

# native sizes scaled down 8x from the thesis (FFHQ 1024, WGAN-GP 128, StyleGAN 256,
# MSPIE-StyleGAN2 256-512), so the width/height columns have something to record
SIZES = {"ffhq": (64, 64), "wgan-gp": (16, 16), "stylegan": (32, 32),
         "mspie-stylegan2": ((32, 32), (64, 64))}
FRAME = 96      # side of the fixture videos
CROP = 40       # side of the box the marker detector reports
MARKER = 255


def noise(rng: np.random.Generator, w: int, h: int, top: int = 200) -> np.ndarray:
    return rng.integers(0, top, (h, w, 3), dtype=np.uint8)


def write_images(folder: Path, n: int, size, rng: np.random.Generator,
                 name: str = "{i}.png") -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        w, h = size[i % len(size)] if isinstance(size[0], tuple) else size
        p = folder / name.format(i=i)
        cv2.imwrite(str(p), noise(rng, w, h))
        out.append(p)
    return out


def make_image_sources(root: Path, n_ffhq: int = 200, n_gan: int = 100, seed: int = 0) -> None:
    """ROOT/ffhq/NNNNN.png and ROOT/<gan>/<gan>_gen_N.png."""
    rng = np.random.default_rng(seed)
    write_images(root / "ffhq", n_ffhq, SIZES["ffhq"], rng, "{i:05d}.png")
    for gan in ("wgan-gp", "stylegan", "mspie-stylegan2"):
        write_images(root / gan, n_gan, SIZES[gan], rng, gan.replace("-", "_") + "_gen_{i}.png")


def write_video(path: Path, frames: list[np.ndarray], fps: float = 25.0) -> None:
    fourcc = "MJPG" if path.suffix == ".avi" else "mp4v"
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (w, h))
    assert writer.isOpened(), f"OpenCV cannot write {fourcc} here"
    for f in frames:
        writer.write(f)
    writer.release()


def make_ffpp_videos(base: Path, method: str, n_videos: int, n_frames: int, seed: int = 0,
                     faceless: tuple[int, ...] = (), suffix: str = ".avi",
                     names: list[str] | None = None) -> tuple[Path, Path]:
    """FaceForensics++'s layout: BASE/manipulated_sequences/<method>/c23/videos/<id>.avi and
    .../<method>/masks/videos/<id>.avi. Frames are noise with a 4x4 white marker (the "face")
    whose position moves; the mask video is white on a box around it. Videos whose index is
    in ``faceless`` have no marker. ``names``: the video ids (default ``VVV_WWW`` with
    ``WWW = 7 VVV + 3``). Returns (videos dir, masks dir)."""
    rng = np.random.default_rng(seed)
    videos = base / "manipulated_sequences" / method / "c23" / "videos"
    masks = base / "manipulated_sequences" / method / "masks" / "videos"
    videos.mkdir(parents=True, exist_ok=True)
    masks.mkdir(parents=True, exist_ok=True)
    for v in range(n_videos):
        vid = names[v] if names else f"{v:03d}_{(v * 7 + 3) % 1000:03d}"
        frames, mask_frames = [], []
        for i in range(n_frames):
            f = noise(rng, FRAME, FRAME, top=180)
            m = np.zeros_like(f)
            x, y = 8 + (i * 3 + v) % 40, 8 + (i * 5 + 2 * v) % 40
            if v not in faceless:
                f[y:y + 4, x:x + 4] = MARKER
                m[y + 8:y + 32, x + 8:x + 32] = 255
            frames.append(f)
            mask_frames.append(m)
        write_video(videos / f"{vid}{suffix}", frames)
        write_video(masks / f"{vid}{suffix}", mask_frames)
    return videos, masks


class MarkerDetector:
    """Stands in for mediapipe: the face is the white marker; its box is CROP px from it."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, rgb: np.ndarray) -> Box | None:
        self.calls += 1
        ys, xs = np.nonzero(rgb.min(axis=2) >= 235)
        if len(ys) < 4:
            return None
        x, y = int(xs.min()), int(ys.min())
        h, w = rgb.shape[:2]
        return Box(x, y, min(CROP, w - x), min(CROP, h - y), 0.99)


def grace_hopper() -> Path | None:
    """A real face photograph that ships inside matplotlib (512x600)."""
    import matplotlib

    p = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    return p if p.is_file() else None
