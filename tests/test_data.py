"""Decoding: every image a user may have becomes uint8 RGB, or a clear error naming it."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from fbench import FbenchError
from fbench.data.images import read_image, read_mask


def test_gray_rgba_and_16bit_are_converted(tmp_path):
    gray = np.full((10, 12), 100, np.uint8)
    cv2.imwrite(str(tmp_path / "g.png"), gray)
    bgra = np.zeros((10, 12, 4), np.uint8)
    bgra[..., 2] = 200  # red in BGR order
    cv2.imwrite(str(tmp_path / "a.png"), bgra)
    deep = np.full((10, 12, 3), 65535, np.uint16)
    cv2.imwrite(str(tmp_path / "d.png"), deep)
    assert read_image(str(tmp_path / "g.png")).shape == (10, 12, 3)
    rgb = read_image(str(tmp_path / "a.png"))
    assert rgb.shape == (10, 12, 3) and rgb[0, 0].tolist() == [200, 0, 0]
    assert read_image(str(tmp_path / "d.png"), size=8).max() == 255
    assert read_image(str(tmp_path / "d.png"), size=8).shape == (8, 8, 3)


def test_unreadable_image_names_the_file(tmp_path):
    bad = tmp_path / "truncated.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 10)
    with pytest.raises(FbenchError, match="truncated.png cannot be decoded"):
        read_image(str(bad))
    with pytest.raises(FbenchError, match="nope.png does not exist"):
        read_image(str(tmp_path / "nope.png"))


def test_masks_are_binary_at_the_requested_size(tmp_path):
    m = np.zeros((20, 20), np.uint8)
    m[5:15, 5:15] = 255
    cv2.imwrite(str(tmp_path / "m.png"), m)
    out = read_mask(str(tmp_path / "m.png"), 10)
    assert out.shape == (10, 10) and set(np.unique(out)) == {0.0, 1.0}
