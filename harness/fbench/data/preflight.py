"""Check every image (and mask) of a run before training starts, so that a bad file stops the
run at once with its name, or, with ``--skip-bad``, is left out and counted in the run; never
an hour into training.

The checks read file headers and tails only (no full decode), so they cost milliseconds per
file: missing or empty files, truncated PNGs and JPEGs (by :func:`fbench.data.images.
truncation_reason`, the rule ``fbench predict`` applies too: truncated downloads decode
"successfully" in OpenCV, grey at the bottom), unreadable headers,
images too large to decode in bounded memory, masks whose size differs from their image's, and
masks that are not binary (binarised at 50 %, counted as a warning).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from fbench.data.images import (
    UnreadableImage,
    header_size,
    pixel_limit_problem,
    read_gray,
    read_image,
    truncation_reason,
)
from fbench.data.manifest import resolve_path
from fbench.errors import FbenchError

MAX_PIXELS = 64_000_000
"""Images above this many pixels are refused: decoding one would need > 190 MB of RAM per
copy (and several copies live at once in a loader)."""


@dataclass
class PreflightReport:
    checked: int = 0
    bad: list[dict[str, str]] = field(default_factory=list)
    warnings: list[dict[str, str]] = field(default_factory=list)

    def as_dict(self, limit: int = 20) -> dict[str, Any]:
        return {"checked": self.checked, "skipped": len(self.bad), "bad": self.bad[:limit],
                "warnings": len(self.warnings), "warning_examples": self.warnings[:limit]}


def image_problem(path: str, max_pixels: int = MAX_PIXELS) -> tuple[str | None, tuple[int, int]]:
    """Why ``path`` cannot be used as an image (None when it can), and its (width, height)."""
    if not os.path.isfile(path):
        return "does not exist", (0, 0)
    if os.path.getsize(path) == 0:
        return "is an empty (zero-byte) file", (0, 0)
    truncated = truncation_reason(path)  # the same rule as fbench predict's
    if truncated:
        return f"is {truncated}", (0, 0)
    try:
        width, height = header_size(path)
    except Exception as exc:  # noqa: BLE001 - any failure of Pillow's parsers
        # formats Pillow does not know may still be readable by OpenCV; decode to be sure
        try:
            height, width = read_image(path).shape[:2]
        except UnreadableImage:
            return f"cannot be decoded as an image ({type(exc).__name__})", (0, 0)
    too_large = pixel_limit_problem(width, height, max_pixels)
    return (f"is {too_large}" if too_large else None), (width, height)


def _mask_problem(path: str, image_size: tuple[int, int]) -> tuple[str | None, str | None]:
    """(error, warning) for a mask file."""
    problem, size = image_problem(path)
    if problem:
        return f"mask {problem}", None
    if image_size != (0, 0) and size != image_size:
        return (f"mask is {size[0]}x{size[1]}, its image is {image_size[0]}x{image_size[1]}",
                None)
    try:
        m = read_gray(path)
    except UnreadableImage as exc:
        return f"mask cannot be decoded ({exc.reason})", None
    # anti-aliased or JPEG-compressed masks hold grey levels: usable, binarised at 50 %
    grey = int(((m > 10) & (m < 245)).sum())
    if grey > 0.01 * m.size:
        return None, f"mask is not binary ({100 * grey / m.size:.0f}% grey pixels)"
    return None, None


def preflight(manifest: pd.DataFrame, with_masks: bool, skip_bad: bool,
              max_pixels: int = MAX_PIXELS, progress: Any = None
              ) -> tuple[pd.DataFrame, PreflightReport]:
    """Check every row; returns the rows to use and what was found. Without ``skip_bad`` a bad
    file raises :class:`FbenchError` naming it (and how many more)."""
    report = PreflightReport()
    keep = []
    for path, mask in zip(manifest["path"], manifest["mask"], strict=True):
        full = resolve_path(manifest, path)
        problem, size = image_problem(full, max_pixels)
        if problem is None and with_masks and mask:
            problem, warning = _mask_problem(resolve_path(manifest, mask), size)
            if warning:
                report.warnings.append({"path": resolve_path(manifest, mask),
                                        "warning": warning})
            if problem:
                full = resolve_path(manifest, mask) + f" (mask of {full})"
        report.checked += 1
        keep.append(problem is None)
        if problem:
            report.bad.append({"path": full, "reason": problem})
        if progress is not None:
            progress()
    if report.bad and not skip_bad:
        first = report.bad[0]
        more = f" (and {len(report.bad) - 1} more)" if len(report.bad) > 1 else ""
        raise FbenchError(f"{first['path']} {first['reason']}{more}; nothing was trained.",
                          "replace or remove the file(s), or pass --skip-bad to train "
                          "without them (they are counted in the run).")
    kept = manifest[pd.Series(keep, index=manifest.index)]
    kept.attrs = dict(manifest.attrs)
    return kept, report
