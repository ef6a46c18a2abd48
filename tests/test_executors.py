"""Sweeps on an engine (issue 20): the runs of `fbench ablate` / `fbench regenerate` /
`fbench.sweep` train here, side by side in a process pool (--jobs), as Ray tasks or as SLURM jobs
(submitit); each run is stored exactly as a local run, a failed run is listed and the others
complete, and a sweep that died half-way trains only what is missing.

Workers are other processes: they load plugins through entry points, so the runs use the built-in
resnet18 (16 px, 36 images, 1 epoch), not a test plugin. Torch's CPU kernels sum in an order that
depends on the thread count, so every comparison is made at the workers' thread count (one per
run here): at equal threads, predictions are bit for bit the same. The Ray and submitit tests are
skipped when those packages are missing (`pip install -e ".[cluster]"`)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner
from tiny import tiny_cnn

import fbench
from fbench.cli import cli
from fbench.plugins.registry import registered
from fbench.train.config import RunConfig
from fbench.use.executors import SweepFailed

# a one-epoch toy collapses or not by chance: not what these tests are about
pytestmark = pytest.mark.filterwarnings("ignore:run .* collapsed:UserWarning")

SETTINGS = {"detector": "resnet18", "epochs": 1, "input_size": 16, "batch_size": 16,
            "device": "cpu", "dataset_options": {"n_per_class": 12, "image_size": 32}}
CLI_SETTINGS = ["--epochs", "1", "--input-size", "16", "--batch-size", "16", "--device", "cpu",
                "--dataset-option", "n_per_class=12", "--dataset-option", "image_size=32",
                "--no-progress"]
PROBS = ["prob_real", "prob_generated", "prob_edited"]


def configs(out: Path, seeds=range(4), **changes) -> list[RunConfig]:
    return [RunConfig(**{**SETTINGS, **changes}, seed=s, out=str(out)) for s in seeds]


def run_dirs(out: Path) -> list[Path]:
    return sorted(p.parent for p in out.glob("*/config.json"))


def probabilities(out: Path) -> dict[int, pd.DataFrame]:
    """seed -> the eval predictions' probability columns of the completed runs under ``out``."""
    return {r.config["seed"]: r.predictions[PROBS].reset_index(drop=True)
            for r in fbench.iter_runs(out)}


def assert_same_predictions(a: dict[int, pd.DataFrame], b: dict[int, pd.DataFrame]) -> None:
    assert sorted(a) == sorted(b)
    for seed in a:
        pd.testing.assert_frame_equal(a[seed], b[seed], check_exact=True)


@contextlib.contextmanager
def torch_threads(n: int):
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="module")
def reference(module_env, tmp_path_factory) -> dict[int, pd.DataFrame]:
    """The four runs made here, one after another, with one torch thread (as each worker)."""
    out = tmp_path_factory.mktemp("local") / "runs"
    with torch_threads(1):
        runs = fbench.sweep(configs(out))
    assert [r.config["seed"] for r in runs] == [0, 1, 2, 3]
    return probabilities(out)


class Broken:
    """ok: a tiny CNN; broken: a detector whose factory fails when the run builds it."""

    @fbench.hookimpl
    def register_detectors(self, register):
        def broken(num_classes=3):
            raise RuntimeError("the factory broke")

        register(fbench.DetectorSpec(name="ok", summary="tiny", input_size=32,
                                     factory=lambda num_classes=3: tiny_cnn(num_classes)))
        register(fbench.DetectorSpec(name="broken", summary="fails", input_size=32,
                                     factory=broken))


TINY = ["--epochs", "1", "--dataset-option", "n_per_class=6", "--dataset-option",
        "image_size=32", "--no-progress"]


# -- here: failures, choices, Ctrl-C -----------------------------------------------------------

def test_a_failed_run_is_listed_left_out_and_the_others_complete(tmp_path):
    out = tmp_path / "runs"
    with registered(Broken(), name="broken"):
        result = CliRunner().invoke(cli, ["ablate", "ok", "broken", "--out", str(out), *TINY])
        assert result.exit_code == 1, result.output  # the table is written; the shell hears
        assert "1 of 2 runs failed (left out of the table):" in result.output
        assert "broken (seed 0, transform raw): RuntimeError: the factory broke" in result.output
        table = (out / "ablation-detectors-synthetic.md").read_text()
        assert "| ok |" in table and "| broken |" not in table
        assert len(run_dirs(out)) == 1  # it failed building its model: before its directory
        again = CliRunner().invoke(cli, ["ablate", "ok", "broken", "--out", str(out), *TINY])
        assert again.exit_code == 1 and "ok (seed 0): reusing" in again.output
        alone = CliRunner().invoke(cli, ["ablate", "broken", "--out", str(out), *TINY])
    assert alone.exit_code == 2, alone.output
    assert "Error: every run failed." in alone.output and "Traceback" not in alone.output


