"""A run killed with SIGKILL in the middle of an epoch resumes from its last checkpoint and ends
exactly where an uninterrupted run with the same seed ends (CPU)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from fbench.cli import cli
from fbench.runs.store import load_run

ARGS = ["run", "--detector", "resnet18", "--dataset", "synthetic", "--epochs", "3",
        "--input-size", "32", "--batch-size", "8", "--dataset-option", "n_per_class=40",
        "--dataset-option", "image_size=32", "--no-progress", "--seed", "3"]


# fbench's CLI in a process that also registers "barrier-net": a tiny CNN (with BatchNorm, so
# precise BN takes part) that, when FBENCH_TEST_BLOCK_AFTER=N is set, signals and then blocks
# in its N-th training forward pass
# (so a test kills the run at a known step, not after a guessed sleep)
BARRIER = """
import os, sys, time
import fbench
from fbench.cli import main

class Blocking(fbench.ClassifierDetector):
    calls = 0
    def forward(self, batch):
        if self.training:
            Blocking.calls += 1
            if Blocking.calls == int(os.environ.get("FBENCH_TEST_BLOCK_AFTER", 0)):
                open(os.environ["FBENCH_TEST_BLOCKED"], "w").close()
                while True:
                    time.sleep(1)
        return super().forward(batch)

def factory(num_classes=3):
    import torch
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8),
                              torch.nn.ReLU(),
                              torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                              torch.nn.Linear(8, num_classes))
    return Blocking(net)

class Plugin:
    @fbench.hookimpl
    def register_detectors(self, register):
        register(fbench.DetectorSpec(name="barrier-net", summary="t", factory=factory,
                                     input_size=32))

with fbench.registered(Plugin(), name="barrier"):
    sys.argv = ["fbench", *sys.argv[1:]]
    main()
"""


def _fbench(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", BARRIER, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kw)


def _only_run(out: Path) -> Path:
    runs = [p for p in out.iterdir() if p.is_dir()] if out.is_dir() else []
    return runs[0] if len(runs) == 1 else None


def test_sigkill_mid_plateau_then_resume_equals_uninterrupted(tmp_path):
    """Killed in epoch 3 of a ceiling of 5, one epoch into a plateau (patience 2, and a
    min-delta no epoch can beat): both runs stop on the plateau after epoch 3, with the same
    cosine schedule, precise-BN statistics and predictions."""
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    args = [a if a != "resnet18" else "barrier-net" for a in ARGS]
    args[args.index("--epochs") + 1] = "5"
    args += ["--patience", "2", "--min-delta", "0.99", "--schedule", "cosine",
             "--warmup-epochs", "1"]
    reference = _fbench(*args, "--out", str(tmp_path / "ref"), env=env)

    # 85 training images at batch 8 (drop_last): 10 steps an epoch; block in step 5 of epoch 3
    blocked = tmp_path / "blocked"
    killed = _fbench(*args, "--out", str(tmp_path / "killed"),
                     env={**env, "FBENCH_TEST_BLOCK_AFTER": "25",
                          "FBENCH_TEST_BLOCKED": str(blocked)})
    deadline = time.time() + 300
    while not blocked.exists() and killed.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert killed.poll() is None, "the run ended before it could be killed: " + \
        killed.communicate()[0][-2000:]
    run_dir = _only_run(tmp_path / "killed")
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait()
    assert json.loads((run_dir / "status.json").read_text())["state"] == "running"
    assert len(json.loads((run_dir / "epochs.json").read_text())) == 2

    resumed = _fbench("run", "--resume", str(run_dir), "--no-progress", env=env)
    out, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, out[-3000:]
    assert "resuming" in out and "after epoch 2" in out
    assert "stopped after epoch 3: no validation gain (> 0.99) in 2 epochs" in out
    ref_out, _ = reference.communicate(timeout=600)
    assert reference.returncode == 0, ref_out[-3000:]

    a, b = load_run(_only_run(tmp_path / "ref")), load_run(run_dir)
    assert b.summary["resumed_after_epoch"] == 2
    assert a.summary["stopped"] == b.summary["stopped"] == {
        "reason": "plateau", "epoch": 3, "converged": True}
    assert a.summary["epochs_trained"] == 3 and a.epochs["precise_bn_batches"].tolist() == [10] * 3
    assert a.epochs["lr"].tolist() == b.epochs["lr"].tolist()
    for split in ("eval", "val"):
        assert a.summary[split] == b.summary[split]
    pd.testing.assert_frame_equal(a.predictions.drop(columns="id"),
                                  b.predictions.drop(columns="id"))
    assert a.epochs["train_loss"].tolist() == b.epochs["train_loss"].tolist()


def test_resume_refuses_a_completed_run_and_changed_settings(tmp_path):
    out = tmp_path / "runs"
    small = [a.replace("n_per_class=40", "n_per_class=12").replace("3", "1")
             if a in ("n_per_class=40", "3") else a for a in ARGS]
    done = CliRunner().invoke(cli, [*small, "--out", str(out)])
    assert done.exit_code == 0, done.output
    run_dir = _only_run(out)
    again = CliRunner().invoke(cli, ["run", "--resume", str(run_dir)])
    assert again.exit_code != 0 and "already completed" in again.output
    changed = CliRunner().invoke(cli, ["run", "--resume", str(run_dir), "--epochs", "5"])
    assert changed.exit_code != 0 and "cannot change" in changed.output
    missing = CliRunner().invoke(cli, ["run", "--resume", str(tmp_path)])
    assert missing.exit_code != 0 and "not a run directory" in missing.output


@pytest.fixture(autouse=True)
def _subprocess_isolation(monkeypatch, tmp_path):
    monkeypatch.setenv("FBENCH_CACHE", str(tmp_path / "cache"))
