"""The third-party door, for real: pip-install docs/examples/fbench-tiny-cnn into a fresh
virtual environment and find its detector through the entry point."""

from __future__ import annotations

import os
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "docs" / "examples" / "fbench-tiny-cnn"


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    """A new venv that sees this environment's packages (fbench and torch, via a .pth that
    adds our site-packages as a site dir) so only the example package itself is installed."""
    root = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", str(root)], check=True)
    py = root / "bin" / "python"
    where = "import sysconfig; print(sysconfig.get_path('purelib'))"
    target = subprocess.run([str(py), "-c", where], capture_output=True, text=True,
                            check=True).stdout.strip()
    parents = [sysconfig.get_path("purelib"), *site.getsitepackages()]
    lines = "".join(f"import site; site.addsitedir({p!r})\n" for p in dict.fromkeys(parents))
    Path(target, "zz_parent_env.pth").write_text(lines)
    subprocess.run([str(py), "-m", "pip", "install", "--no-deps", "--no-build-isolation",
                    "--no-index", "-q", str(EXAMPLE)], check=True)
    return root


def _fbench(venv: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k != "FBENCH_LOAD_PLUGINS"}
    environ.update({"COLUMNS": "250", **env})  # rich would wrap long names at 80
    return subprocess.run([str(venv / "bin" / "python"), "-m", "fbench", *args],
                          capture_output=True, text=True, env=environ, timeout=600)


def test_installed_example_appears_in_plugins_and_list(venv):
    plugins = _fbench(venv, "plugins")
    assert plugins.returncode == 0, plugins.stderr
    assert "fbench-tiny-cnn" in plugins.stdout and "tiny-cnn" in plugins.stdout
    listed = _fbench(venv, "list", "detectors")
    assert "tiny-cnn" in listed.stdout and "resnet18" in listed.stdout


def test_load_plugins_env_excludes_it(venv):
    listed = _fbench(venv, "list", "detectors", FBENCH_LOAD_PLUGINS="")
    assert listed.returncode == 0 and "tiny-cnn" not in listed.stdout
    listed = _fbench(venv, "list", "detectors", FBENCH_LOAD_PLUGINS="fbench-tiny-cnn")
    assert "tiny-cnn" in listed.stdout


def test_installed_example_runs(venv, tmp_path):
    result = _fbench(venv, "run", "--detector", "tiny-cnn", "--dataset", "synthetic",
                     "--epochs", "1", "--set", "width=4", "--out", str(tmp_path / "runs"),
                     "--dataset-option", "n_per_class=30", "--dataset-option", "image_size=32",
                     "--no-progress", FBENCH_CACHE=str(tmp_path / "cache"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "macro-F1" in result.stdout
    runs = list((tmp_path / "runs").iterdir())
    summary = [p for p in runs if p.is_dir()][0] / "summary.json"
    assert "tiny-cnn" in summary.read_text()
