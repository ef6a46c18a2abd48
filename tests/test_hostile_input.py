"""Hostile input, one case each: every bad file is named with its problem before training
starts (no run directory is made), or, with --skip-bad, left out and counted in the run;
unusual but valid images are converted; a bad manifest is explained."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from tiny import tiny_cnn

import fbench
from fbench import FbenchError
from fbench.cli import cli
from fbench.data.preflight import image_problem, preflight
from fbench.plugins.registry import registered


def _write_dataset(root: Path, n: int = 24) -> list[dict]:
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        path = root / f"{i}.png"
        cv2.imwrite(str(path), rng.integers(0, 255, (16, 16, 3), dtype=np.uint8))
        rows.append({"path": f"{i}.png", "label": i % 3, "source": "s", "group": str(i),
                     "split": "eval" if i >= n - 6 else "train", "mask": ""})
    return rows


def _plugin(rows: list[dict], root: Path):
    class Plugin:
        @fbench.hookimpl
        def register_datasets(self, register):
            register(fbench.DatasetSpec(
                name="hostile", summary="h", needs_root=False, has_masks=True,
                factory=lambda root_: fbench.make_manifest(rows, root=root)))

        @fbench.hookimpl
        def register_detectors(self, register):
            register(fbench.DetectorSpec(name="tiny", summary="t", input_size=16,
                                         factory=lambda num_classes=3: tiny_cnn(num_classes)))
    return Plugin()


def _run(rows, root, *extra):
    out = root / "runs"
    with registered(_plugin(rows, root), name="hostile"):
        result = CliRunner().invoke(cli, ["run", "--detector", "tiny", "--dataset", "hostile",
                                          "--epochs", "1", "--out", str(out), "--no-progress",
                                          *extra])
    runs = [p for p in out.iterdir() if p.is_dir()] if out.is_dir() else []
    return result, runs


def _truncate_png(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-30])


def _truncated_jpeg(path: Path) -> None:
    img = np.random.default_rng(1).integers(0, 255, (16, 16, 3), dtype=np.uint8)
    ok, buf = cv2.imencode(".jpg", img)
    path.write_bytes(buf.tobytes()[:-40])


@pytest.mark.parametrize("damage, expected", [
    (_truncate_png, "truncated (the PNG ends before its IEND chunk)"),
    (_truncated_jpeg, "truncated (the JPEG ends before its end-of-image marker)"),
    (lambda p: p.write_bytes(b""), "zero-byte"),
    (lambda p: p.write_text("not an image at all"), "cannot be decoded"),
])
def test_a_bad_image_stops_the_run_before_training(tmp_path, damage, expected):
    rows = _write_dataset(tmp_path)
    damage(tmp_path / "7.png")
    result, runs = _run(rows, tmp_path)
    assert result.exit_code != 0
    assert "7.png" in result.output and expected in result.output
    assert "--skip-bad" in result.output and "Traceback" not in result.output
    assert runs == []  # stopped before anything was written or trained


def test_skip_bad_trains_without_them_and_counts_them(tmp_path):
    rows = _write_dataset(tmp_path)
    _truncate_png(tmp_path / "3.png")
    (tmp_path / "20.png").write_bytes(b"")
    result, runs = _run(rows, tmp_path, "--skip-bad")
    assert result.exit_code == 0, result.output
    config = json.loads((runs[0] / "config.json").read_text())
    assert config["skip_bad"] is True
    assert config["preflight"]["skipped"] == 2
    assert sorted(Path(b["path"]).name for b in config["preflight"]["bad"]) == ["20.png",
                                                                               "3.png"]
    preds = fbench.load_run(runs[0]).predictions
    assert not preds["path"].isin(["3.png", "20.png"]).any()
    assert (preds["split"] == "eval").sum() == 5  # 6 eval images, 20.png left out


def test_grayscale_rgba_and_16_bit_images_are_converted(tmp_path):
    rows = _write_dataset(tmp_path)
    rng = np.random.default_rng(2)
    cv2.imwrite(str(tmp_path / "0.png"), rng.integers(0, 255, (16, 16), dtype=np.uint8))
    cv2.imwrite(str(tmp_path / "1.png"), rng.integers(0, 255, (16, 16, 4), dtype=np.uint8))
    cv2.imwrite(str(tmp_path / "2.png"), rng.integers(0, 65535, (16, 16, 3), dtype=np.uint16))
    result, runs = _run(rows, tmp_path)
    assert result.exit_code == 0, result.output
    assert json.loads((runs[0] / "status.json").read_text())["state"] == "completed"


def test_a_camera_trailer_passes_preflight_and_cut_files_do_not(tmp_path):
    """The preflight applies fbench predict's truncation rule: bytes after a JPEG's
    end-of-image marker (a camera's 140-byte trailer) are whole; a cut PNG or JPEG is not."""
    rows = _write_dataset(tmp_path)
    img = np.random.default_rng(3).integers(0, 255, (16, 16, 3), dtype=np.uint8)
    jpeg = cv2.imencode(".jpg", img)[1].tobytes()
    (tmp_path / "camera.jpg").write_bytes(jpeg + bytes(range(140)))
    (tmp_path / "cut.jpg").write_bytes(jpeg[:-40])
    _truncate_png(tmp_path / "5.png")
    rows[4]["path"], rows[6]["path"] = "camera.jpg", "cut.jpg"
    manifest = fbench.make_manifest(rows, root=tmp_path)
    kept, report = preflight(manifest, with_masks=False, skip_bad=True)
    assert "camera.jpg" in set(kept["path"])
    assert {Path(b["path"]).name: b["reason"] for b in report.bad} == {
        "5.png": "is truncated (the PNG ends before its IEND chunk)",
        "cut.jpg": "is truncated (the JPEG ends before its end-of-image marker)"}


def test_a_huge_image_is_refused_from_its_header(tmp_path):
    huge = tmp_path / "huge.png"
    Image.new("1", (10_000, 7_000)).save(huge)  # 70 MP; a few kB on disk
    problem, size = image_problem(str(huge))
    assert size == (10_000, 7_000) and "too large" in problem and "70 MP" in problem


def test_masks_of_another_size_or_not_binary(tmp_path):
    rows = _write_dataset(tmp_path)
    cv2.imwrite(str(tmp_path / "m_small.png"), np.zeros((8, 8), np.uint8))
    soft = np.tile(np.linspace(0, 255, 16, dtype=np.uint8), (16, 1))
    cv2.imwrite(str(tmp_path / "m_soft.png"), soft)
    rows[2]["mask"] = "m_small.png"
    rows[5]["mask"] = "m_soft.png"
    manifest = fbench.make_manifest(rows, root=tmp_path)
    with pytest.raises(FbenchError, match=r"m_small.png.*mask is 8x8, its image is 16x16"):
        preflight(manifest, with_masks=True, skip_bad=False)
    kept, report = preflight(manifest, with_masks=True, skip_bad=True)
    assert len(kept) == len(manifest) - 1 and report.bad[0]["path"].endswith(
        "m_small.png (mask of " + str(tmp_path / "2.png") + ")")
    assert [Path(w["path"]).name for w in report.warnings] == ["m_soft.png"]
    assert "not binary" in report.warnings[0]["warning"]


def test_manifest_paths_escaping_the_root_are_refused(tmp_path):
    rows = _write_dataset(tmp_path / "data" if (tmp_path / "data").mkdir() is None else None)
    rows[4]["path"] = "../../etc/passwd"
    with pytest.raises(FbenchError, match="outside the dataset root"):
        fbench.make_manifest(rows, root=tmp_path / "data")


def test_labels_as_strings(tmp_path):
    rows = _write_dataset(tmp_path)
    for r, name in zip(rows, ["real", "Generated", "edited", "1", "0", "2"] * 4, strict=True):
        r["label"] = name
    manifest = fbench.make_manifest(rows, root=tmp_path)
    assert manifest["label"].tolist()[:6] == [0, 1, 2, 1, 0, 2]
    rows[0]["label"] = "fake-ish"
    with pytest.raises(FbenchError, match=r"0.png \(label 'fake-ish'\)"):
        fbench.make_manifest(rows, root=tmp_path)


class _NaNAfterFirstEpoch(fbench.Detector):
    """Trains normally for one step (one epoch here), then produces NaN logits."""

    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.net = tiny_cnn(num_classes)
        self.steps = 0

    def forward(self, batch):
        logits = self.net(batch.images)
        if self.training:
            self.steps += 1
            if self.steps > 1:
                logits = logits * float("nan")
        return fbench.DetectorOutput(logits=logits)


def test_nan_from_the_model_stops_training_and_keeps_the_last_good_checkpoint(tmp_path):
    """NaN in epoch 2: the run stops there, says why, and is evaluated with epoch 1's model
    (recorded as stopped on nan, not converged). NaN in epoch 1: nothing to keep, it fails."""
    rows = _write_dataset(tmp_path)
    plugin = _plugin(rows, tmp_path)

    class NaNPlugin:
        @fbench.hookimpl
        def register_detectors(self, register):
            register(fbench.DetectorSpec(name="nan-net", summary="n", input_size=16,
                                         factory=_NaNAfterFirstEpoch))

    out = tmp_path / "runs"
    args = ["run", "--detector", "nan-net", "--dataset", "hostile", "--epochs", "3",
            "--no-progress", "--keep-last"]
    with registered(plugin, name="hostile"), registered(NaNPlugin(), name="nan"):
        result = CliRunner().invoke(cli, [*args, "--out", str(out)])
        first = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "first"),
                                         "--batch-size", "4"])  # NaN at step 2 of epoch 1
    assert result.exit_code == 0 and "Traceback" not in result.output, result.output
    assert "loss became nan at epoch 2" in result.output and "lower --lr" in result.output
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    assert json.loads((run_dir / "status.json").read_text())["state"] == "completed"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["stopped"]["reason"] == "nan" and summary["stopped"]["epoch"] == 1
    assert not summary["stopped"]["converged"] and summary["selected_epoch"] == 1
    assert summary["epochs_trained"] == 1 and summary["last"]["epoch"] == 1
    last = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert last["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in last["model"].values() if v.is_floating_point())
    # a NaN in the very first epoch leaves nothing to evaluate: the run fails, as one line
    assert first.exit_code != 0 and "Traceback" not in first.output
    (failed,) = [p for p in (tmp_path / "first").iterdir() if p.is_dir()]
    assert json.loads((failed / "status.json").read_text())["state"] == "failed"
