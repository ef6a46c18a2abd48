"""Atomic writes: a failed or killed write never leaves a half-written file behind."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fbench import FbenchError
from fbench.files import atomic_path, read_json, write_json
from fbench.runs.store import new_run_dir, prepare_out_dir


def test_failed_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "summary.json"
    write_json(target, {"macro_f1": 0.9})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text('{"macro_f1": 0.1, "trunc')
            raise RuntimeError("killed mid-write")
    assert read_json(target) == {"macro_f1": 0.9}
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_sigkill_during_a_write_keeps_the_old_file(tmp_path):
    """Deterministic: the writer is killed at the worst moment, after the new content is
    written and synced under its temporary name and before the rename. The child tells the
    parent it got there (a line on its stdout) and waits; no sleep decides the timing."""
    target = tmp_path / "big.json"
    write_json(target, {"version": 1, "rows": list(range(1000))})
    writer = textwrap.dedent(f"""
        import os, sys, threading
        import fbench.files

        def stalled_replace(src, dst):
            print(src, flush=True)  # the whole new file is on disk under a temporary name
            threading.Event().wait()  # wait here until killed

        fbench.files.os.replace = stalled_replace
        fbench.files.write_json({str(target)!r}, {{"version": 2, "rows": list(range(200_000))}})
    """)
    proc = subprocess.Popen([sys.executable, "-c", writer], stdout=subprocess.PIPE, text=True)
    try:
        tmp_name = proc.stdout.readline().strip()
        assert tmp_name, "the writer died before reaching the rename"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    assert json.loads(target.read_text()) == {"version": 1, "rows": list(range(1000))}
    # what a kill leaves is a hidden temporary name that no reader opens, never the target
    leftover = Path(tmp_name)
    assert leftover.name.startswith(".big.json.") and leftover.suffix == ".tmp"
    assert json.loads(leftover.read_text())["version"] == 2


def test_run_dirs_are_unique_and_out_must_be_a_directory(tmp_path):
    a = new_run_dir(tmp_path / "runs", "resnet18", "synthetic")
    b = new_run_dir(tmp_path / "runs", "resnet18", "synthetic")
    assert a != b and (a / "checkpoints").is_dir()
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(FbenchError, match="is a file"):
        prepare_out_dir(f)
    assert f.read_text() == "x"
