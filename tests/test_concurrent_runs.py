"""Runs started at the same moment into one runs directory each get their own directory, all
complete, and the index every leaderboard reads stays one valid JSON line per run."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from fbench.report.leaderboard import completed_runs, leaderboard


def test_parallel_runs_share_a_runs_directory(tmp_path):
    out = tmp_path / "runs"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "FBENCH_CACHE": str(tmp_path / "cache")}
    procs = [subprocess.Popen(
        [sys.executable, "-m", "fbench", "run", "--detector", "resnet18", "--dataset",
         "synthetic", "--epochs", "1", "--input-size", "32", "--batch-size", "16",
         "--dataset-option", "n_per_class=16", "--dataset-option", "image_size=32",
         "--seed", str(seed), "--no-progress", "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        for seed in range(4)]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(o[-1500:] for o in outputs)

    run_dirs = sorted(p for p in out.iterdir() if p.is_dir())
    assert len(run_dirs) == 4
    states = [json.loads((d / "status.json").read_text())["state"] for d in run_dirs]
    assert states == ["completed"] * 4
    configs = [json.loads((d / "config.json").read_text()) for d in run_dirs]  # every file whole
    assert sorted(c["seed"] for c in configs) == [0, 1, 2, 3]
    board = leaderboard(completed_runs(out))
    assert len(board) == 1 and board.iloc[0]["seeds"] == 4
