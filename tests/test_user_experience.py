"""What a user sees when things go sideways (issue 18): Ctrl-C in `fbench ablate` and
`fbench regenerate` says which runs finished and how to go on; Python warnings come out once, in
fbench's voice; cheap checks (a missing checkpoint, missing inputs, a missing directory) come
before anything slow; `fbench bench` says when its numbers are noise; `fbench predict` warns
about tiny images; every `ablate` option is documented.

Training is replaced by a stand-in wherever the behaviour under test is not training: one real
tiny run, shared by the module, is what the stand-in hands back."""

from __future__ import annotations

import os
import signal
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from tiny import tiny_cnn

import fbench
from fbench.cli import cli
from fbench.plugins.registry import registered
from fbench.runs.writer import RunInterrupted

ARGS = ["--dataset", "synthetic", "--epochs", "1", "--dataset-option", "n_per_class=6",
        "--dataset-option", "image_size=32", "--no-progress"]


class Two:
    """Two tiny detectors: ux-a (trained once for the module) and ux-b (never really)."""

    @fbench.hookimpl
    def register_detectors(self, register):
        for name in ("ux-a", "ux-b"):
            register(fbench.DetectorSpec(name=name, summary="tiny", input_size=32,
                                         factory=lambda num_classes=3: tiny_cnn(num_classes)))


