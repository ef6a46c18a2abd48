"""`fbench reproduce`: a stored CPU run retrains identically; changed data stops the rerun with
the image named; a metric that moved fails with its name; environment differences are shown
and relax "identical" to "within a tolerance"."""

from __future__ import annotations

import json
import os
import re
import shutil

import cv2
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from tiny import tiny_plugin

import fbench
from fbench import FbenchError
from fbench.cli import cli
from fbench.data.fingerprint import FINGERPRINT_KEY, record_dataset
from fbench.data.manifest import resolve_path
from fbench.plugins.registry import registered
from fbench.runs.digests import record_digests
from fbench.use.reproduce import reproduce, resolve_stored, run_config
from fbench.use.reproduce_checks import (
    DEFAULT_TOLERANCE,
    dataset_differences,
    environment_differences,
    expected_agreement,
)

pytestmark = pytest.mark.filterwarnings("ignore:run .* collapsed:UserWarning")

DATASET_OPTIONS = {"n_per_class": 30, "image_size": 32}




def _train(tmp_path_factory, detector: str, epochs: int = 1):
    """A tiny run on a synthetic dataset of its own (this module changes its images)."""
    data = tmp_path_factory.mktemp("data")
    return fbench.run(detector=detector, dataset="synthetic", epochs=epochs, input_size=32,
                      batch_size=32, dataset_options=DATASET_OPTIONS, data_root=str(data),
                      out=str(tmp_path_factory.mktemp("runs")))


@pytest.fixture(scope="module")
def resnet_run(tmp_path_factory, module_env):
    return _train(tmp_path_factory, "resnet18")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, module_env):
    with registered(tiny_plugin("repro-tiny", depth=2), name="tiny"):
        return _train(tmp_path_factory, "repro-tiny", epochs=3)


class changed_image:  # noqa: N801 - reads as a statement: `with changed_image(path):`
    """Change one image's pixels (keeping it a valid PNG) and restore bytes and time after.
    ``keep_time``: give the changed file its old modification time back."""

    def __init__(self, path: str, keep_time: bool = False) -> None:
        self.path, self.keep_time = path, keep_time

    def __enter__(self) -> str:
        self.data = open(self.path, "rb").read()
        self.stat = os.stat(self.path)
        img = cv2.imread(self.path)
        img[0, 0] = 255 - img[0, 0]
        cv2.imwrite(self.path, img)
        if self.keep_time:
            os.utime(self.path, ns=(self.stat.st_atime_ns, self.stat.st_mtime_ns))
        return self.path

    def __exit__(self, *exc) -> None:
        with open(self.path, "wb") as fh:
            fh.write(self.data)
        os.utime(self.path, ns=(self.stat.st_atime_ns, self.stat.st_mtime_ns))


def _train_image(run) -> str:
    manifest = resolve_stored(run).manifest
    return resolve_path(manifest, manifest[manifest["split"] == "train"]["path"].iloc[3])


def test_run_config_is_the_stored_resolved_config(resnet_run):
    cfg = run_config(resnet_run)
    assert (cfg.detector, cfg.epochs, cfg.batch_size, cfg.input_size, cfg.seed) == \
        ("resnet18", 1, 32, 32, 0)
    assert cfg.dataset_options == DATASET_OPTIONS and cfg.audit is True
    # the stored "audit" key holds the audit's result; --skip-audit reads back as audit off
    skipped = fbench.Run(**{**resnet_run.__dict__,
                            "config": {**resnet_run.config, "audit": {"skipped": True}}})
    assert run_config(skipped).audit is False


def test_reproduce_of_a_cpu_run_is_identical(resnet_run, tmp_path):
    res = CliRunner().invoke(cli, ["reproduce", str(resnet_run.path), "--out",
                                   str(tmp_path / "again"), "--no-progress"],
                             env={"COLUMNS": "120"})
    assert res.exit_code == 0, res.output
    assert "every metric identical" in res.output and "eval macro_f1" in res.output
    (rerun_dir,) = [p for p in (tmp_path / "again").iterdir() if p.is_dir()]
    assert rerun_dir.name != resnet_run.id and "reproduce" in rerun_dir.name
    rerun = fbench.load_run(rerun_dir)
    pd.testing.assert_frame_equal(rerun.predictions, resnet_run.predictions)
    assert rerun.config["seed"] == resnet_run.config["seed"]


def test_a_changed_image_stops_the_rerun_and_is_named(resnet_run, tmp_path):
    image = _train_image(resnet_run)
    out = tmp_path / "again"
    with changed_image(image):
        res = CliRunner().invoke(cli, ["reproduce", str(resnet_run.path), "--out", str(out),
                                       "--no-progress"], env={"COLUMNS": "200"})
    assert res.exit_code != 0
    assert "dataset differs" in res.output and image in res.output.replace("\n", "")
    assert "--force" in res.output
    assert not out.exists() or not any(p.is_dir() for p in out.iterdir())  # nothing trained
    # restored: no difference left
    assert dataset_differences(resnet_run, resolve_stored(resnet_run).manifest).empty


