"""Preparation of the thesis's sources: FaceForensics++ frame extraction (seeded, resumable,
grouped by video, all-or-nothing per video, clear errors for bad inputs), the FFHQ person crop
with mediapipe selfie segmentation, and the GAN folder check. One test of each runs the real
mediapipe model on a real face photograph; the others use a drawn marker as the face."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from thesis_fixtures import (
    CROP,
    MarkerDetector,
    grace_hopper,
    make_ffpp_videos,
    write_images,
    write_video,
)

from fbench import FbenchError
from fbench.cli import cli
from fbench_thesis.commands import add_commands
from fbench_thesis.ffhq import GRAY, crop_person, prepare_ffhq
from fbench_thesis.ffpp import PARTIAL, prepare_ffpp, sample_frames
from fbench_thesis.gan import check_gan


def _text(result) -> str:
    """The command's output with rich's line wrapping undone."""
    return " ".join(result.output.split())


@pytest.fixture
def runner() -> CliRunner:
    add_commands(cli)  # what `fbench` does at start through the register_commands hook
    return CliRunner()


def _prepare(videos, out, **kw):
    if "every" not in kw:
        kw.setdefault("per_video", 4)
    kw.setdefault("detector", MarkerDetector())
    return prepare_ffpp(videos, out, progress=False, **kw)


# ------------------------------------------------------------------------ FaceForensics++


def test_frames_are_cropped_with_their_masks_and_remember_their_video(tmp_path):
    videos, _ = make_ffpp_videos(tmp_path / "ff", "Face2Face", n_videos=3, n_frames=10)
    out = tmp_path / "face2face"
    summary = _prepare(videos, out)  # the mask folder is found beside, as FF++ lays it out
    index = pd.read_parquet(out / "index.parquet")
    assert summary["frames"] == len(index) == 12 and summary["videos"] == 3
    assert list(index.groupby("video").size()) == [4, 4, 4]
    for r in index.itertuples():
        img = cv2.imread(str(out / r.image))
        mask = cv2.imread(str(out / r.mask), cv2.IMREAD_GRAYSCALE)
        assert img.shape[:2] == mask.shape == (r.h, r.w) == (CROP, CROP)
        assert r.width == r.w and r.video_frames == 10
        assert set(np.unique(mask)) <= {0, 255} and mask.max() == 255  # the forged box
        assert mask[:4, :4].max() == 0  # outside it
        assert img[:3, :3].mean() > 200  # the crop starts at the marker ("the face")
    assert not (out / PARTIAL).exists()


def test_sampling_is_seeded_per_video():
    a = sample_frames(300, "000_003", seed=0, per_video=30)
    assert a == sample_frames(300, "000_003", seed=0, per_video=30)
    assert a != sample_frames(300, "000_003", seed=1, per_video=30)
    assert a != sample_frames(300, "001_870", seed=0, per_video=30)  # not one pattern for all
    assert len(a) == 30 and a == sorted(set(a))
    assert sample_frames(10, "x", 0, per_video=30) == list(range(10))
    every = sample_frames(100, "000_003", seed=0, every=20)
    assert len(every) == 5 and np.all(np.diff(every) == 20) and 0 <= every[0] < 20
    assert all(len(sample_frames(5, f"v{i}", 0, every=20)) == 1 for i in range(20))
    with pytest.raises(FbenchError, match="exactly one"):
        sample_frames(100, "x", 0, every=2, per_video=3)


def test_extraction_is_deterministic(tmp_path):
    videos, _ = make_ffpp_videos(tmp_path / "ff", "FaceSwap", n_videos=2, n_frames=12)
    _prepare(videos, tmp_path / "a", seed=3, every=5)
    _prepare(videos, tmp_path / "b", seed=3, every=5)
    a, b = (pd.read_parquet(tmp_path / d / "index.parquet") for d in "ab")
    assert a.equals(b)
    for rel in a["image"]:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()


def test_a_video_without_a_face_is_reported(tmp_path, runner, monkeypatch):
    videos, masks = make_ffpp_videos(tmp_path / "ff", "Face2Face", 3, 6, faceless=(1,))
    summary = _prepare(videos, tmp_path / "out")
    assert summary["videos_without_face"] == ["001_010"]
    index = pd.read_parquet(tmp_path / "out" / "index.parquet")
    assert "001_010" not in set(index["video"]) and len(index) == 8
    # the CLI says so too (with the real mediapipe detector replaced by the marker one)
    import fbench_thesis.ffpp as ffpp

    monkeypatch.setattr(ffpp, "MediapipeFaceDetector", lambda conf: _Closing())
    result = runner.invoke(cli, ["data", "prepare", "ffpp", str(videos), "--masks", str(masks),
                                 "--out", str(tmp_path / "cli"), "--per-video", "4",
                                 "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "1 video(s) without a detectable face" in _text(result) and "001_010" in _text(result)


class _Closing(MarkerDetector):
    def close(self) -> None:
        pass


def test_rerun_skips_finished_videos_and_a_crash_leaves_no_partial_video(tmp_path):
    videos, _ = make_ffpp_videos(tmp_path / "ff", "Face2Face", 3, 6)
    out = tmp_path / "out"

    class Crashing(MarkerDetector):
        def __call__(self, rgb):
            if self.calls >= 6:  # dies inside the second video
                raise RuntimeError("killed")
            return super().__call__(rgb)

    with pytest.raises(RuntimeError):
        _prepare(videos, out, detector=Crashing())
    assert not (out / "index.parquet").exists()  # no partial manifest
    assert {p.name[:7] for p in (out / "imgs").iterdir()} == {"000_003"}  # video 1 only
    assert not any((out / PARTIAL).iterdir())

    det = MarkerDetector()
    summary = _prepare(videos, out, detector=det)
    assert summary["done_before"] == 1 and summary["processed"] == 2 and det.calls == 8
    again = MarkerDetector()
    summary = _prepare(videos, out, detector=again)
    assert summary["done_before"] == 3 and again.calls == 0 and summary["frames"] == 12

    # a deleted frame makes its video run again rather than leave a hole
    (out / pd.read_parquet(out / "index.parquet")["image"].iloc[0]).unlink()
    summary = _prepare(videos, out)
    assert summary["processed"] == 1 and summary["frames"] == 12

    with pytest.raises(FbenchError, match=r"other settings \(per_video: 4 -> 5\)"):
        _prepare(videos, out, per_video=5)


def _garbage(videos: Path, masks: Path) -> str:
    (videos / "000_003.avi").write_bytes(b"not a video" * 50)
    return "cannot be opened"


def _no_mask(videos: Path, masks: Path) -> str:
    (masks / "000_003.avi").unlink()
    return "mask video for .*000_003.avi not found"


def _short_mask(videos: Path, masks: Path) -> str:
    write_video(masks / "000_003.avi", [np.zeros((96, 96, 3), np.uint8)] * 4)
    return "has 6 frames but its mask video .*000_003.avi has 4"


@pytest.mark.parametrize("spoil", [_garbage, _no_mask, _short_mask],
                         ids=["unreadable", "missing-mask", "frame-counts"])
def test_bad_inputs_name_the_file_and_leave_no_output(tmp_path, runner, spoil):
    videos, masks = make_ffpp_videos(tmp_path / "ff", "Face2Face", 3, 6)
    message = spoil(videos, masks)
    out = tmp_path / "out"
    with pytest.raises(FbenchError, match=message) as err:
        _prepare(videos, out)
    assert err.value.fix and "--skip-bad" in err.value.fix
    assert not (out / "index.parquet").exists() and not (out / "imgs").exists()

    result = runner.invoke(cli, ["data", "prepare", "ffpp", str(videos), "--out", str(out),
                                 "--no-progress"])
    assert result.exit_code == 2 and "000_003.avi" in _text(result) and "Fix:" in _text(result)
    assert not (out / "index.parquet").exists()

    # --skip-bad: the others are prepared, the bad one is reported (and retried next time)
    summary = _prepare(videos, out, skip_bad=True)
    assert summary["frames"] == 8 and len(summary["bad_videos"]) == 1
    assert "000_003" in summary["bad_videos"][0]["video"]
    assert "000_003" not in set(pd.read_parquet(out / "index.parquet")["video"])


def test_real_mediapipe_detector_on_a_real_face(tmp_path):
    photo = grace_hopper()
    if photo is None:
        pytest.skip("matplotlib's sample photograph is not installed")
    face = cv2.imread(str(photo))  # 512x600, one face
    h, w = face.shape[:2]
    frames = [np.roll(face, 6 * i, axis=1) for i in range(4)]
    mask = np.zeros_like(face)
    mask[h // 3:h // 2, w // 3:2 * w // 3] = 255  # "the manipulated region"
    videos, masks = tmp_path / "v", tmp_path / "m"
    videos.mkdir()
    masks.mkdir()
    write_video(videos / "hopper.avi", frames)
    write_video(masks / "hopper.avi", [mask] * 4)
    out = tmp_path / "out"
    summary = prepare_ffpp(videos, out, masks=masks, every=1, progress=False)
    index = pd.read_parquet(out / "index.parquet")
    assert summary["frames"] == 4 and summary["frames_without_face"] == 0
    assert (index["score"] >= 0.9).all()
    # the face is in the middle of the upper half: the box is well inside the frame
    assert (index["w"].between(100, 400)).all() and (index["x"] > 100).all()
    assert (index["y"] > 50).all() and (index["y"] + index["h"] < h).all()
    crop_mask = cv2.imread(str(out / index["mask"].iloc[0]), cv2.IMREAD_GRAYSCALE)
    assert crop_mask.max() == 255 and crop_mask.min() == 0


# ------------------------------------------------------------------------------------ FFHQ


def test_crop_person_box_margin_and_gray_background():
    img = np.full((20, 30, 3), 50, np.uint8)
    score = np.zeros((20, 30), np.float32)
    score[5:10, 10:20] = 0.8
    score[7, 12] = 0.05  # inside the box but not the person: blanked
    crop, box = crop_person(img, score, threshold=0.1, blank=True)
    assert box == (10, 5, 10, 5) and crop.shape == (5, 10, 3)
    assert tuple(crop[2, 2]) == GRAY and tuple(crop[0, 0]) == (50, 50, 50)
    kept, _ = crop_person(img, score, threshold=0.1, blank=False)
    assert (kept == 50).all() and (img == 50).all()  # the input is never painted
    _, grown = crop_person(img, score, 0.1, blank=False, margin=0.2)
    assert grown == (8, 4, 14, 7)
    assert crop_person(img, np.zeros((20, 30)), 0.1, blank=True) is None


def test_ffhq_crop_with_real_selfie_segmentation(tmp_path, runner):
    photo = grace_hopper()
    if photo is None:
        pytest.skip("matplotlib's sample photograph is not installed")
    src = tmp_path / "ffhq_raw"
    src.mkdir()
    face = cv2.imread(str(photo))
    canvas = np.full((800, 800, 3), 30, np.uint8)  # the person does not fill the frame
    canvas[200:800, 150:662] = face
    cv2.imwrite(str(src / "00000.png"), canvas)
    cv2.imwrite(str(src / "00001.png"), np.zeros((64, 64, 3), np.uint8))  # nobody there

    out = tmp_path / "blank"
    s = prepare_ffhq(src, out, progress=False)
    assert s["cropped"] == 1 and s["no_person"] == ["00001.png"]
    index = pd.read_parquet(out / "index.parquet")
    row = index.iloc[0]
    assert row["image"] == "00000.png" and row["y"] >= 150 and row["w"] < 800
    crop = cv2.imread(str(out / "00000.png"))
    assert crop.shape[:2] == (row["height"], row["width"])
    assert (crop == GRAY).all(axis=2).mean() > 0.02  # background painted gray
    assert (crop == GRAY).all(axis=2).mean() < 0.9

    kept = runner.invoke(cli, ["data", "prepare", "ffhq", str(src), "--out",
                               str(tmp_path / "keep"), "--keep-background", "--no-progress"])
    assert kept.exit_code == 0, kept.output
    assert "1 image(s) with no person" in _text(kept)
    assert not (cv2.imread(str(tmp_path / "keep" / "00000.png")) == GRAY).all(axis=2).any()

    again = prepare_ffhq(src, out, progress=False)  # resumable: nothing left to do
    assert again["processed"] == 0 and again["done_before"] == 2
    with pytest.raises(FbenchError, match="other settings"):
        prepare_ffhq(src, out, threshold=0.5, progress=False)


def test_ffhq_limit_is_a_seeded_subset(tmp_path):
    rng = np.random.default_rng(0)
    write_images(tmp_path / "src", 12, (16, 16), rng, "{i:05d}.png")

    def everyone(rgb):
        return np.ones(rgb.shape[:2], np.float32)

    def chosen(out: str, seed: int) -> list[str]:
        s = prepare_ffhq(tmp_path / "src", tmp_path / out, limit=5, seed=seed, progress=False,
                         segmenter=everyone)
        assert s["cropped"] == 5
        return sorted(p.name for p in (tmp_path / out).glob("*.png"))

    assert chosen("a", 1) == chosen("b", 1) != chosen("c", 2)


# ------------------------------------------------------------------------------------- GANs


def test_check_gan_counts_sizes_and_flags_bad_files(tmp_path, runner):
    rng = np.random.default_rng(0)
    good = tmp_path / "stylegan"
    write_images(good, 4, ((32, 32), (64, 64)), rng)
    r = check_gan(good, progress=False)
    assert r["count"] == 4 and r["sizes"] == {"32x32": 2, "64x64": 2}
    ok = runner.invoke(cli, ["data", "prepare", "check-gan", str(good), "--no-progress"])
    assert ok.exit_code == 0 and "4 images" in _text(ok)

    bad = tmp_path / "wgan-gp"
    shutil.copytree(good, bad)
    cv2.imwrite(str(bad / "gray.png"), np.zeros((8, 8), np.uint8))
    cv2.imwrite(str(bad / "alpha.png"), np.zeros((8, 8, 4), np.uint8))
    (bad / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    r = check_gan(bad, progress=False)
    assert r["unreadable"] == ["broken.png"]
    assert r["not_rgb"] == {"alpha.png": "RGBA", "gray.png": "grayscale"}
    failed = runner.invoke(cli, ["data", "prepare", "check-gan", str(bad), "--no-progress"])
    assert failed.exit_code == 2 and "broken.png" in _text(failed)
