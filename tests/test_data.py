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


def _jpeg(seed: int, size: int) -> bytes:
    img = np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)
    return cv2.imencode(".jpg", img)[1].tobytes()


def test_the_truncation_rule_accepts_trailers_and_refuses_cut_files(tmp_path):
    """One rule (preflight, predict and the reader): an end marker within 64 KiB of the end
    is whole, trailer or not; a file cut before it is truncated, even when an EXIF
    thumbnail in its header carries an end marker of its own."""
    from fbench.data.images import UnreadableImage, truncation_reason

    whole = _jpeg(0, 32)
    app1 = b"Exif\0\0" + _jpeg(1, 8)  # a thumbnail, with its own end-of-image marker
    thumbed = whole[:2] + b"\xff\xe1" + (len(app1) + 2).to_bytes(2, "big") + app1 + whole[2:]
    ok, png = cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))
    png = png.tobytes()
    cases = {
        "camera.jpg": (whole + bytes(range(140)), None),  # a camera's 140-byte trailer
        "long-trailer.jpg": (whole + b"\x00" * 20_000, None),
        "thumbed.jpg": (thumbed, None),
        "cut.jpg": (whole[:-40], "JPEG"),
        "thumbed-cut.jpg": (thumbed[:-40], "JPEG"),
        "trailer.png": (png + b"tool data" * 20, None),
        "cut.png": (png[:-30], "PNG"),
    }
    for name, (data, expected) in cases.items():
        (tmp_path / name).write_bytes(data)
        reason = truncation_reason(tmp_path / name)
        if expected is None:
            assert reason is None, name
            assert read_image(str(tmp_path / name)).shape[2] == 3
        else:
            assert reason == f"truncated (the {expected} ends before its " + (
                "IEND chunk)" if expected == "PNG" else "end-of-image marker)"), name
            with pytest.raises(UnreadableImage, match=f"{name} cannot be decoded: truncated"):
                read_image(str(tmp_path / name))
    np.testing.assert_array_equal(read_image(str(tmp_path / "camera.jpg")),
                                  cv2.imdecode(np.frombuffer(whole, np.uint8),
                                               cv2.IMREAD_COLOR)[:, :, ::-1])
