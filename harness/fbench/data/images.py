"""Reading images, and decoding manifest rows into batches: THE image reader of fbench
(:func:`read_image`, :func:`decode`: OpenCV, to uint8 RGB) with THE truncation rule
(:func:`truncation_reason`), the resize to the detector's input size, the dataset and collate.

The resize is antialiased bilinear by default (PIL's, which torchvision's
``resize(antialias=True)`` and the thesis's pipeline match within one grey level); OpenCV's
``INTER_AREA`` stays available as ``area``. The resampler matters for forgery detection: the
sources have class-dependent native sizes, and the resampler decides how much of their
high-frequency content survives, which is the very cue frequency detectors learn.

Images reach the engine as uint8 ``[B, 3, S, S]``; the transform (on the model's device) turns
them into model input. Masks follow the thesis convention when a row has no mask file: all-zero
for real images, all-one for generated images; an edited image without a mask is marked
``has_mask=False`` and is left out of mask losses and Dice.
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import cv2
import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from fbench.data.manifest import resolve_path
from fbench.errors import FbenchError
from fbench.plugins.batch import Batch


def to_uint8_rgb(img: np.ndarray, path: str = "<array>") -> np.ndarray:
    """Any decoded image (gray, BGR, BGRA, 8/16-bit, float) as uint8 RGB ``[H, W, 3]``."""
    if img.dtype == np.uint16:
        img = (img / 257.0).round().astype(np.uint8)
    elif img.dtype in (np.float32, np.float64):
        img = np.clip(img * (255.0 if img.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
    elif img.dtype != np.uint8:
        raise FbenchError(f"{path}: unsupported pixel type {img.dtype}.",
                          "convert the image to 8- or 16-bit PNG/JPEG.")
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    if img.ndim == 3 and img.shape[2] == 1:
        return cv2.cvtColor(img[:, :, 0], cv2.COLOR_GRAY2RGB)
    if img.ndim == 3 and img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
    if img.ndim == 3 and img.shape[2] == 3:
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    raise FbenchError(f"{path}: unsupported image shape {img.shape}.")


RESAMPLERS = ("bilinear", "area")
"""How images are resized to the model input: ``bilinear`` (antialiased, the default) or
``area`` (OpenCV INTER_AREA, fbench's only resampler before it became a setting)."""
LEGACY_RESAMPLER = "area"
"""The resampler of runs stored before the resampler was recorded."""


def stored_resampler(config: dict[str, Any]) -> str:
    """The resampler a stored run was trained with (``area`` for runs older than the
    setting), so predictions on new images see the pixels the model was trained on."""
    return str(config.get("resample", LEGACY_RESAMPLER))


def check_resampler(name: str) -> str:
    if name not in RESAMPLERS:
        raise FbenchError(f"unknown resampler {name!r}.",
                          f"use one of: {', '.join(RESAMPLERS)}.")
    return name


def resize_square(img: np.ndarray, size: int, resample: str = "bilinear") -> np.ndarray:
    """uint8 RGB ``[H, W, 3]`` to ``size`` x ``size``. Training, evaluation and
    ``fbench predict`` all resize through here, so they see the same pixels.

    ``bilinear``: PIL's bilinear filter, whose support widens with the scale factor when
    shrinking (antialiased, like torchvision's ``resize(antialias=True)``); ``area``: OpenCV
    INTER_AREA when shrinking, INTER_LINEAR when growing."""
    if img.shape[:2] == (size, size):
        return img
    if resample == "bilinear":
        from PIL import Image

        return np.array(Image.fromarray(np.ascontiguousarray(img))
                          .resize((size, size), Image.Resampling.BILINEAR))
    check_resampler(resample)
    interp = cv2.INTER_AREA if min(img.shape[:2]) > size else cv2.INTER_LINEAR
    return cv2.resize(img, (size, size), interpolation=interp)


# -- the one image reader ----------------------------------------------------------------------
TAIL_WINDOW = 64 * 1024
"""How far from a file's end its end marker may sit. Cameras and editors append trailers after
a JPEG's end-of-image marker (maker notes, a second preview, a motion-photo index) and tools
append data after a PNG's IEND chunk; such a file is whole. A truncated file has no end
marker at all (a decoder may still return an image from it, grey below the cut)."""

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_PNG_END = b"IEND\xaeB`\x82"  # the IEND chunk's type and its fixed CRC
_JPEG_MAGIC = b"\xff\xd8\xff"
_JPEG_END = b"\xff\xd9"
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})  # markers without a length field
_MAX_SEGMENTS = 4096


