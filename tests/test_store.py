"""Atomic writes: a failed or killed write never leaves a half-written file behind."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time

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


def test_sigkill_during_writes_never_leaves_a_partial_file(tmp_path):
    target = tmp_path / "big.json"
    write_json(target, {"version": -1, "rows": []})
    writer = textwrap.dedent(f"""
        from fbench.files import write_json
        i = 0
        while True:
            write_json({str(target)!r}, {{"version": i, "rows": list(range(200_000))}})
            i += 1
    """)
    proc = subprocess.Popen([sys.executable, "-c", writer])
    try:
        deadline = time.time() + 30
        while read_json(target)["version"] < 2 and time.time() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        proc.kill()
    data = json.loads(target.read_text())  # must parse: old or new, never half
    assert data["version"] >= 2 and len(data["rows"]) == 200_000


def test_run_dirs_are_unique_and_out_must_be_a_directory(tmp_path):
    a = new_run_dir(tmp_path / "runs", "resnet18", "synthetic")
    b = new_run_dir(tmp_path / "runs", "resnet18", "synthetic")
    assert a != b and (a / "checkpoints").is_dir()
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(FbenchError, match="is a file"):
        prepare_out_dir(f)
    assert f.read_text() == "x"