def test_regenerate_never_writes_a_table_with_a_run_missing(tmp_path):
    boards = tmp_path / "boards.toml"
    boards.write_text('[[board]]\nfile = "t.md"\nkind = "leaderboard"\n'
                      'detectors = ["ok", "broken"]\nsettings = { epochs = 1 }\n'
                      'dataset_options = { n_per_class = 6, image_size = 32 }\n')
    with registered(Broken(), name="broken"):
        result = CliRunner().invoke(cli, ["regenerate", "--boards", str(boards), "--runs",
                                          str(tmp_path / "runs"), "--no-progress"])
    assert result.exit_code == 2, result.output
    assert "Error: 1 run(s) of the sweep failed (broken (seed 0, transform raw): " \
           "RuntimeError: the factory broke" in result.output
    assert not (tmp_path / "t.md").exists()
    assert len(run_dirs(tmp_path / "runs")) == 1  # ok's run is stored, to be reused


@pytest.mark.parametrize(("executor", "module", "name"), [("ray", "ray", "Ray"),
                                                           ("slurm", "submitit", "Submitit")])
def test_a_missing_engine_is_one_line_before_anything_runs(monkeypatch, tmp_path, executor,
                                                           module, name):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda m, *a: None if m == module else real(m, *a))
    monkeypatch.setattr("fbench.train.resolve.resolve", _refuse)
    result = CliRunner().invoke(cli, ["ablate", "resnet18", "--executor", executor,
                                      "--out", str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert result.output.strip() == (f"Error: the {executor} executor needs {name}. "
                                     'Fix: pip install -e ".[cluster]"')


def _refuse(*args, **kwargs):
    raise AssertionError("a configuration was resolved before the executor was checked")


def test_an_option_of_another_executor_is_refused(tmp_path):
    result = CliRunner().invoke(cli, ["ablate", "resnet18", "--jobs", "2", "--slurm-partition",
                                      "gpu", "--out", str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert "Error: --slurm-partition does not apply to --executor local." in result.output


def test_ctrl_c_in_a_parallel_sweep_names_the_finished_and_the_stopped_runs(tmp_path):
    """An engine that finished one run when Ctrl-C came: the interruption names it and the
    runs still unfinished, and says how to go on."""
    from fbench.report.ablate import AblationInterrupted, ablate
    from fbench.use.executors import Executor, Outcome

    class StopsAfterOne(Executor):
        name = "fake"

        def run(self, tasks, console=None, progress=True):
            self.unfinished = [t.index for t in tasks]
            self.unfinished.remove(tasks[0].index)
            yield Outcome(tasks[0].index, str(tmp_path / "run-of-ok"))
            raise KeyboardInterrupt

    base = RunConfig(dataset="synthetic", epochs=1, out=str(tmp_path / "runs"),
                     dataset_options={"n_per_class": 6, "image_size": 32})
    with registered(Broken(), name="broken"), pytest.raises(AblationInterrupted) as stop:
        ablate([("ok", "ok"), ("broken", "broken")], base, [0, 1], executor=StopsAfterOne())
    text = str(stop.value)
    assert ("interrupted with 3 runs unfinished, now stopped: ok (seed 1), broken (seed 0), "
            "broken (seed 1).") in text
    assert f"1 run finished before it:\n  ok (seed 0, transform raw): {tmp_path / 'run-of-ok'}" \
        in text
    assert "to continue, run the same command again" in text


def test_runs_stopped_by_the_signal_mean_the_sweep_was_interrupted(tmp_path):
    """Workers that report being stopped by Ctrl-C make the sweep an interruption (exit 130),
    even if this process's own KeyboardInterrupt never arrived: not "every run failed"."""
    from fbench.report.ablate import AblationInterrupted, ablate
    from fbench.use.executors import NOT_STARTED, Executor, Outcome

    class WorkersStopped(Executor):
        name, parallel = "fake", True

        def run(self, tasks, console=None, progress=True):
            yield Outcome(tasks[0].index, str(tmp_path / "run-of-ok"))
            yield Outcome(tasks[1].index, None, "interrupted: before epoch 1 of 5 finished")
            for task in tasks[2:]:
                yield Outcome(task.index, None, NOT_STARTED)

    base = RunConfig(dataset="synthetic", epochs=1, out=str(tmp_path / "runs"),
                     dataset_options={"n_per_class": 6, "image_size": 32})
    with registered(Broken(), name="broken"), pytest.raises(AblationInterrupted) as stop:
        ablate([("ok", "ok")], base, [0, 1, 2], executor=WorkersStopped(), console=None)
    assert stop.value.exit_code == 130
    text = str(stop.value)
    assert "interrupted with 2 runs unfinished, now stopped: ok (seed 1" in text
    assert "ok (seed 2" in text and "1 run finished before it" in text


# -- side by side in a process pool ------------------------------------------------------------

@pytest.mark.slow  # a cluster or process pool starting: seconds to a minute each
def test_jobs_2_gives_the_predictions_of_one_after_another(reference, tmp_path):
    threads = max(1, (os.cpu_count() or 1) // 2)  # what each of the two workers uses
    if threads != 1:  # the reference was made with one thread: make one with as many
        with torch_threads(threads):
            fbench.sweep(configs(tmp_path / "here", seeds=range(2)))
        expected = probabilities(tmp_path / "here")
    else:
        expected = {s: reference[s] for s in (0, 1)}
    out = tmp_path / "runs"
    result = CliRunner().invoke(cli, ["ablate", "resnet18", "--seeds", "2", "--jobs", "2",
                                      "--out", str(out), *CLI_SETTINGS])
    assert result.exit_code == 0, result.output
    assert "done resnet18 (seed 0, transform raw)" in result.output
    assert "done resnet18 (seed 1, transform raw)" in result.output
    assert_same_predictions(probabilities(out), expected)
    # the table says how to make it again, not where it was made
    assert "--jobs" not in (out / "ablation-detectors-synthetic.md").read_text()


@pytest.mark.slow  # a cluster or process pool starting: seconds to a minute each
def test_ctrl_c_stops_the_runs_side_by_side_and_starts_no_other(tmp_path):
    """A real Ctrl-C (SIGINT to the whole process group, as a terminal sends it) while two runs
    train side by side: both unwind and mark themselves interrupted, the third never starts,
    and fbench exits 130 naming them."""
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "runs"
    command = [sys.executable, "-m", "fbench", "ablate", "resnet18", "--seeds", "3", "--jobs",
               "2", "--out", str(out), *CLI_SETTINGS, "--epochs", "500", "--patience", "0",
               "--collapse-epochs", "0"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while len(_states(out)) < 2 or set(_states(out)) != {"running"}:  # the handshake
            assert proc.poll() is None, proc.communicate()[0]  # it ended: say why
            assert time.monotonic() < deadline, "two runs never started training"
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGINT)
        output, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, output
    assert "Traceback" not in output, output
    assert ("interrupted with 3 runs unfinished, now stopped: resnet18 (seed 0), resnet18 "
            "(seed 1), resnet18 (seed 2).") in output
    assert _states(out) == ["interrupted", "interrupted"]


def _states(out: Path) -> list[str]:
    import json

    states = []
    for status in out.glob("*/status.json"):
        with contextlib.suppress(ValueError):  # being written
            states.append(json.loads(status.read_text())["state"])
    return states


# -- Ray ---------------------------------------------------------------------------------------

@pytest.mark.slow  # a cluster or process pool starting: seconds to a minute each
def test_ray_started_for_the_sweep_reports_a_failed_run_and_completes_the_other(
        tmp_path, monkeypatch):
    ray = pytest.importorskip("ray")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)  # a local Ray, started for the sweep
    assert not ray.is_initialized()
    out = tmp_path / "runs"
    good = configs(out, seeds=[0])
    bad = configs(out, seeds=[0], options={"init": "bogus"})  # checked only when built
    with pytest.raises(SweepFailed) as failed:
        fbench.sweep(good + bad, executor="ray", num_cpus=2)
    assert len(failed.value.failures) == 1
    title, error = failed.value.failures[0]
    assert title == "resnet18 (seed 0, transform raw)" and "unknown init 'bogus'" in error
    assert [r.config["seed"] for r in failed.value.runs] == [0]
    assert not ray.is_initialized()  # the Ray it started is gone


@pytest.fixture(scope="module")
def submitit():
    return pytest.importorskip("submitit")


@pytest.fixture(scope="module")
def two_nodes():
    """A Ray cluster of two simulated nodes of one CPU each, joined by this process."""
    pytest.importorskip("ray")
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    ray.init(address=cluster.address, log_to_driver=False)
    yield cluster
    ray.shutdown()
    cluster.shutdown()


@pytest.mark.slow  # a cluster or process pool starting: seconds to a minute each
def test_ray_sweep_on_two_nodes_matches_local_and_resumes(two_nodes, reference, tmp_path,
                                                          capsys):
    import ray

    assert len([n for n in ray.nodes() if n["Alive"]]) == 2
    out = tmp_path / "runs"
    # a sweep that died half-way: two of its four runs are stored
    fbench.sweep(configs(out, seeds=[0, 1]), executor="ray")
    assert len(run_dirs(out)) == 2
    capsys.readouterr()
    runs = fbench.sweep(configs(out), executor="ray", progress=True)
    err = capsys.readouterr().err
    assert err.count(": reusing ") == 2 and "resnet18 (seed 0): reusing" in err
    assert "done resnet18 (seed 2, transform raw)" in err
    assert "done resnet18 (seed 3, transform raw)" in err
    assert len(run_dirs(out)) == 4  # only the two missing ones trained
    assert [r.config["seed"] for r in runs] == [0, 1, 2, 3]
    assert_same_predictions(probabilities(out), reference)
    assert ray.is_initialized()  # a Ray the caller connected to is left connected


# -- SLURM through submitit (its local stand-in) -------------------------------------------------

@pytest.mark.slow  # a cluster or process pool starting: seconds to a minute each
def test_submitit_jobs_store_the_runs_a_local_sweep_makes(submitit, reference, tmp_path):
    out = tmp_path / "runs"
    runs = fbench.sweep(configs(out, seeds=[0, 1]), executor="slurm", slurm_cluster="local",
                        slurm_folder=str(tmp_path / "jobs"), slurm_time="0:10:00")
    assert [r.config["seed"] for r in runs] == [0, 1]
    assert_same_predictions(probabilities(out), {s: reference[s] for s in (0, 1)})
    assert list((tmp_path / "jobs").glob("*/*_log.err"))  # the jobs' own logs, not in the store


@pytest.mark.slow  # a cluster or process pool starting: seconds to a minute each
def test_a_ray_sweep_killed_half_way_trains_only_the_missing_runs_again(tmp_path, monkeypatch,
                                                                       capsys):
    """A real kill, not a sweep that was made short: the sweep's process group (driver, the
    Ray it started and its workers) gets SIGKILL once a run is stored and before all are;
    the same sweep again reuses exactly the runs that completed and trains the rest."""
    import json
    import signal
    import subprocess
    import sys
    import time

    pytest.importorskip("ray")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    out = tmp_path / "runs"
    settings = {**SETTINGS, "epochs": 3}
    script = ("import fbench\nfrom fbench.train.config import RunConfig\n"
              f"fbench.sweep([RunConfig(**{settings!r}, seed=s, out={str(out)!r}) "
              "for s in range(4)], executor='ray', num_cpus=1)\n")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while "completed" not in _states(out):
            assert proc.poll() is None, proc.communicate()[0]  # it ended: say why
            assert time.monotonic() < deadline, "no run completed"
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    completed = {json.loads((d / "config.json").read_text())["seed"] for d in run_dirs(out)
                 if json.loads((d / "status.json").read_text())["state"] == "completed"}
    assert 1 <= len(completed) < 4  # killed half-way

    capsys.readouterr()
    runs = fbench.sweep(configs(out, epochs=3), executor="ray", num_cpus=2, progress=True)
    text = capsys.readouterr().err
    assert text.count(": reusing ") == len(completed), text
    for seed in set(range(4)) - completed:
        assert f"done resnet18 (seed {seed}, transform raw)" in text, text
    assert [r.config["seed"] for r in runs] == [0, 1, 2, 3]
    assert sum(s == "completed" for s in _states(out)) == 4  # the killed run is not counted
