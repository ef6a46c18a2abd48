"""The one walk of a run store (``fbench.iter_runs``) and the one rebuild of a stored run
(``Run.run_config()``, ``Run.load_model()``): what reports, reuse and predict rely on."""

from __future__ import annotations

import shutil

import pytest
import torch
from tiny import tiny_plugin

import fbench
from fbench.files import read_json, write_json
from fbench.plugins.registry import registered
from fbench.report.ablate import find_stored_run
from fbench.report.leaderboard import completed_runs

# one tiny epoch may collapse; that is not what is tested here
pytestmark = pytest.mark.filterwarnings("ignore:run .* collapsed:UserWarning")


@pytest.fixture(scope="module")
def store(tmp_path_factory, module_env):
    """Two completed one-epoch runs of a tiny detector in one store."""
    out = tmp_path_factory.mktemp("runs")
    data = tmp_path_factory.mktemp("data")
    with registered(tiny_plugin("walk-tiny"), name="tiny"):
        a, b = (fbench.run(detector="walk-tiny", dataset="synthetic", epochs=1, input_size=32,
                           batch_size=32, seed=seed, data_root=str(data), out=str(out),
                           dataset_options={"n_per_class": 20, "image_size": 32}).path
                for seed in (0, 1))
    return out, a, b


def test_iter_runs_yields_completed_runs_and_skips_damaged_ones(store, tmp_path):
    src, a, b = store
    runs = tmp_path / "runs"
    shutil.copytree(src, runs)
    assert sorted(r.id for r in fbench.iter_runs(runs)) == sorted([a.name, b.name])
    # one run's predictions truncated, another's config cut mid-JSON, a third still running
    broken = runs / a.name / "predictions.parquet"
    broken.write_bytes(broken.read_bytes()[:100])
    shutil.copytree(runs / b.name, runs / "zz-cut")
    (runs / "zz-cut" / "config.json").write_text('{"detector": "res')
    shutil.copytree(runs / b.name, runs / "zz-running")
    write_json(runs / "zz-running" / "status.json", {"state": "running"})
    with pytest.warns(UserWarning) as caught:
        ok = [r.id for r in fbench.iter_runs(runs)]
    assert ok == [b.name]
    messages = " ".join(str(w.message) for w in caught)
    assert a.name in messages and "zz-cut" in messages and "zz-running" not in messages
    assert [r.id for r in fbench.iter_runs(runs, state="running")] == ["zz-running"]
    with pytest.warns(UserWarning, match="damaged"):
        assert [r.id for r in completed_runs(runs)] == [b.name]


def test_reuse_finds_the_identical_completed_run_only(store, tmp_path):
    src, a, _ = store
    runs = tmp_path / "runs"
    shutil.copytree(src, runs)
    config = read_json(a / "config.json")
    assert find_stored_run(runs, config) == runs / a.name
    write_json(runs / a.name / "status.json", {"state": "failed"})
    assert find_stored_run(runs, config) is None


def test_a_stored_run_rebuilds_its_config_and_model(store):
    _, a, _ = store
    run = fbench.load_run(a)
    config = run.run_config()
    assert isinstance(config, fbench.RunConfig) and config.seed == run.config["seed"]
    assert config.options == {k: v for k, v in run.config["detector_options"].items()
                              if k != "input_size"}
    with registered(tiny_plugin("walk-tiny"), name="tiny"):
        model, transform = run.load_model()
    assert not model.training
    state = torch.load(run.checkpoint("best"), weights_only=True)["model"]
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_keep_last_keeps_the_resume_state_of_a_completed_run(tmp_path):
    with registered(tiny_plugin("walk-tiny"), name="tiny"):
        run = fbench.run(detector="walk-tiny", dataset="synthetic", epochs=1, input_size=32,
                         batch_size=32, keep_last=True, out=str(tmp_path),
                         dataset_options={"n_per_class": 20, "image_size": 32})
    last = torch.load(run.checkpoint("last"), weights_only=True)
    assert {"optimizer", "scheduler", "rng", "epochs"} <= set(last)
    assert "optimizer" not in torch.load(run.checkpoint("best"), weights_only=True)


def test_the_python_api_shows_progress_when_a_person_watches(tmp_path, monkeypatch, capsys):
    """fbench.run is not silent for minutes in a terminal or notebook; scripts stay quiet."""
    from fbench import api

    def one_run(name: str) -> None:
        with registered(tiny_plugin("walk-tiny"), name="tiny"):
            fbench.run(detector="walk-tiny", dataset="synthetic", epochs=1, input_size=32,
                       batch_size=32, out=str(tmp_path / name),
                       dataset_options={"n_per_class": 20, "image_size": 32})

    monkeypatch.setattr(api, "interactive", lambda: False)
    one_run("quiet")
    assert "epoch 1/1" not in capsys.readouterr().err
    monkeypatch.setattr(api, "interactive", lambda: True)
    one_run("watched")
    assert "epoch 1/1" in capsys.readouterr().err
