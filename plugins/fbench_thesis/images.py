"""Image files on disk: which files count as images, their natural order, and their size read
from the header (not the pixels), so scanning tens of thousands of sources stays fast."""

from __future__ import annotations

import os
import re
from pathlib import Path

from fbench import FbenchError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm")


def natural_key(name: str) -> tuple:
    """Sort key that orders ``img_2`` before ``img_10`` (the thesis sorted its FFHQ and GAN
    lists by the number in the name, so index ranges meant what they said)."""
    parts = re.split(r"(\d+)", name)
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts)


def list_images(directory: str | os.PathLike, recursive: bool = True) -> list[Path]:
    """Image files under ``directory`` in natural order of their relative path; hidden files
    (our own temporary files start with a dot) are skipped."""
    base = Path(directory)
    pattern = "**/*" if recursive else "*"
    found = [p for p in base.glob(pattern)
             if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
             and p.is_file()]
    return sorted(found, key=lambda p: natural_key(str(p.relative_to(base))))


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """``(width, height)`` from the file header (``fbench.header_size``). Raises
    :class:`FbenchError` naming the file when it is not a readable image."""
    from fbench import header_size

    try:
        return header_size(path)
    except (OSError, ValueError, SyntaxError):
        raise FbenchError(f"image {path} cannot be read (not an image, or truncated).",
                          "replace or remove it.") from None


def write_image_atomically(path: Path, image) -> None:
    """Write with OpenCV to a hidden temporary name and rename it into place, so a killed run
    never leaves a half-written image that a resumed run would take for finished."""
    import cv2

    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    if not cv2.imwrite(str(tmp), image):
        tmp.unlink(missing_ok=True)
        raise FbenchError(f"cannot write {path}.", "check free disk space and permissions.")
    os.replace(tmp, path)
