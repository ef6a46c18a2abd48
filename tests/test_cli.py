"""The command line: listing, help, and bad input that stops with one clear line."""

from __future__ import annotations

import subprocess
import sys

import pytest
from click.testing import CliRunner

from fbench.cli import cli


@pytest.fixture
def invoke():
    runner = CliRunner()

    def _invoke(*args):
        return runner.invoke(cli, list(args), catch_exceptions=False)

    return _invoke


def test_help_and_list_do_not_import_torch():
    code = ("import sys; from fbench.cli import cli\n"
            "try:\n    cli(['list'], standalone_mode=False)\nexcept SystemExit: pass\n"
            "heavy = [m for m in ('torch', 'timm', 'mediapipe', 'cv2') if m in sys.modules]\n"
            "print('HEAVY', heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"FBENCH_LOAD_PLUGINS": "", "PATH": ""})
    assert "HEAVY []" in out.stdout, out.stdout + out.stderr


def test_list_shows_builtins(invoke):
    result = invoke("list")
    assert result.exit_code == 0
    for name in ("resnet18", "synthetic", "raw"):
        assert name in result.output
    assert "resnet18" in invoke("list", "detectors", "res*").output
    assert "resnet18" not in invoke("list", "detectors", "f3net-*").output


def test_plugins_lists_builtins(invoke):
    result = invoke("plugins")
    assert result.exit_code == 0 and "built-in" in result.output and "resnet18" in result.output


def test_run_help_explains_options(invoke):
    out = invoke("run", "--help").output
    for flag in ("--detector", "--dataset", "--transform", "--epochs", "--batch-size", "--lr",
                 "--seed", "--device", "--out", "--config", "--set"):
        assert flag in out


@pytest.mark.parametrize("args, message", [
    (["--detector", "resnt18"], "did you mean 'resnet18'"),
    (["--dataset", "synthetc"], "did you mean 'synthetic'"),
    (["--transform", "rwa"], "did you mean 'raw'"),
    (["--set", "depht=3"], "takes no option 'depht'"),
    (["--dataset-option", "n_per_clas=3"], "n_per_class"),
    (["--data-root", "/nonexistent/dir"], "does not exist"),
    (["--device", "cuda:0"], "no CUDA GPU"),
])
def test_bad_input_is_one_clear_line(invoke, tmp_path, args, message):
    if "cuda" in args[-1]:
        pytest.importorskip("torch")
        import torch

        if torch.cuda.is_available():
            pytest.skip("a GPU is present")
    result = CliRunner().invoke(cli, ["run", "--out", str(tmp_path / "runs"),
                                      "--dataset-option", "n_per_class=6", "--epochs", "1",
                                      *args])
    assert result.exit_code != 0
    assert message in result.output, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_out_that_is_a_file_is_refused_and_untouched(invoke, tmp_path):
    f = tmp_path / "runs"
    f.write_text("precious")
    result = CliRunner().invoke(cli, ["run", "--out", str(f), "--epochs", "1",
                                      "--dataset-option", "n_per_class=6"])
    assert result.exit_code != 0 and "is a file" in result.output
    assert f.read_text() == "precious"


def test_bad_config_file_key(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("detectr = 'resnet18'\n")
    result = CliRunner().invoke(cli, ["run", "--config", str(cfg)])
    assert result.exit_code != 0 and "did you mean detector" in result.output


def test_show_of_a_non_run(tmp_path):
    result = CliRunner().invoke(cli, ["show", str(tmp_path)])
    assert result.exit_code != 0 and "not a run directory" in result.output


def test_python_m_fbench():
    out = subprocess.run([sys.executable, "-m", "fbench", "--version"], capture_output=True,
                         text=True, check=True)
    assert "fbench" in out.stdout