def test_stored_image_hashes_catch_a_change_the_file_time_hides(resnet_run, tmp_path):
    """With the per-image hashes a run can store (`record_dataset`), a changed image is found
    by its content even when its modification time was put back."""
    copy = tmp_path / resnet_run.id
    shutil.copytree(resnet_run.path, copy)
    manifest = resolve_stored(resnet_run).manifest
    config = json.loads((copy / "config.json").read_text())
    config[FINGERPRINT_KEY] = record_dataset(copy, manifest)
    (copy / "config.json").write_text(json.dumps(config))
    stored = fbench.load_run(copy)
    assert dataset_differences(stored, manifest).empty
    image = _train_image(resnet_run)
    with changed_image(image, keep_time=True):
        diff = dataset_differences(stored, manifest)
        assert list(diff["check"]) == ["image hash"] and list(diff["item"]) == [image]
        # the engine records the hashes of every run it stores, so the run itself sees it too
        assert FINGERPRINT_KEY in resnet_run.config
        assert list(dataset_differences(resnet_run, manifest)["item"]) == [image]
        with pytest.raises(FbenchError, match=os.path.basename(image)):
            reproduce(stored, out=tmp_path / "again")
    # the manifest hash covers the rows: one label changed is a different dataset
    relabelled = manifest.copy()
    relabelled.loc[relabelled.index[0], "label"] = (relabelled["label"].iloc[0] + 1) % 3
    checks = set(dataset_differences(stored, relabelled)["check"])
    assert {"manifest hash", "split counts"} <= checks


def test_a_moved_metric_fails_and_is_named(tiny_run, tmp_path):
    """A stored run whose eval predictions were tampered with cannot be reproduced."""
    copy = tmp_path / tiny_run.id
    shutil.copytree(tiny_run.path, copy)
    preds = pd.read_parquet(copy / "predictions.parquet")
    ev = preds["split"] == "eval"
    preds.loc[ev, "pred"] = (preds.loc[ev, "label"] + 1) % 3  # every eval image wrong
    preds.to_parquet(copy / "predictions.parquet", index=False)
    with registered(tiny_plugin("repro-tiny", depth=2), name="tiny"):
        edited = CliRunner().invoke(cli, ["reproduce", str(copy), "--out",
                                          str(tmp_path / "e"), "--no-progress"])
        # a forger who also rewrites the digests gets past the seal, not past a rerun
        record_digests(copy)
        res = CliRunner().invoke(cli, ["reproduce", str(copy), "--out", str(tmp_path / "r"),
                                       "--no-progress"], env={"COLUMNS": "200"})
    assert edited.exit_code == 2 and "was edited" in edited.output
    assert res.exit_code == 1, res.output
    assert "not reproduced" in res.output and "eval macro_f1 by +" in res.output
    # val predictions were left alone
    assert not re.search(r"(?<!e)val macro_f1 by", res.output.replace("\n", ""))


def test_force_retrains_on_changed_data_and_relaxes_the_tolerance(tiny_run, tmp_path):
    with registered(tiny_plugin("repro-tiny", depth=2), name="tiny"), \
            changed_image(_train_image(tiny_run)):
        result = reproduce(tiny_run, out=tmp_path / "forced", force=True)
    assert result.forced and result.rerun is not None and len(result.data) == 1
    assert not result.exact_expected and result.tolerance == DEFAULT_TOLERANCE


def test_epochs_from_run_trains_up_to_the_selected_epoch(tiny_run, tmp_path):
    with registered(tiny_plugin("repro-tiny", depth=2), name="tiny"):
        result = reproduce(tiny_run, out=tmp_path / "short", epochs_from_run=True)
    assert result.ok, result.verdict()
    selected = tiny_run.summary["selected_epoch"]
    assert len(result.rerun.epochs) == selected
    assert f"epoch {selected} train_loss" in set(result.comparison["metric"])
    assert "epoch 4 train_loss" not in set(result.comparison["metric"])


def test_environment_differences_are_shown_and_decide_the_tolerance(resnet_run, tmp_path):
    env = environment_differences(resnet_run, "cpu")
    assert env["same"].all()
    assert expected_agreement(env, "cpu", True) == (True, 0.0)
    copy = tmp_path / resnet_run.id
    shutil.copytree(resnet_run.path, copy)
    environment = json.loads((copy / "environment.json").read_text())
    environment["packages"]["torch"] = "1.0.0"
    environment["packages"]["numpy"] = "0.1"
    (copy / "environment.json").write_text(json.dumps(environment))
    env = environment_differences(fbench.load_run(copy), "cpu")
    changed = env[~env["same"]].set_index("what")
    assert set(changed.index) == {"torch", "numpy"} and changed.loc["torch", "stored"] == "1.0.0"
    assert expected_agreement(env, "cpu", True) == (False, DEFAULT_TOLERANCE)
    # numpy alone is shown but does not decide
    env.loc[env["what"] == "torch", "same"] = True
    assert expected_agreement(env, "cpu", True) == (True, 0.0)
    assert expected_agreement(env, "cuda", True) == (False, DEFAULT_TOLERANCE)
    assert expected_agreement(env, "cpu", True, tolerance=0.5) == (True, 0.5)


def test_table_names_difference_per_metric(resnet_run):
    from fbench.use.reproduce import compare_runs

    table = compare_runs(resnet_run, resnet_run)
    assert {"eval macro_f1", "val macro_f1", "selected epoch", "epoch 1 train_loss",
            "eval images whose class changed"} <= set(table["metric"])
    assert (table["difference"].dropna() == 0).all()
    assert np.isfinite(table["difference"].dropna().astype(float)).all()
