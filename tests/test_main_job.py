"""The main job, exactly as the README gives it (slow: about 3 minutes on 2 cores)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_default_resnet18_on_synthetic_reaches_macro_f1_0_8(tmp_path):
    env = {**os.environ, "FBENCH_CACHE": str(tmp_path / "cache"), "FBENCH_LOAD_PLUGINS": ""}
    result = subprocess.run(
        [sys.executable, "-m", "fbench", "run", "--detector", "resnet18", "--dataset",
         "synthetic", "--no-progress", "--out", str(tmp_path / "runs")],
        capture_output=True, text=True, env=env, timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "macro-F1 (headline)" in result.stdout
    (run_dir,) = [p for p in (tmp_path / "runs").iterdir() if p.is_dir()]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["eval"]["macro_f1"] >= 0.8
    assert summary["eval"]["n"] == 600 and not summary["eval"]["collapsed"]
