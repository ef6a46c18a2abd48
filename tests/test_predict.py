"""`fbench predict` and `Run.predict`: a stored run scores files, folders and arrays with its
own checkpoint, transform and input size; broken files are named, non-images skipped, odd
pixel formats converted."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

import fbench
from fbench import FbenchError
from fbench.cli import cli
from fbench.metrics import PROB_COLUMNS

pytestmark = pytest.mark.filterwarnings("ignore:run .* collapsed:UserWarning")

DATASET_OPTIONS = {"n_per_class": 30, "image_size": 32}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, module_env):
    """One tiny stored run, and the manifest of its dataset."""
    out = tmp_path_factory.mktemp("runs")
    run = fbench.run(detector="resnet18", dataset="synthetic", epochs=1, input_size=32,
                     batch_size=32, dataset_options=DATASET_OPTIONS, out=str(out))
    manifest = fbench.load_dataset("synthetic", **DATASET_OPTIONS)
    return run, manifest


def _dataset_image(manifest, i: int) -> str:
    from fbench.data.manifest import resolve_path

    return resolve_path(manifest, manifest["path"].iloc[i])


@pytest.fixture(scope="module")
def folder(trained, tmp_path_factory):
    """A folder as a user would have it: good PNG and JPEG files, a subfolder, gray, RGBA and
    16-bit images, a PNG without extension, a truncated PNG, an empty .png and a text file."""
    _, manifest = trained
    root = tmp_path_factory.mktemp("photos")
    bgr = [cv2.imread(_dataset_image(manifest, i)) for i in range(4)]
    cv2.imwrite(str(root / "a.png"), bgr[0])
    cv2.imwrite(str(root / "b.jpg"), bgr[1], [cv2.IMWRITE_JPEG_QUALITY, 95])
    (root / "sub" / "deeper").mkdir(parents=True)
    cv2.imwrite(str(root / "sub" / "c.png"), bgr[2])
    cv2.imwrite(str(root / "sub" / "deeper" / "d.jpeg"), bgr[3])
    cv2.imwrite(str(root / "gray.png"), cv2.cvtColor(bgr[0], cv2.COLOR_BGR2GRAY))
    cv2.imwrite(str(root / "rgba.png"), cv2.cvtColor(bgr[1], cv2.COLOR_BGR2BGRA))
    cv2.imwrite(str(root / "deep16.png"), bgr[2].astype(np.uint16) * 257)
    # a large, different-size image: resized to the run's input size like training data
    cv2.imwrite(str(root / "big.png"), cv2.resize(bgr[3], (97, 71)))
    (root / "no_extension").write_bytes((root / "a.png").read_bytes())
    data = (root / "a.png").read_bytes()
    (root / "truncated.png").write_bytes(data[: len(data) // 2])
    (root / "empty.png").write_bytes(b"")
    (root / "notes.txt").write_text("not an image\n")
    return root


def _row(df: pd.DataFrame, name: str) -> pd.Series:
    hits = df[df["path"].map(lambda p: os.path.basename(p)) == name]
    assert len(hits) == 1, f"{name} not in output: {list(df['path'])}"
    return hits.iloc[0]


def test_folder_is_walked_bad_files_named_text_skipped(trained, folder):
    run, _ = trained
    df = run.predict(folder)
    scored = {"a.png", "b.jpg", "c.png", "d.jpeg", "gray.png", "rgba.png", "deep16.png",
              "big.png", "no_extension"}
    names = {os.path.basename(p) for p in df["path"]}
    assert names == scored | {"truncated.png", "empty.png"}
    for name in scored:
        row = _row(df, name)
        assert row["status"] == "scored" and row["error"] == ""
        probs = row[list(PROB_COLUMNS)].to_numpy(dtype=float)
        assert abs(probs.sum() - 1) < 1e-5
        assert row["pred"] == probs.argmax() and row["pred_name"] in ("real", "generated",
                                                                       "edited")
    assert "truncated" in _row(df, "truncated.png")["error"]
    assert _row(df, "empty.png")["error"] == "zero bytes"
    for name in ("truncated.png", "empty.png"):
        row = _row(df, name)
        assert row["status"] == "error" and pd.isna(row["pred"]) and pd.isna(row["prob_real"])
    assert [os.path.basename(p) for p in df.attrs["skipped"]] == ["notes.txt"]
    # a folder's own files in sorted order, then its subfolders
    rel = [os.path.relpath(p, folder) for p in df["path"]]
    assert rel[-2:] == [os.path.join("sub", "c.png"), os.path.join("sub", "deeper", "d.jpeg")]
    assert rel[:-2] == sorted(rel[:-2])


def test_a_camera_trailer_is_scored_and_cut_files_are_refused(trained, folder, tmp_path):
    """The preflight's truncation rule: a JPEG with a camera's 140-byte trailer after its
    end-of-image marker scores as the same JPEG without it; a cut PNG or JPEG is refused."""
    run, _ = trained
    jpeg = (folder / "b.jpg").read_bytes()
    (tmp_path / "camera.jpg").write_bytes(jpeg + bytes(range(140)))
    (tmp_path / "cut.jpg").write_bytes(jpeg[:-40])
    (tmp_path / "cut.png").write_bytes((folder / "a.png").read_bytes()[:-30])
    df = run.predict([folder / "b.jpg", tmp_path / "camera.jpg", tmp_path / "cut.jpg",
                      tmp_path / "cut.png"], threshold=0.5)
    assert df["status"].tolist() == ["scored", "scored", "error", "error"]
    np.testing.assert_array_equal(df[list(PROB_COLUMNS)].to_numpy()[0],
                                  df[list(PROB_COLUMNS)].to_numpy()[1])
    assert df["error"].tolist()[2:] == [
        "truncated (the JPEG ends before its end-of-image marker)",
        "truncated (the PNG ends before its IEND chunk)"]


def test_odd_pixel_formats_are_converted_the_way_training_reads_them(trained, folder):
    run, _ = trained
    df = run.predict([folder / "a.png", folder / "gray.png", folder / "rgba.png",
                      folder / "b.jpg", folder / "deep16.png", folder / "sub" / "c.png"])
    probs = df[list(PROB_COLUMNS)].to_numpy()
    # RGBA with opaque alpha is the image itself; 16-bit (x257) is the 8-bit image exactly
    np.testing.assert_allclose(probs[2], run.predict(_jpeg_source(folder))[
        list(PROB_COLUMNS)].to_numpy()[0], atol=1e-6)
    np.testing.assert_allclose(probs[4], probs[5], atol=1e-6)
    # gray is scored as a gray RGB image, so differently from the colour original
    assert np.abs(probs[1] - probs[0]).max() > 0


def _jpeg_source(folder: Path) -> list[Path]:
    """The RGBA file was made from the JPEG's source pixels, not its decoded JPEG; the PNG of
    those pixels does not exist in the folder, so compare with a fresh one."""
    bgra = cv2.imread(str(folder / "rgba.png"), cv2.IMREAD_UNCHANGED)
    target = folder.parent / (folder.name + "-rgb.png")
    cv2.imwrite(str(target), bgra[:, :, :3])
    return [target]


def test_scores_of_dataset_images_are_the_stored_predictions(trained):
    """Same checkpoint, transform, input size and decoding as the run's evaluation."""
    run, manifest = trained
    ev = run.predictions[run.predictions["split"] == "eval"]
    from fbench.data.manifest import resolve_path

    df = run.predict([resolve_path(manifest, p) for p in ev["path"]], batch_size=7)
    np.testing.assert_allclose(df[list(PROB_COLUMNS)].to_numpy(),
                               ev[list(PROB_COLUMNS)].to_numpy(), atol=1e-5)
    assert (df["pred"].to_numpy() == ev["pred"].to_numpy()).all()