def _jpeg_scan_start(fh: BinaryIO, size: int) -> int | None:
    """Offset of a JPEG's first start-of-scan marker, found by walking the header segments
    (``size`` when the file ends inside its header; None when the header cannot be walked).
    An EXIF thumbnail inside an APP segment has an end marker of its own: only an end marker
    after the scan starts says the main image is whole."""
    pos = 2
    for _ in range(_MAX_SEGMENTS):
        fh.seek(pos)
        head = fh.read(4)
        if len(head) < 4:
            return size
        if head[0] != 0xFF:
            return None
        marker = head[1]
        if marker == 0xDA:
            return pos
        if marker == 0xFF:  # a fill byte before a marker
            pos += 1
        elif marker in _JPEG_STANDALONE:
            pos += 2
        else:
            pos += 2 + int.from_bytes(head[2:4], "big")
    return None


def _truncation(fh: BinaryIO, size: int) -> str | None:
    fh.seek(0)
    head = fh.read(len(_PNG_MAGIC))
    if head.startswith(_PNG_MAGIC):
        fh.seek(max(0, size - TAIL_WINDOW))
        if _PNG_END not in fh.read():
            return "truncated (the PNG ends before its IEND chunk)"
    elif head.startswith(_JPEG_MAGIC):
        scan = _jpeg_scan_start(fh, size)
        fh.seek(max(size - TAIL_WINDOW, scan or 0))
        if _JPEG_END not in fh.read():
            return "truncated (the JPEG ends before its end-of-image marker)"
    return None


def truncation_reason(path: str | os.PathLike) -> str | None:
    """Why a PNG or JPEG file stops early (None when it is whole, or another format): THE
    truncation rule of fbench, which the preflight of a run, ``fbench predict`` and
    :func:`read_image` all apply. The format's end marker (PNG IEND, JPEG end-of-image after
    the scan data) must lie within :data:`TAIL_WINDOW` bytes of the end."""
    with open(path, "rb") as fh:
        return _truncation(fh, os.fstat(fh.fileno()).st_size)


class UnreadableImage(FbenchError):
    """An image that cannot be used; ``reason`` says why in a few words (``zero bytes``,
    ``truncated (...)``, ``corrupt (...)``, ``does not exist``), for reports that name it."""

    def __init__(self, name: str, reason: str) -> None:
        self.reason = reason
        verb = "" if reason.startswith(("does not exist", "cannot be read")) \
            else "cannot be decoded: "
        super().__init__(f"image {name} {verb}{reason}.",
                         "replace or remove the file, or rebuild the dataset.")


@contextlib.contextmanager
def _quiet_opencv() -> Iterator[None]:
    """OpenCV prints a warning per broken file; the reason goes into the error instead."""
    if not hasattr(cv2, "setLogLevel"):  # pragma: no cover - older OpenCV builds
        yield
        return
    level = cv2.getLogLevel()
    cv2.setLogLevel(0)  # 0 is LOG_LEVEL_SILENT
    try:
        yield
    finally:
        cv2.setLogLevel(level)


FORMATS = {  # fbench's name: Pillow's name (Pillow reads the header that a pixel limit checks)
    "PNG": "PNG", "JPEG": "JPEG", "BMP": "BMP", "TIFF": "TIFF", "WebP": "WEBP", "GIF": "GIF",
    "PNM": "PPM", "JPEG 2000": "JPEG2000", "Sun raster": "SUN",
}
"""The formats recognised by their signature. Formats whose header Pillow cannot read (EXR,
Radiance HDR, PFM, PAM, AVIF) are left out: their size could only be learnt by decoding them."""

_SIGNATURES = (
    (_PNG_MAGIC, "PNG"), (_JPEG_MAGIC, "JPEG"), (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"), (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"), (b"II+\x00", "TIFF"),
    (b"MM\x00+", "TIFF"), (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "JPEG 2000"),
    (b"\xff\x4f\xff\x51", "JPEG 2000"), (b"\x59\xa6\x6a\x95", "Sun raster"),
)
_BMP_INFO_SIZES = frozenset({12, 16, 40, 52, 56, 64, 108, 124})  # the DIB header versions
HEAD_BYTES = 32
"""How many leading bytes :func:`sniff_format` needs."""


