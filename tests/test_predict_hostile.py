"""`fbench predict` on strangers' folders: a name that is not UTF-8 (which crashed OpenCV), a
FIFO named like an image (which hung the walk), a few bytes claiming a 40000 x 40000 image
(which reached the decoder), a decoder error (which ended the batch), markup and escape codes in
names (printed raw), and an output path in a run directory or on an existing file (which was
overwritten). Each test reproduces the fault; each now ends in one row or one refusal."""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

import fbench
from fbench.cli import cli

pytestmark = pytest.mark.filterwarnings("ignore:run .* collapsed:UserWarning")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, module_env):
    """One tiny stored run (built-in detector, 32 px, one epoch) shared by the module."""
    return fbench.run(detector="resnet18", dataset="synthetic", epochs=1, input_size=32,
                      batch_size=32, dataset_options={"n_per_class": 8, "image_size": 32},
                      out=str(tmp_path_factory.mktemp("runs")))


def _png(h: int = 32, w: int = 32, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    ok, buf = cv2.imencode(".png", rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    assert ok
    return buf.tobytes()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


def _huge_png_header(width: int = 40000, height: int = 40000) -> bytes:
    """A whole-looking PNG (signature, IHDR, a short IDAT, IEND) of 74 bytes whose header
    claims ``width`` x ``height`` RGB pixels: OpenCV would allocate for that before failing."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    data = (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr)
            + _chunk(b"IDAT", zlib.compress(bytes(range(9)), 9)) + _chunk(b"IEND", b""))
    assert len(data) == 74
    return data


def _broken_png() -> bytes:
    """A 32 x 32 PNG whose header reads and whose end marker is there, but whose pixel data is
    garbage: only decoding finds out."""
    ihdr = struct.pack(">IIBBBBB", 32, 32, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", b"garbage" * 9)
            + _chunk(b"IEND", b""))


class Hung(Exception):  # not an OSError: the reader's own `except OSError` must not eat it
    pass


@contextlib.contextmanager
def _fails_instead_of_hanging(seconds: int = 300):
    """A blocked open (a FIFO without a writer) would wait forever; SIGALRM interrupts the
    system call and turns the hang into a test failure. Not a timing decision: the bound is
    minutes, the work seconds."""
    def hung(*_: object) -> None:
        raise Hung("predict blocked (it opened a FIFO)")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _by_name(df: pd.DataFrame) -> dict[str, pd.Series]:
    return {os.path.basename(p): row for p, (_, row) in zip(df["path"], df.iterrows(),
                                                              strict=True)}


# -- 1. names that are not UTF-8 ----------------------------------------------------------------

def test_a_name_that_is_not_utf8_is_scored_and_the_csv_is_written(tiny_run, tmp_path):
    """OpenCV's haveImageReader segfaulted on such a name (the whole command died): run the CLI
    in a child process, so a regression fails this test instead of killing pytest."""
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "good.png").write_bytes(_png(seed=1))
    raw = os.fsencode(folder)
    for name, data in ((b"bad\xff.png", _png(seed=2)),
                       # a readable header, then garbage: the decoder's error path, which asks
                       # OpenCV about the file's name, is taken
                       (b"worse\xfe.png", _broken_png())):
        fd = os.open(raw + b"/" + name, os.O_WRONLY | os.O_CREAT, 0o644)
        os.write(fd, data)
        os.close(fd)
    out = tmp_path / "scores.csv"
    res = subprocess.run(
        [sys.executable, "-m", "fbench", "predict", str(tiny_run.path), str(folder),
         raw + b"/bad\xff.png", "-o", str(out), "--threshold", "0.5", "--no-progress"],
        capture_output=True, text=True, errors="backslashreplace", timeout=600)
    assert res.returncode == 0, (res.returncode, res.stdout, res.stderr)
    df = pd.read_csv(out, keep_default_na=False)  # valid UTF-8: the names are escaped
    rows = _by_name(df)
    assert set(rows) == {"bad\\xff.png", "good.png", "worse\\xfe.png"}
    assert list(df["status"]) == ["scored", "scored", "error", "scored"]
    assert rows["worse\\xfe.png"]["error"].startswith("corrupt")
    # the file given by its bytes scores as the same file found in the folder
    probs = df.filter(like="prob_").loc[[0, 3]].to_numpy(dtype=float)
    np.testing.assert_allclose(probs[0], probs[1], atol=1e-6)
    assert "worse\\xfe.png" in res.stderr.replace("\n", "")  # rich folds long lines


def test_formats_are_recognised_by_their_bytes_not_their_names(tiny_run, tmp_path):
    """Each format fbench reads scores under a name that says nothing; a text file that starts
    like a BMP ("BM...") is no image."""
    import io

    from PIL import Image

    rgb = np.random.default_rng(13).integers(0, 256, (24, 20, 3), dtype=np.uint8)
    for ext in (".png", ".jpg", ".bmp", ".tif", ".webp", ".ppm", ".pgm", ".ras"):
        ok, buf = cv2.imencode(ext, rgb[:, :, 0] if ext == ".pgm" else rgb)
        assert ok
        (tmp_path / f"file{ext.replace('.', '_')}.dat").write_bytes(buf.tobytes())
    gif = io.BytesIO()
    Image.fromarray(rgb).save(gif, "GIF")
    (tmp_path / "z_gif.dat").write_bytes(gif.getvalue())
    (tmp_path / "notes.dat").write_text("BMW service notes, 2019\n" * 3)
    df = tiny_run.predict(tmp_path, threshold=0.5)
    rows = _by_name(df)
    assert df.attrs["skipped"] == [str(tmp_path / "notes.dat")] and "notes.dat" not in rows
    assert all(rows[n]["status"] == "scored" for n in rows if n != "z_gif.dat"), df
    # GIF: this OpenCV build may lack the decoder; then the row says so
    gif_row = rows["z_gif.dat"]
    assert gif_row["status"] == "scored" or gif_row["error"] == (
        "a GIF that OpenCV cannot decode (corrupt, or unsupported by this build)")


# -- 2. FIFOs, sockets and devices --------------------------------------------------------------

def test_a_fifo_named_like_an_image_is_skipped_without_being_opened(tiny_run, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "a.png").write_bytes(_png(seed=3))
    os.mkfifo(folder / "x.png")
    (folder / "link.png").symlink_to(folder / "x.png")
    with _fails_instead_of_hanging():
        df = tiny_run.predict([folder, folder / "x.png"], threshold=0.5)
    assert [os.path.basename(p) for p in df["path"]] == ["a.png", "link.png", "x.png", "x.png"]
    assert list(df["status"]) == ["scored", "skipped", "skipped", "skipped"]
    assert set(df["error"][1:]) == {"not a regular file (a FIFO (named pipe))"}
    assert df["pred"][1:].isna().all() and df.attrs["skipped"] == []

    out = tmp_path / "scores.csv"
    with _fails_instead_of_hanging():
        res = CliRunner().invoke(cli, ["predict", str(tiny_run.path), str(folder), "-o",
                                       str(out), "--threshold", "0.5", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "skipped: " in res.output and "FIFO" in res.output
    assert list(pd.read_csv(out)["status"]) == ["scored", "skipped", "skipped"]


def test_a_device_given_by_path_is_not_read(tiny_run, tmp_path):
    """/dev/zero never ends: reading it whole (after a name check) would fill memory."""
    if not os.path.exists("/dev/zero"):
        pytest.skip("no /dev/zero here")
    (tmp_path / "a.png").write_bytes(_png(seed=4))
    df = tiny_run.predict(["/dev/zero", tmp_path / "a.png"], threshold=0.5)
    assert list(df["status"]) == ["skipped", "scored"]
    assert df["error"][0] == "not a regular file (a character device)"


# -- 3. sizes and decoder errors ------------------------------------------------------------

def test_a_huge_header_is_one_row_and_the_batch_goes_on(tiny_run, tmp_path):
    """74 bytes claiming 40000 x 40000 pixels reached OpenCV, whose cv2.error ended the
    batch (a claim under OpenCV's own 1-gigapixel limit is decoded: gigabytes)."""
    (tmp_path / "huge.png").write_bytes(_huge_png_header())
    (tmp_path / "good.png").write_bytes(_png(seed=5))
    (tmp_path / "lies.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)
    df = tiny_run.predict([tmp_path / "huge.png", tmp_path / "good.png",
                           tmp_path / "lies.png"], threshold=0.5)
    assert list(df["status"]) == ["error", "scored", "error"]
    assert df["error"][0] == ("too large (40000x40000 = 1600 MP, limit 64 MP; see "
                              "--max-pixels)")
    assert df["error"][2].startswith("corrupt (its PNG header cannot be read")


def test_max_pixels_is_an_option_and_the_csv_is_written_when_nothing_scores(tiny_run,
                                                                           tmp_path):
    (tmp_path / "a.png").write_bytes(_png(32, 32, seed=6))  # 1024 pixels
    (tmp_path / "small.png").write_bytes(_png(16, 16, seed=7))  # 256 pixels
    out = tmp_path / "scores.csv"
    args = ["predict", str(tiny_run.path), str(tmp_path / "a.png"), str(tmp_path / "small.png"),
            "--threshold", "0.5", "--no-progress", "-o", str(out)]
    res = CliRunner().invoke(cli, [*args, "--max-pixels", "1000"])
    assert res.exit_code == 0, res.output
    df = pd.read_csv(out, keep_default_na=False)
    assert list(df["status"]) == ["error", "scored"]
    assert df["error"][0] == ("too large (32x32 = 1,024 pixels, limit 1,000 pixels; see "
                              "--max-pixels)")
    res = CliRunner().invoke(cli, [*args, "--max-pixels", "100", "--force"])
    assert res.exit_code == 2 and "no image was scored (2 bad file(s)" in res.output
    assert list(pd.read_csv(out)["status"]) == ["error", "error"]  # the reasons are written


def test_a_decoder_error_is_one_row(tiny_run, tmp_path, monkeypatch):
    """Whatever the decoder raises for one file (here the cv2.error OpenCV raises above its
    pixel limit) is that file's row; the others are scored."""
    import fbench.data.images as images

    real = images.decode
    sick = _png(seed=8)

    def decode(data: bytes, name: str = "<bytes>") -> np.ndarray:
        if data == sick:
            raise cv2.error("OpenCV(4) loadsave.cpp:79: error: (-215:Assertion failed) "
                            "pixels <= CV_IO_MAX_IMAGE_PIXELS")
        return real(data, name)

    monkeypatch.setattr(images, "decode", decode)
    (tmp_path / "a.png").write_bytes(sick)
    (tmp_path / "b.png").write_bytes(_png(seed=9))
    df = tiny_run.predict(tmp_path, threshold=0.5)
    assert list(df["status"]) == ["error", "scored"]
    assert df["error"][0] == ("cannot be decoded (OpenCV: (-215:Assertion failed) pixels <= "
                              "CV_IO_MAX_IMAGE_PIXELS)")


def test_names_are_printed_literally(tiny_run, tmp_path):
    """A name holding rich markup or a terminal escape sequence is shown as text."""
    (tmp_path / "[bold]a\x1b[2J.png").write_bytes(b"not an image")
    (tmp_path / "b.png").write_bytes(_png(seed=10))
    res = CliRunner().invoke(cli, ["predict", str(tiny_run.path), str(tmp_path), "-o",
                                   str(tmp_path / "o.csv"), "--threshold", "0.5",
                                   "--no-progress"])
    assert res.exit_code == 0, res.output
    shown = res.output.replace("\n", "")  # rich folds long lines
    assert "\x1b" not in shown and "[bold]a\\x1b[2J.png" in shown


# -- 4. where the output goes -------------------------------------------------------------------

@pytest.fixture
def no_model():
    """Loading the model fails (until ``.undo()``): refusals must come before it."""
    import fbench.use.predict as predict

    def refuse(*_: object) -> None:
        raise AssertionError("the model was loaded before the output was checked")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(predict, "_load_model", refuse)
        yield mp


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _refused(args: list[str]) -> str:
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 2, res.output
    line = res.output.strip()
    assert "\n" not in line and line.startswith("Error: ") and " Fix: " in line
    return line


def test_output_inside_a_run_directory_is_refused(tiny_run, tmp_path, no_model):
    (tmp_path / "a.png").write_bytes(_png(seed=11))
    stored = tiny_run.path / "predictions.parquet"
    before = _digest(stored)
    other = tmp_path / "other-run"  # any run, not only the one given
    other.mkdir()
    (other / "config.json").write_text("{}")
    (other / "status.json").write_text("{}")
    (tmp_path / "link.parquet").symlink_to(stored)  # a link into the run is no way round
    base = ["predict", str(tiny_run.path), str(tmp_path / "a.png"), "--no-progress"]
    for target, force in ((stored, []), (stored, ["--force"]),
                          (tiny_run.path / "sub" / "x.csv", []), (other / "deep" / "x.csv", []),
                          (tmp_path / "link.parquet", ["--force"])):
        line = _refused([*base, "-o", str(target), *force])
        assert "inside run directory" in line and "outside the run" in line
    line = _refused([*base, "-o", str(tmp_path / "x.csv"), "--masks",
                     str(tiny_run.path / "masks")])
    assert "masks directory" in line
    assert _digest(stored) == before
    assert not (tmp_path / "x.csv").exists()


def test_an_existing_output_needs_force(tiny_run, tmp_path, no_model):
    (tmp_path / "a.png").write_bytes(_png(seed=12))
    out = tmp_path / "mine.csv"
    out.write_text("precious\n")
    base = ["predict", str(tiny_run.path), str(tmp_path / "a.png"), "--threshold", "0.5",
            "--no-progress", "-o"]
    assert "--force" in _refused([*base, str(out)])
    assert out.read_text() == "precious\n"
    (tmp_path / "d.csv").mkdir()
    assert "is a directory" in _refused([*base, str(tmp_path / "d.csv"), "--force"])
    no_model.undo()  # the model may load now
    res = CliRunner().invoke(cli, [*base, str(out), "--force"])
    assert res.exit_code == 0, res.output
    assert list(pd.read_csv(out)["status"]) == ["scored"]