def test_threshold_is_the_runs_val_choice_or_the_one_given(trained, folder):
    run, _ = trained
    df = run.predict(folder)
    t = run.summary["eval"]["binary_threshold"]
    assert df.attrs["threshold"] == pytest.approx(t) and (df["threshold"] == t).all()
    scored = df[df["status"] == "scored"]
    assert (scored["forged"] == (scored["forged_score"] >= t)).all()
    np.testing.assert_allclose(scored["forged_score"], 1 - scored["prob_real"])
    assert run.predict(folder, threshold=0.0)["forged"].dropna().all()
    assert not run.predict(folder, threshold=1.0)["forged"].dropna().any()
    with pytest.raises(FbenchError, match="threshold"):
        run.predict(folder, threshold="2")


def test_arrays_are_rgb_and_score_like_their_files(trained, folder):
    run, _ = trained
    rgb = cv2.cvtColor(cv2.imread(str(folder / "a.png")), cv2.COLOR_BGR2RGB)
    from_file = run.predict(folder / "a.png")[list(PROB_COLUMNS)].to_numpy()
    one = run.predict(rgb)
    assert list(one["path"]) == ["<array 0>"]
    np.testing.assert_allclose(one[list(PROB_COLUMNS)].to_numpy(), from_file, atol=1e-6)
    # a stack, a float image in [0, 1] and a gray 2-D array
    stack = run.predict(np.stack([rgb, rgb]))
    assert len(stack) == 2
    np.testing.assert_allclose(stack[list(PROB_COLUMNS)].to_numpy()[1], from_file[0],
                               atol=1e-6)
    mixed = run.predict([rgb.astype(np.float32) / 255, rgb[:, :, 0], folder / "b.jpg"])
    assert list(mixed["status"]) == ["scored"] * 3
    np.testing.assert_allclose(mixed[list(PROB_COLUMNS)].to_numpy()[0], from_file[0],
                               atol=1e-6)
    bad = run.predict([np.zeros((4, 4, 7), np.uint8), rgb])
    assert list(bad["status"]) == ["error", "scored"] and "shape" in bad["error"].iloc[0]


