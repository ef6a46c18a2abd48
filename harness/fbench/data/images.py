"""Decoding manifest rows into batches: OpenCV decode, resize to the detector's input size.

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

import os
from typing import Any

import cv2
import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from fbench.plugins.batch import Batch
from fbench.errors import FbenchError
from fbench.data.manifest import resolve_path


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


def read_image(path: str, size: int | None = None, resample: str = "bilinear") -> np.ndarray:
    """Decode an image file as uint8 RGB, optionally resized to ``size`` x ``size``."""
    img = cv2.imread(path, cv2.IMREAD_UNCHANGED) if os.path.isfile(path) else None
    if img is None:
        reason = "does not exist" if not os.path.exists(path) else "cannot be decoded"
        raise FbenchError(f"image {path} {reason}.",
                          "replace or remove the file, or rebuild the dataset.")
    img = to_uint8_rgb(img, path)
    return img if size is None else resize_square(img, size, resample)


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


def read_mask(path: str, size: int) -> np.ndarray:
    """A mask file as float32 ``[size, size]`` in {0, 1} (any non-dark pixel is forged)."""
    m = cv2.imread(path, cv2.IMREAD_GRAYSCALE) if os.path.isfile(path) else None
    if m is None:
        raise FbenchError(f"mask {path} cannot be read.", "replace it or rebuild the dataset.")
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
