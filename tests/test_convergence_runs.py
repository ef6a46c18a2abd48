"""Convergence through the engine: a collapsed run stops and names likely causes, the schedule
and gradient clipping are what the run records, and the settings resolve as documented (fbench
defaults, the thesis protocol, runs stored before schedules existed)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from tiny import blind_detector, tiny_plugin

import fbench
from fbench.cli import cli
from fbench.plugins.registry import registered
from fbench.train.config import RunConfig
from fbench.train.convergence import lr_factor
from fbench.train.resolve import resolve

DATA = {"n_per_class": 20, "image_size": 32}


class StuckPlugin:
    @fbench.hookimpl
    def register_detectors(self, register):
        register(fbench.DetectorSpec(name="stuck", summary="t", factory=blind_detector,
                                     input_size=32, defaults={"lr": 1e-4}))


def test_a_run_collapsed_for_k_epochs_stops_and_says_why(tmp_path):
    with registered(StuckPlugin(), name="stuck"):
        result = CliRunner().invoke(cli, [
            "run", "--detector", "stuck", "--epochs", "6", "--collapse-epochs", "2",
            "--patience", "0", "--lr", "1e-3", "--dataset-option", "n_per_class=20",
            "--dataset-option", "image_size=32", "--out", str(tmp_path), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "stopped after epoch 2: validation predictions on one class for 2 epochs" in \
        " ".join(result.output.split())
    # the causes it names come from the run: few steps, and an lr above the measured default
    advice = " ".join(result.output.split())
    # said once, in fbench's voice: no Python warning line beside it
    assert advice.count("collapsed to the majority class") == 1
    assert "warning: run " in advice and "UserWarning" not in advice
    assert "too little training (2 epochs of" in advice
    assert "above this detector's measured default (--lr 0.001; try 0.0001)" in advice
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    run = fbench.load_run(run_dir)
    assert run.summary["stopped"] == {"reason": "collapse", "epoch": 2, "converged": False}
    assert run.summary["epochs_trained"] == 2 and len(run.epochs) == 2
    assert run.epochs["val_collapsed"].tolist() == [True, True]


def test_the_run_records_its_schedule_and_clipping(tmp_path):
    with registered(tiny_plugin("conv-tiny"), name="tiny"):
        run = fbench.run(detector="conv-tiny", dataset="synthetic", epochs=4, input_size=32,
                         batch_size=8, lr=0.01, schedule="step", warmup_epochs=0, patience=0,
                         collapse_epochs=0, clip_grad=0.5, out=str(tmp_path),
                         dataset_options=DATA)
    steps = run.config["split_counts"]["train"]
    steps = sum(steps.values()) // 8  # drop_last
    assert run.config["schedule"] == "step" and run.config["clip_grad"] == 0.5
    expected = [0.01 * lr_factor(e * steps, 4 * steps, 0, "step") for e in (1, 2, 3, 4)]
    assert run.epochs["lr"].tolist() == pytest.approx(expected)
    assert expected[-1] == pytest.approx(1e-4)  # fell tenfold twice
    assert (run.epochs["max_grad_norm"] > 0).all()
    assert run.summary["stopped"]["reason"] == "ceiling"


@pytest.fixture(scope="module")
def small_data(tmp_path_factory, module_env):
    return str(tmp_path_factory.mktemp("data"))


def test_fbench_defaults_and_the_thesis_protocol_resolve_as_documented(small_data, tmp_path):
    base = dict(detector="resnet18", dataset_options=DATA, data_root=small_data,
                out=str(tmp_path), batch_size=8)
    resolved = resolve(RunConfig(**base))
    ours = resolved.config
    steps = int((resolved.manifest["split"] == "train").sum()) // 8
    # a ceiling of 20 epochs (fbench's): one of warm-up (none below 10); a few steps an
    # epoch, all of them for precise BN
    assert (ours.schedule, ours.patience, ours.collapse_epochs) == ("cosine", 3, 3)
    assert ours.warmup_epochs == 1 and 0 < ours.precise_bn == steps < 32
    assert resolve(RunConfig(**base, epochs=9)).config.warmup_epochs == 0
    thesis = resolve(RunConfig(**base, protocol="thesis")).config
    assert (thesis.schedule, thesis.warmup_epochs, thesis.patience, thesis.collapse_epochs,
            thesis.precise_bn) == ("constant", 0, 0, 0, 0)
    # a flag the user gives still wins over the recipe
    assert resolve(RunConfig(**base, protocol="thesis", patience=5)).config.patience == 5


def test_a_run_stored_before_schedules_reads_back_as_it_trained():
    old = {"detector": "resnet18", "dataset": "synthetic", "epochs": 3, "lr": 1e-3,
           "batch_size": 8, "input_size": 32}
    cfg = RunConfig.from_stored(old)
    assert (cfg.schedule, cfg.warmup_epochs, cfg.patience, cfg.collapse_epochs,
            cfg.precise_bn) == ("constant", 0, 0, 0, 0)


@pytest.mark.parametrize("setting, value", [("schedule", "linear"), ("patience", -1),
                                            ("warmup_epochs", "one"), ("clip_grad", 0)])
def test_bad_convergence_settings_are_one_line(setting, value):
    with pytest.raises(fbench.FbenchError, match=f"setting {setting} must be"):
        RunConfig(**{setting: value})


def test_convergence_settings_make_different_configurations():
    """A cosine run is never reused for, or averaged with, a constant-rate one; a run stored
    before these settings existed is the constant, no-stop configuration it trained as."""
    from fbench.report.tables import configuration_key

    base = {"detector": "resnet18", "dataset": "synthetic", "epochs": 8, "lr": 1e-3,
            "detector_options": {}, "dataset_fingerprint": {}}
    new = {**base, "schedule": "cosine", "warmup_epochs": 0, "patience": 3, "min_delta": 0.0,
           "collapse_epochs": 3, "precise_bn": 6, "clip_grad": None}
    assert configuration_key(new) != configuration_key(base)
    for key, value in (("schedule", "step"), ("patience", 0), ("precise_bn", 0),
                       ("clip_grad", 1.0)):
        assert configuration_key({**new, key: value}) != configuration_key(new), key
    old_as_new = {**base, "schedule": "constant", "warmup_epochs": 0, "patience": 0,
                  "min_delta": 0.0, "collapse_epochs": 0, "precise_bn": 0, "clip_grad": None}
    assert configuration_key(old_as_new) == configuration_key(base)