def test_cli_writes_csv_and_parquet_and_names_the_truncated_file(trained, folder, tmp_path):
    run, _ = trained
    runner = CliRunner()
    out = tmp_path / "scores.csv"
    res = runner.invoke(cli, ["predict", str(run.path), str(folder), "-o", str(out),
                              "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "truncated.png" in res.output and "skipped 1 file" in res.output
    assert "edited (2)" in res.output  # the summary table's rows per class
    df = pd.read_csv(out)
    assert len(df) == 11 and (df["status"] == "scored").sum() == 9
    assert not df["path"].str.endswith("notes.txt").any()
    pq = tmp_path / "scores.parquet"
    res = runner.invoke(cli, ["predict", str(run.path), str(folder / "a.png"), "-o", str(pq),
                              "--threshold", "0.5", "--batch-size", "1", "--no-progress"])
    assert res.exit_code == 0, res.output
    back = pd.read_parquet(pq)
    assert len(back) == 1 and back["threshold"].iloc[0] == 0.5


def test_cli_fails_clearly_when_nothing_is_scored(trained, folder, tmp_path):
    run, _ = trained
    res = CliRunner().invoke(cli, ["predict", str(run.path), str(folder / "notes.txt"),
                                   str(folder / "truncated.png"), str(tmp_path / "missing.png"),
                                   "-o", str(tmp_path / "x.csv"), "--no-progress"])
    assert res.exit_code != 0
    assert "no image was scored" in res.output and "2 bad file(s)" in res.output
    rows = pd.read_csv(tmp_path / "x.csv")  # the reasons are still written
    assert set(rows["error"]) == {"does not exist",
                                  "truncated (the PNG ends before its IEND chunk)"}
    res = CliRunner().invoke(cli, ["predict", str(run.path), str(folder), "-o",
                                   str(tmp_path / "x.json")])
    assert res.exit_code != 0 and "FILE.csv or FILE.parquet" in res.output


# -- a detector with a mask head --------------------------------------------------------------

def _masked(num_classes: int = 3):
    import torch.nn.functional as F
    from torch import nn

    from fbench import Detector, DetectorOutput

    class Masked(Detector):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.seg = nn.Conv2d(4, 1, 1)
            self.fc = nn.Linear(4, num_classes)

        def forward(self, batch):
            f = F.relu(self.conv(batch.images))
            return DetectorOutput(logits=self.fc(f.mean((2, 3))),
                                  mask=self.seg(f).sigmoid())

        def loss(self, output, batch):
            return {"ce": F.cross_entropy(output.logits, batch.labels),
                    "bce": F.binary_cross_entropy(output.mask, batch.masks)}

    return Masked()


class MaskPlugin:
    @fbench.hookimpl
    def register_detectors(self, register):
        register(fbench.DetectorSpec(name="predict-masked", summary="t", factory=_masked,
                                     input_size=32, needs_masks=True))


def test_mask_head_saves_one_png_per_image_at_its_own_size(trained, folder, tmp_path):
    from fbench.plugins.registry import registered

    with registered(MaskPlugin(), name="masked"):
        run = fbench.run(detector="predict-masked", dataset="synthetic", epochs=1,
                         batch_size=32, dataset_options={"n_per_class": 6, "image_size": 32},
                         out=str(tmp_path / "runs"))
        res = CliRunner().invoke(cli, ["predict", str(run.path), str(folder / "a.png"),
                                       str(folder / "big.png"), str(folder / "truncated.png"),
                                       "-o", str(tmp_path / "m.csv"), "--no-progress"])
    assert res.exit_code == 0, res.output
    df = pd.read_csv(tmp_path / "m.csv", keep_default_na=False)
    assert {"mask_path", "mask_area"} <= set(df.columns)
    ok = df[df["status"] == "scored"]
    assert len(ok) == 2 and (ok["mask_area"].astype(float).between(0, 1)).all()
    big = cv2.imread(ok["mask_path"].iloc[1], cv2.IMREAD_UNCHANGED)
    assert big.shape == (71, 97) and big.dtype == np.uint8  # the image's own size
    assert Path(ok["mask_path"].iloc[0]).parent == tmp_path / "m-masks"
    assert df[df["status"] == "error"]["mask_path"].iloc[0] == ""
