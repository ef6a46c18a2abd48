"""What ``fbench predict`` is given, as images: files, folders (walked recursively, in sorted
order) and arrays, each decoded with fbench's one decoder (:func:`fbench.data.images.decode`,
which applies the truncation rule), so a dataset image scores as it did in the run.

Folders belong to strangers, so nothing here trusts a name or a file's type:

- a file is an image when its first bytes are the signature of a format fbench reads
  (:data:`FORMATS`), read in Python; OpenCV is never handed a path (it crashes on names that
  are not valid UTF-8, and it would open a FIFO and wait forever);
- only regular files are opened: a FIFO, socket or device (even one named ``x.png``) keeps its
  place with status ``skipped`` and the reason, and is never read;
- an image's header is read (Pillow, no decoding) before it is decoded, and one above the pixel
  limit (:data:`fbench.data.preflight.MAX_PIXELS` by default, the limit of ``fbench run``) is
  refused, so a few bytes claiming 40000 x 40000 pixels cannot take gigabytes of memory;
- one file that cannot be used (zero bytes, truncated, corrupt, too large, unreadable) keeps its
  place with the reason, and the rest are still scored;
- names that are not valid UTF-8 are shown (and written to the output) with their
  undecodable bytes as ``\\xNN`` escapes (:func:`display_name`).

A file that is neither an image nor named like one is skipped and counted.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import numpy as np

from fbench.data.images import (
    FORMATS,
    HEAD_BYTES,
    header_size,
    pixel_limit_problem,
    sniff_format,
)
from fbench.errors import FbenchError

STATUS_SCORED = "scored"
STATUS_ERROR = "error"
STATUS_SKIPPED = "skipped"

IMAGE_EXTENSIONS = frozenset({
    ".png", ".jpg", ".jpeg", ".jpe", ".jp2", ".j2k", ".bmp", ".dib", ".tif", ".tiff", ".webp",
    ".pbm", ".pgm", ".ppm", ".pnm", ".pxm", ".sr", ".ras", ".exr", ".hdr", ".pic", ".gif",
    ".avif", ".pfm", ".pam",
})
"""Names that promise an image: such a file that is not one fbench reads is reported as bad,
not skipped silently. Content decides everything else."""

def display_name(path: str | os.PathLike) -> str:
    """``path`` as valid text: bytes of a name that are not UTF-8 (held by Python as
    surrogate escapes) become ``\\xNN``, so the output CSV and Parquet can always be written."""
    try:
        raw = os.fsencode(path)
    except UnicodeEncodeError:  # a lone surrogate that is no escaped byte: keep it visible
        return os.fspath(path).encode("utf-8", "backslashreplace").decode("utf-8")
    return raw.decode("utf-8", "backslashreplace")


class NotRegularFile(Exception):
    """A FIFO, socket, device or directory where a file was expected."""


def _kind(mode: int) -> str:
    kinds = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
             (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
             (stat.S_ISDIR, "a directory"))
    return next((name for test, name in kinds if test(mode)), "not a regular file")


@contextlib.contextmanager
def open_regular(path: str) -> Iterator[BinaryIO]:
    """``path`` opened for reading, if it is a regular file; else :class:`NotRegularFile`.

    Checked twice: ``os.stat`` before opening (opening a device can have side effects), and on
    the open descriptor, so a file swapped for a FIFO in between is caught too. The open itself
    cannot block (``O_NONBLOCK``: a FIFO without a writer would wait forever)."""
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise NotRegularFile(_kind(st.st_mode))
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
    fd = os.open(path, flags)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotRegularFile(_kind(st.st_mode))
        fh = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with fh:
        yield fh


@dataclass
class Entry:
    """One input: ``name`` as shown and written, ``source`` the path or array to decode, and
    ``status``/``reason`` when listing already decided it (an error, or a skipped special
    file); an empty ``status`` means it is to be decoded and scored."""

    name: str
    source: str | np.ndarray | None
    status: str = ""
    reason: str = ""


@dataclass
class Inputs:
    """What :func:`collect_inputs` found, in input order: ``entries`` get one output row each;
    ``skipped`` are files that are not images (named, not rows)."""

    entries: list[Entry] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def add_image(self, name: str, source: str | np.ndarray) -> None:
        self.entries.append(Entry(name, source))

    def add_bad(self, name: str, reason: str) -> None:
        self.entries.append(Entry(name, None, STATUS_ERROR, reason))

    def add_special(self, name: str, reason: str) -> None:
        self.entries.append(Entry(name, None, STATUS_SKIPPED, reason))

    @property
    def n_images(self) -> int:
        return sum(not e.status for e in self.entries)


def _looks_like_image(path: str) -> bool:
    return os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS


def _read_error(path: str, exc: OSError) -> str:
    if isinstance(exc, FileNotFoundError):
        return "does not exist (a broken link)" if os.path.islink(path) else "does not exist"
    return f"cannot be read: {exc.strerror or exc}"


def _classify_file(path: str, inputs: Inputs) -> None:
    name = display_name(path)
    try:
        with open_regular(path) as fh:
            head = fh.read(HEAD_BYTES)
    except NotRegularFile as exc:
        inputs.add_special(name, f"not a regular file ({exc})")
        return
    except OSError as exc:
        inputs.add_bad(name, _read_error(path, exc))
        return
    if sniff_format(head):
        inputs.add_image(name, path)
    elif _looks_like_image(path):
        inputs.add_bad(name, "zero bytes" if not head else
                       f"not an image (its content is none of {', '.join(FORMATS)})")
    else:
        inputs.skipped.append(name)


def as_items(inputs: Any) -> list[Any]:
    """``inputs`` of ``predict`` as a list: one path or array (a ``[N, H, W, C]`` stack is N
    images) or a sequence or iterable of them."""
    if isinstance(inputs, (str, bytes, os.PathLike)):
        return [inputs]
    if isinstance(inputs, np.ndarray):
        return list(inputs) if inputs.ndim == 4 else [inputs]
    return list(inputs)


def _walk(path: str, inputs: Inputs) -> None:
    def unlisted(exc: OSError) -> None:  # a subfolder that cannot be listed gets its row
        where = os.fsdecode(exc.filename) if exc.filename else path
        inputs.add_bad(display_name(where), _read_error(where, exc))

    for root, dirs, files in os.walk(path, onerror=unlisted):
        dirs.sort()
        for name in sorted(files):
            _classify_file(os.path.join(root, name), inputs)


def collect_inputs(items: Iterable[str | bytes | os.PathLike | np.ndarray]) -> Inputs:
    """Expand files, folders (recursively, in sorted order; links to folders are not
    followed) and arrays into :class:`Inputs`. Nothing is decoded yet."""
    inputs = Inputs()
    n_arrays = 0
    for item in items:
        if not isinstance(item, (str, bytes, os.PathLike)):
            arr = np.asarray(item)
            for a in (arr if arr.ndim == 4 else [arr]):  # a stack [N, H, W, C] is N images
                inputs.add_image(f"<array {n_arrays}>", a)
                n_arrays += 1
            continue
        path = os.fsdecode(item)  # bytes names become str with surrogate escapes
        if os.path.isdir(path):
            _walk(path, inputs)
        else:
            _classify_file(path, inputs)
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


def _too_large(fh: BinaryIO, fmt: str, max_pixels: int) -> str | None:
    """Why the image in ``fh`` is refused before decoding: its header is unreadable, or claims
    more than ``max_pixels`` pixels."""
    try:
        width, height = header_size(fh, fmt)
    except Exception as exc:  # noqa: BLE001 - any failure of a parser on a stranger's bytes
        return f"corrupt (its {fmt} header cannot be read: {type(exc).__name__})"
    return pixel_limit_problem(width, height, max_pixels, "; see --max-pixels")


def _decode(data: bytes) -> np.ndarray:
    import cv2

    from fbench.data.images import UnreadableImage, decode

    try:
        return decode(data, "<bytes>")  # the reason goes in the row, beside the file's name
    except UnreadableImage as exc:
        reason = exc.reason
    except (cv2.error, MemoryError, ValueError) as exc:  # e.g. OpenCV's own pixel limit
        detail = (str(exc).strip().splitlines() or [""])[-1].split("error: ")[-1][:160]
        who = "OpenCV" if isinstance(exc, cv2.error) else type(exc).__name__
        reason = f"cannot be decoded ({who}: {detail})"
    raise FbenchError(reason)


def load_file(path: str, max_pixels: int) -> np.ndarray:
    """One image file as uint8 RGB ``[H, W, 3]``, read once through a descriptor that is
    checked to be a regular file, its header checked against ``max_pixels`` before it is
    decoded; raises :class:`FbenchError` whose ``problem`` is the reason alone."""
    try:
        with open_regular(path) as fh:
            fmt = sniff_format(fh.read(HEAD_BYTES))
            if fmt is None:  # it changed since it was listed
                raise FbenchError(f"not an image (its content is none of {', '.join(FORMATS)})")
            fh.seek(0)
            problem = _too_large(fh, fmt, max_pixels)
            if problem:
                raise FbenchError(problem)
            fh.seek(0)
            data = fh.read()
    except NotRegularFile as exc:
        raise FbenchError(f"not a regular file ({exc})") from None
    except OSError as exc:
        raise FbenchError(_read_error(path, exc)) from None
    return _decode(data)


def load_input(source: str | np.ndarray, max_pixels: int) -> np.ndarray:
    """One entry's image as uint8 RGB ``[H, W, 3]``; raises :class:`FbenchError` whose
    ``problem`` is the reason alone (for the output's ``error`` column)."""
    if isinstance(source, np.ndarray):
        return array_to_rgb(source)
    return load_file(source, max_pixels)