@pytest.fixture(scope="module")
def stored(module_env, tmp_path_factory):
    """(runs directory, the one completed run of ux-a in it)."""
    runs = tmp_path_factory.mktemp("ux") / "runs"
    with registered(Two(), name="two"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a 1-epoch toy may collapse: not this fixture's job
        result = CliRunner().invoke(cli, ["ablate", "ux-a", "--out", str(runs), *ARGS])
    assert result.exit_code == 0, result.output
    (run_dir,) = [p for p in runs.iterdir() if p.is_dir()]
    return runs, run_dir


def _stand_in(monkeypatch, stored_run: Path, stop: BaseException | None = None,
              warn: tuple[str, ...] = ()) -> list[str]:
    """Training replaced: ux-a "trains" into the stored run; ux-b warns ``warn`` and then
    stops with ``stop`` (or also hands back the stored run). Returns the detectors trained."""
    called: list[str] = []

    def train(resolved, console=None, progress=True, resume=None):
        name = resolved.config.detector
        called.append(name)
        if name == "ux-b":
            for text in warn:
                warnings.warn(text, stacklevel=1)
            if stop is not None:
                raise stop
        return stored_run

    monkeypatch.setattr("fbench.train.engine.train_and_evaluate", train)
    return called


def _no_traceback(output: str) -> None:
    assert "Traceback" not in output and "Aborted!" not in output, output


# -- 1. Ctrl-C in ablate / regenerate ---------------------------------------------------------

@pytest.mark.parametrize(("epoch", "signum", "code"), [(2, signal.SIGINT, 130),
                                                        (0, signal.SIGTERM, 143)])
def test_ablate_interrupted_names_finished_runs_and_how_to_continue(
        stored, monkeypatch, tmp_path, epoch, signum, code):
    runs, run_dir = stored
    cause = KeyboardInterrupt()
    cause.signum = signum  # as the SIGTERM handler's exception carries it
    stopped = tmp_path / "ux-b-run"
    _stand_in(monkeypatch, run_dir, RunInterrupted(stopped, epoch, 5, cause))
    with registered(Two(), name="two"):
        result = CliRunner().invoke(cli, ["ablate", "ux-a", "ux-b", "--out", str(runs),
                                          "-o", str(tmp_path / "t.md"), *ARGS])
    assert result.exit_code == code, result.output
    _no_traceback(result.output)
    out = result.output
    assert "1 run finished before it:" in out
    assert f"ux-a (seed 0, transform raw): {run_dir}" in out
    if epoch:
        assert (f"ux-b (seed 0): interrupted after epoch 2 of 5; resume with: fbench run "
                f"--resume {stopped}") in out
    else:
        assert ("ux-b (seed 0): interrupted before epoch 1 of 5 finished; nothing to resume "
                f"in {stopped}") in out
    assert "to continue, run the same command again: it reuses every completed run" in out
    assert not (tmp_path / "t.md").exists()  # no table of half an ablation


def test_ablate_interrupted_with_no_reuse_says_to_drop_it(stored, monkeypatch, tmp_path):
    runs, run_dir = stored
    _stand_in(monkeypatch, run_dir, KeyboardInterrupt())
    with registered(Two(), name="two"):
        result = CliRunner().invoke(cli, ["ablate", "ux-a", "ux-b", "--no-reuse",
                                          "--out", str(tmp_path / "runs"), *ARGS])
    assert result.exit_code == 130, result.output
    _no_traceback(result.output)
    assert "(no run was training)" in result.output
    assert "run the same command again without --no-reuse" in result.output


def _boards(tmp_path: Path) -> Path:
    boards = tmp_path / "boards.toml"
    board = ('[[board]]\nfile = "{f}"\nkind = "leaderboard"\ndetectors = ["{d}"]\n'
             'settings = {{ epochs = 1 }}\n'
             'dataset_options = {{ n_per_class = 6, image_size = 32 }}\n')
    boards.write_text(board.format(f="a.md", d="ux-a") + board.format(f="b.md", d="ux-b"))
    return boards


def test_regenerate_interrupted_names_written_tables_and_finished_runs(
        stored, monkeypatch, tmp_path):
    runs, run_dir = stored
    stopped = tmp_path / "ux-b-run"
    _stand_in(monkeypatch, run_dir, RunInterrupted(stopped, 1, 3, KeyboardInterrupt()))
    boards = _boards(tmp_path)
    with registered(Two(), name="two"):
        result = CliRunner().invoke(cli, ["regenerate", "--boards", str(boards),
                                          "--runs", str(runs), "--no-progress"])
    assert result.exit_code == 130, result.output
    _no_traceback(result.output)
    assert (tmp_path / "a.md").is_file() and not (tmp_path / "b.md").exists()
    assert f"written before it: {tmp_path / 'a.md'}" in result.output
    assert f"resume with: fbench run --resume {stopped}" in result.output
    assert "no run finished before it." in result.output  # of b.md's runs
    assert "run the same command again" in result.output


def test_regenerate_check_interrupted_says_the_scratch_runs_are_gone(
        stored, monkeypatch, tmp_path):
    runs, run_dir = stored
    _stand_in(monkeypatch, run_dir, RunInterrupted(tmp_path / "x", 1, 3, KeyboardInterrupt()))
    boards = _boards(tmp_path)
    (tmp_path / "b.md").write_text("| model |\n|---|\n| x |\n")
    with registered(Two(), name="two"):
        result = CliRunner().invoke(cli, ["regenerate", "--check", "b.md", "--boards",
                                          str(boards), "--no-progress"])
    assert result.exit_code == 130, result.output
    _no_traceback(result.output)
    assert "scratch directory, removed" in result.output
    assert "--resume" not in result.output  # that run's directory is gone


# -- 2. warnings in fbench's voice -------------------------------------------------------------

def test_ablate_prints_each_python_warning_once_in_its_own_voice(stored, monkeypatch):
    runs, run_dir = stored
    text = "run 20260101-ux-b collapsed to the majority class"
    _stand_in(monkeypatch, run_dir, warn=(text, text, "another   thing\nsaid"))
    with registered(Two(), name="two"), warnings.catch_warnings(record=True) as leaked:
        warnings.simplefilter("always")  # anything not captured by ablate lands here
        result = CliRunner().invoke(cli, ["ablate", "ux-b", "--no-reuse", "--out", str(runs),
                                          "-o", str(runs.parent / "t.md"), *ARGS])
    assert result.exit_code == 0, result.output
    assert result.output.count(f"warning: {text}") == 1
    assert "warning: another thing said" in result.output
    assert "UserWarning" not in result.output and ".py:" not in result.output
    assert not [w for w in leaked if "collapsed" in str(w.message)]


# -- 3. cheap checks first ---------------------------------------------------------------------

def _no_loading(monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("the slow part ran before the cheap check")

    monkeypatch.setattr("fbench.train.resolve.resolve", refuse)
    monkeypatch.setattr("fbench.use.predict._load_model", refuse)


def test_resume_without_checkpoint_is_refused_before_the_data_loads(
        stored, monkeypatch, tmp_path):
    _, run_dir = stored
    stopped = tmp_path / "stopped-in-epoch-1"
    stopped.mkdir()
    (stopped / "config.json").write_text((run_dir / "config.json").read_text())
    (stopped / "status.json").write_text('{"state": "interrupted"}')
    _no_loading(monkeypatch)
    result = CliRunner().invoke(cli, ["run", "--resume", str(stopped)])
    assert result.exit_code == 2, result.output
    assert "has no checkpoint to resume from" in result.output
    _no_traceback(result.output)
    completed = CliRunner().invoke(cli, ["run", "--resume", str(run_dir)])
    assert completed.exit_code == 2 and "already completed" in completed.output


def test_predict_with_only_missing_inputs_fails_before_the_model_loads(
        stored, monkeypatch, tmp_path):
    _, run_dir = stored
    _no_loading(monkeypatch)
    with registered(Two(), name="two"):
        result = CliRunner().invoke(cli, ["predict", str(run_dir), "/nonexistent.png",
                                          "-o", str(tmp_path / "p.csv")])
    assert result.exit_code == 2, result.output
    assert "Error: /nonexistent.png does not exist; nothing to score." in result.output
    assert not (tmp_path / "p.csv").exists()


def _png(path: Path, side: int) -> Path:
    import cv2

    rng = np.random.default_rng(side)
    cv2.imwrite(str(path), rng.integers(0, 255, (side, side, 3), dtype=np.uint8))
    return path


def test_predict_keeps_rows_for_missing_inputs_and_warns_about_tiny_images(stored, tmp_path):
    _, run_dir = stored
    tiny, fine = _png(tmp_path / "dot.png", 1), _png(tmp_path / "face.png", 32)
    out = tmp_path / "p.csv"
    with registered(Two(), name="two"):
        result = CliRunner().invoke(cli, ["predict", str(run_dir), str(tiny), str(fine),
                                          str(tmp_path / "gone.png"), "-o", str(out),
                                          "--no-progress"])
    assert result.exit_code == 0, result.output
    rows = pd.read_csv(out, keep_default_na=False).set_index("path")
    assert rows.loc[str(tmp_path / "gone.png"), "error"] == "does not exist"
    assert (rows.loc[[str(tiny), str(fine)], "status"] == "scored").all()
    # said once, in fbench's voice (no Python warning line with a source path)
    text = " ".join(result.output.split())
    small = [ln for ln in result.output.splitlines() if "upscaled" in ln]
    assert len(small) == 1 and "UserWarning" not in result.output
    assert f"warning: {tiny} (1x1 px): under 1/4 of the run's 32 px input" in text
    assert str(fine) not in small[0]


def test_show_says_a_missing_directory_does_not_exist(tmp_path):
    result = CliRunner().invoke(cli, ["show", str(tmp_path / "no" / "such")])
    assert result.exit_code == 2, result.output
    assert f"Error: {tmp_path / 'no' / 'such'} does not exist." in result.output
    not_a_run = CliRunner().invoke(cli, ["show", str(tmp_path)])
    assert not_a_run.exit_code == 2 and "does not exist" not in not_a_run.output


# -- 4. small things ---------------------------------------------------------------------------

@pytest.mark.parametrize("command", ["ablate", "regenerate"])
def test_every_option_is_documented(command):
    from fbench.cli.report import ablate_cmd, regenerate_cmd

    cmd = {"ablate": ablate_cmd, "regenerate": regenerate_cmd}[command]
    bare = [p.name for p in cmd.params if p.param_type_name == "option" and not p.help]
    assert bare == []
    result = CliRunner().invoke(cli, [command, "--help"])
    assert result.exit_code == 0 and "--no-progress" in result.output


def _bench_result(**fields):
    from fbench.use.bench import BenchResult

    base = dict(detector="ux-a", device="cpu", batch_size=4, input_size=32, precision="fp32",
                channels_last=False, compiled=False, threads=2, data_images_per_s=100.0,
                bare_images_per_s=50.0, step_images_per_s=86.0, epoch_images_per_s=40.0,
                overhead_ratio=0.58, data_to_model_ratio=2.0, peak_memory_mb=10.0,
                gflop_per_step=None, achieved_tflops=None, params_m=0.01,
                overhead_low=0.41, overhead_high=0.9)
    return BenchResult(**{**base, **fields})


@pytest.mark.parametrize(("load", "busy"), [(9.0, True), (0.5, False)])
def test_bench_prints_the_spread_and_the_load_with_a_caveat_when_busy(
        monkeypatch, tmp_path, load, busy):
    monkeypatch.setattr("fbench.use.bench.run_bench", lambda *a, **k: _bench_result())
    monkeypatch.setattr(os, "getloadavg", lambda: (load, load, load))
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    out = tmp_path / "bench.md"
    result = CliRunner().invoke(cli, ["bench", "-d", "ux-a", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "ux-a: overhead 0.580 (median; 0.410 to 0.900 over the rounds)" in result.output
    assert f"1-minute load average {load:.2f} on 2 cores before measuring" in result.output
    assert ("caveat: the machine was busy" in result.output) is busy
    assert ("caveat: the machine was busy" in out.read_text()) is busy


def test_run_bench_records_the_spread_of_its_rounds(tmp_path):
    from fbench.train.config import RunConfig
    from fbench.use.bench import run_bench

    config = RunConfig(detector="ux-a", dataset="synthetic", device="cpu", batch_size=4,
                       out=str(tmp_path), dataset_options={"n_per_class": 4, "image_size": 16})
    with registered(Two(), name="two"):
        r = run_bench(config, steps=1, warmup=0, rounds=3, data_batches=1)
    assert r.overhead_low <= r.overhead_ratio <= r.overhead_high
