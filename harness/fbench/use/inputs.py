"""What ``fbench predict`` is given, as images: files, folders (walked recursively, in sorted
order) and arrays, each decoded with fbench's one reader (:func:`fbench.data.images.
read_image`), so a dataset image scores as it did in the run.

A file is an image when OpenCV recognises its content, whatever its name; a file that is
neither recognised nor named like an image is skipped and counted; one that should be an image
and cannot be used (zero bytes, truncated, corrupt, unreadable) keeps its place with the reason,
and the rest are still scored.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fbench.errors import FbenchError

IMAGE_EXTENSIONS = frozenset({
    ".png", ".jpg", ".jpeg", ".jpe", ".jp2", ".bmp", ".dib", ".tif", ".tiff", ".webp",
    ".pbm", ".pgm", ".ppm", ".pnm", ".pxm", ".sr", ".ras", ".exr", ".hdr", ".pic", ".gif",
    ".avif",
})
"""Names that promise an image: such a file that cannot be decoded is reported as bad, not
skipped silently. Content decides everything else."""


@dataclass
class Inputs:
    """What :func:`collect_inputs` found, in input order: ``entries`` are ``(name, source,
    reason)``, with ``source`` a path or an array to decode, or ``None`` and a ``reason`` for
    a file that is bad before any decoding; ``skipped`` are files that are not images."""

    entries: list[tuple[str, str | np.ndarray | None, str]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def add_image(self, name: str, source: str | np.ndarray) -> None:
        self.entries.append((name, source, ""))

    def add_bad(self, name: str, reason: str) -> None:
        self.entries.append((name, None, reason))

    @property
    def n_images(self) -> int:
        return sum(source is not None for _, source, _ in self.entries)


def _looks_like_image(path: str) -> bool:
    return os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS


def _classify_file(path: str, inputs: Inputs) -> None:
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as fh:
            fh.read(1)
    except OSError as exc:
        inputs.add_bad(path, f"cannot be read: {exc.strerror or exc}")
        return
    import cv2

    if size > 0 and cv2.haveImageReader(path):  # OpenCV knows the signature: content decides
        inputs.add_image(path, path)
    elif _looks_like_image(path):
        inputs.add_bad(path, "zero bytes" if size == 0 else
                       "not an image OpenCV can decode (its content does not match its name)")
    else:
        inputs.skipped.append(path)


def as_items(inputs: Any) -> list[Any]:
    """``inputs`` of ``predict`` as a list: one path or array (a ``[N, H, W, C]`` stack is N
    images) or a sequence or iterable of them."""
    if isinstance(inputs, (str, os.PathLike)):
        return [inputs]
    if isinstance(inputs, np.ndarray):
        return list(inputs) if inputs.ndim == 4 else [inputs]
    return list(inputs)


def collect_inputs(items: Iterable[str | os.PathLike | np.ndarray]) -> Inputs:
    """Expand files, folders (recursively, in sorted order) and arrays into :class:`Inputs`."""
    inputs = Inputs()
    n_arrays = 0
    for item in items:
        if not isinstance(item, (str, os.PathLike)):
            arr = np.asarray(item)
            for a in (arr if arr.ndim == 4 else [arr]):  # a stack [N, H, W, C] is N images
                inputs.add_image(f"<array {n_arrays}>", a)
                n_arrays += 1
            continue
        path = os.fspath(item)
        if os.path.isdir(path):
            for root, dirs, files in os.walk(path):
                dirs.sort()
                for name in sorted(files):
                    _classify_file(os.path.join(root, name), inputs)
        elif os.path.exists(path):
            _classify_file(path, inputs)
        else:
            inputs.add_bad(path, "does not exist")
    return inputs


def array_to_rgb(arr: np.ndarray) -> np.ndarray:
    """An array image as uint8 RGB. Arrays are taken as RGB(A) (numpy, PIL, matplotlib
    convention), ``[H, W]``, ``[H, W, 1|3|4]``, uint8, uint16 or float in [0, 1]."""
    from fbench.data.images import to_uint8_rgb

    a = np.asarray(arr)
    if a.dtype == bool:
        a = a.astype(np.uint8) * 255
    if a.ndim == 3 and a.shape[2] in (3, 4):
        # to_uint8_rgb speaks OpenCV's BGR(A); flip the colour channels, keep alpha last.
        a = np.concatenate([a[:, :, 2::-1], a[:, :, 3:]], axis=2)
    if a.size == 0:
        raise FbenchError(f"empty array of shape {a.shape}")
    try:
        return to_uint8_rgb(np.ascontiguousarray(a), "array")
    except FbenchError as exc:
        raise FbenchError(exc.problem.removeprefix("array: ")) from None


def load_input(source: str | np.ndarray) -> np.ndarray:
    """One entry's image as uint8 RGB ``[H, W, 3]``; raises :class:`FbenchError` whose
    ``problem`` is the reason alone (for the output's ``error`` column)."""
    from fbench.data.images import UnreadableImage, read_image

    if isinstance(source, np.ndarray):
        return array_to_rgb(source)
    try:
        return read_image(source)
    except UnreadableImage as exc:
        raise FbenchError(exc.reason) from None