def sniff_format(head: bytes) -> str | None:
    """The image format whose signature ``head`` (a file's first :data:`HEAD_BYTES` bytes)
    starts with, or None."""
    for magic, name in _SIGNATURES:
        if head.startswith(magic):
            return name
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    # "BM" alone starts many text files ("BMW ..."): the DIB header size must be a real one
    if head[:2] == b"BM" and int.from_bytes(head[14:18], "little") in _BMP_INFO_SIZES:
        return "BMP"
    if len(head) > 2 and head[:1] == b"P" and head[1:2] in b"123456" and head[2] in b" \t\r\n":
        return "PNM"
    return None


def header_size(source: str | os.PathLike | BinaryIO, fmt: str | None = None) -> tuple[int, int]:
    """``(width, height)`` from an image's header: Pillow decodes nothing on open, so a few
    bytes claiming 40000 x 40000 pixels cost nothing here. ``fmt`` (a :data:`FORMATS` key)
    restricts the parser. Raises whatever Pillow raises on a header it cannot read. Pillow's
    own decompression-bomb limit is lifted for the call: callers apply fbench's
    (:func:`pixel_limit_problem`), with a message."""
    from PIL import Image

    limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        with warnings.catch_warnings():  # Pillow's complaints about odd metadata: not ours
            warnings.simplefilter("ignore")
            with Image.open(source, formats=[FORMATS[fmt]] if fmt else None) as im:
                return int(im.width), int(im.height)
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def _pixels(n: int) -> str:
    return f"{n / 1e6:.0f} MP" if n >= 10_000_000 else f"{n:,} pixels"


def pixel_limit_problem(width: int, height: int, max_pixels: int, hint: str = "") -> str | None:
    """``too large (WxH = N MP, limit M MP<hint>)`` above ``max_pixels``, else None: the one
    wording of the pixel limit, for ``fbench run``'s pre-run check and ``fbench predict``."""
    if width * height <= max_pixels:
        return None
    return (f"too large ({width}x{height} = {_pixels(width * height)}, limit "
            f"{_pixels(max_pixels)}{hint})")


OPENCV_UNREADABLE = frozenset({"GIF"})
"""Recognised formats that OpenCV builds often cannot decode at all (so a failure to decode one
does not mean the file is corrupt)."""


def _decode_raw(data: bytes, name: str, flags: int) -> np.ndarray:
    if not data:
        raise UnreadableImage(name, "zero bytes")
    truncated = _truncation(io.BytesIO(data), len(data))
    if truncated:
        raise UnreadableImage(name, truncated)
    with _quiet_opencv():
        img = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    if img is None:
        # judged from the bytes: OpenCV's haveImageReader opens the *name*, and crashes on a
        # name that is not valid UTF-8
        fmt = sniff_format(data[:HEAD_BYTES])
        reason = ("not an image OpenCV can decode" if fmt is None
                  else f"a {fmt} that OpenCV cannot decode (corrupt, or unsupported by this "
                  "build)" if fmt in OPENCV_UNREADABLE
                  else "corrupt (OpenCV recognises the format but cannot decode it)")
        raise UnreadableImage(name, reason)
    return img


