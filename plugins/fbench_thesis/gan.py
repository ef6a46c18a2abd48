"""Generated-image folders need no preparation, only a check: every file decodes, is 8-bit
RGB (a grayscale or RGBA set would differ from the others in a way a detector can learn), and
the count and native sizes are what the user expects (the thesis's GANs differ in resolution:
128, 256, 256-512 px, which is itself a shortcut worth knowing about)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from fbench import FbenchError, truncation_reason
from fbench_thesis.images import list_images
from fbench_thesis.progress import progress_bar


def check_gan(directory: str | Path, progress: bool = True) -> dict[str, Any]:
    """Decode every image under ``directory``; returns ``count``, ``sizes`` (``"WxH"`` ->
    count), ``unreadable`` and ``not_rgb`` (path -> what it is instead). Raises nothing for bad
    files: the caller decides (the CLI fails when any are found)."""
    import cv2

    directory = Path(directory)
    if not directory.is_dir():
        raise FbenchError(f"{directory} is not a directory.",
                          "point at the folder holding the generated images.")
    files = list_images(directory)
    sizes: Counter[str] = Counter()
    unreadable: list[str] = []
    not_rgb: dict[str, str] = {}
    with progress_bar(f"checking {directory.name}", len(files), progress) as advance:
        for f in files:
            rel = str(f.relative_to(directory))
            # fbench's truncation rule first, so this check refuses what training would
            img = None if truncation_reason(f) else cv2.imread(str(f), cv2.IMREAD_UNCHANGED)
            if img is None:
                unreadable.append(rel)
            else:
                channels = 1 if img.ndim == 2 else img.shape[2]
                if channels != 3:
                    not_rgb[rel] = {1: "grayscale", 2: "grayscale+alpha",
                                    4: "RGBA"}.get(channels, f"{channels} channels")
                elif img.dtype != "uint8":
                    not_rgb[rel] = f"{img.dtype} samples"
                sizes[f"{img.shape[1]}x{img.shape[0]}"] += 1
            advance()
    return {"directory": str(directory), "count": len(files), "sizes": dict(sizes.most_common()),
            "unreadable": unreadable, "not_rgb": not_rgb}