def decode(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """An encoded image (the bytes of a PNG, JPEG, ... file) as uint8 RGB ``[H, W, 3]``, the
    way training sees it: OpenCV ``IMREAD_UNCHANGED``, then gray, BGRA and 16-bit to 8-bit RGB.
    Raises :class:`UnreadableImage` (truncated by :func:`truncation_reason`'s rule, corrupt,
    empty, or of a pixel type fbench does not take)."""
    img = _decode_raw(data, name, cv2.IMREAD_UNCHANGED)
    try:
        return to_uint8_rgb(img, name)
    except FbenchError as exc:
        raise UnreadableImage(name, exc.problem.removeprefix(f"{name}: ")) from None


def _read_bytes(path: str | os.PathLike) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise UnreadableImage(os.fspath(path), "does not exist") from None
    except OSError as exc:
        raise UnreadableImage(os.fspath(path), f"cannot be read: {exc.strerror or exc}") from None


def read_image(path: str | os.PathLike, size: int | None = None,
               resample: str = "bilinear") -> np.ndarray:
    """THE image reader of fbench (public as ``fbench.read_image``; training, evaluation,
    predict, the probe and plots read through it): a file as uint8 RGB ``[H, W, 3]``,
    optionally resized to ``size`` x ``size`` with :func:`resize_square`. Raises
    :class:`UnreadableImage` naming the file and the reason."""
    name = os.fspath(path)
    img = decode(_read_bytes(path), name)
    return img if size is None else resize_square(img, size, resample)


def read_gray(path: str | os.PathLike) -> np.ndarray:
    """A file as one uint8 channel ``[H, W]`` (OpenCV's own grayscale decode), through the same
    checks as :func:`read_image`: masks and perceptual hashes read it."""
    name = os.fspath(path)
    return _decode_raw(_read_bytes(path), name, cv2.IMREAD_GRAYSCALE)


def read_mask(path: str, size: int) -> np.ndarray:
    """A mask file as float32 ``[size, size]`` in {0, 1} (any non-dark pixel is forged)."""
    try:
        m = read_gray(path)
    except UnreadableImage as exc:
        raise FbenchError(f"mask {path} cannot be read ({exc.reason}).",
                          "replace it or rebuild the dataset.") from None
    if m.shape != (size, size):
        m = cv2.resize(m, (size, size), interpolation=cv2.INTER_NEAREST)
    return (m > 127).astype(np.float32)


class ManifestDataset(Dataset):
    """Rows of a manifest as samples: ``image`` uint8 ``[3, S, S]``, ``label``, ``mask``, and
    ``landmarks`` ``[K, 2]`` when the manifest carries them (columns ``landmarks`` and
    ``landmarks_found``, attached by :mod:`fbench.data.landmarks` for detectors that need them)."""

    def __init__(self, manifest: pd.DataFrame, input_size: int, with_masks: bool = False,
                 cache: bool = False, resample: str = "bilinear") -> None:
        self.manifest = manifest
        # the manifest row of each sample, so predictions can be joined back to their rows
        self.row_ids = manifest.index.to_numpy()
        self.paths = [resolve_path(manifest, p) for p in manifest["path"]]
        self.mask_paths = [resolve_path(manifest, p) if p else "" for p in manifest["mask"]]
        self.labels = manifest["label"].to_numpy(dtype=np.int64)
        self.input_size = int(input_size)
        self.resample = check_resampler(resample)
        self.with_masks = with_masks
        self.landmarks: np.ndarray | None = None  # [N, K, 2] float32 in [0, 1]
        self.landmarks_found: np.ndarray | None = None  # [N] bool
        if {"landmarks", "landmarks_found"} <= set(manifest.columns) and len(manifest):
            self.landmarks = np.stack(manifest["landmarks"].to_list()).astype(np.float32)
            self.landmarks_found = manifest["landmarks_found"].to_numpy(dtype=bool)
        self._cache: dict[int, dict[str, Any]] | None = {} if cache else None

    def __len__(self) -> int:
        return len(self.paths)

    def _load(self, i: int) -> dict[str, Any]:
        s = self.input_size
        image = read_image(self.paths[i], s, self.resample)
        sample: dict[str, Any] = {
            "image": torch.from_numpy(image).permute(2, 0, 1).contiguous(),
            "label": int(self.labels[i]),
            "index": i,
        }
        if self.with_masks:
            if self.mask_paths[i]:
                mask, known = read_mask(self.mask_paths[i], s), True
            elif self.labels[i] in (0, 1):
                mask, known = np.full((s, s), float(self.labels[i]), np.float32), True
            else:
                mask, known = np.zeros((s, s), np.float32), False
            sample["mask"] = torch.from_numpy(mask)[None]
            sample["has_mask"] = known
        if self.landmarks is not None:
            sample["landmarks"] = torch.from_numpy(self.landmarks[i])
            sample["landmarks_found"] = bool(self.landmarks_found[i])
        return sample

    def __getitem__(self, i: int) -> dict[str, Any]:
        if self._cache is None:
            return self._load(i)
        if i not in self._cache:
            self._cache[i] = self._load(i)
        return self._cache[i]


def collate(samples: list[dict[str, Any]]) -> Batch:
    """Stack samples into a :class:`Batch` holding uint8 images (not yet transformed)."""
    batch = Batch(
        images=torch.stack([s["image"] for s in samples]),
        labels=torch.tensor([s["label"] for s in samples], dtype=torch.long),
        index=torch.tensor([s["index"] for s in samples], dtype=torch.long),
    )
    if "mask" in samples[0]:
        batch.masks = torch.stack([s["mask"] for s in samples])
        batch.has_mask = torch.tensor([s["has_mask"] for s in samples], dtype=torch.bool)
    if "landmarks" in samples[0]:
        batch.landmarks = torch.stack([s["landmarks"] for s in samples])
        batch.landmarks_found = torch.tensor([s["landmarks_found"] for s in samples],
                                             dtype=torch.bool)
    return batch
