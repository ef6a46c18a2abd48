"""Runs under faults: a second process writing the same run, SIGTERM, a full disk, a read-only
--out, a corrupt or malicious checkpoint. Each ends in one line that says what happened and
what to do, and leaves status.json telling the truth."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from test_resume import ARGS, BARRIER
from tiny import tiny_plugin

import fbench
from fbench.cli import cli
from fbench.errors import FbenchError
from fbench.plugins.registry import registered
from fbench.runs.writer import lock_run, read_checkpoint

# one tiny epoch may collapse; that is not what is tested here
pytestmark = pytest.mark.filterwarnings("ignore:run .* collapsed:UserWarning")

TINY = ["run", "--detector", "fault-tiny", "--dataset", "synthetic", "--input-size", "32",
        "--batch-size", "8", "--dataset-option", "n_per_class=12",
        "--dataset-option", "image_size=32", "--no-progress"]


def _wait_for(flag: Path, proc: subprocess.Popen, what: str) -> None:
    """Until ``proc`` created ``flag`` (its own signal that it is where the test wants it)."""
    deadline = time.time() + 300
    while not flag.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    if not flag.exists():
        proc.kill()
        pytest.fail(f"{what} never got there: " + (proc.communicate()[0] or "")[-3000:])


def _only_run(out: Path) -> Path:
    runs = [p for p in out.iterdir() if p.is_dir()]
    assert len(runs) == 1, runs
    return runs[0]


def _error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("Error:")]


# -- 1. one writer per run --------------------------------------------------------------------

HOLDER = """
import sys
from fbench.runs.writer import lock_run
lock = lock_run(sys.argv[1])
open(sys.argv[2], "w").close()
sys.stdin.read()  # hold the lock until the test closes stdin
"""


def test_a_second_writer_of_a_run_is_refused_with_the_holders_pid(tmp_path):
    run_dir = tmp_path / "runs" / "a-run"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "config.json").write_text("{}")
    ready = tmp_path / "ready"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(run_dir), str(ready)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    try:
        _wait_for(ready, holder, "the lock holder")
        refused = CliRunner().invoke(cli, ["run", "--resume", str(run_dir)])
        assert refused.exit_code == 2, refused.output
        assert f"being written by another fbench process (pid {holder.pid})" in refused.output
        assert len(_error_lines(refused.output)) == 1 and "Traceback" not in refused.output
        with pytest.raises(FbenchError, match=f"pid {holder.pid}"):
            lock_run(run_dir)
    finally:
        holder.communicate(input="", timeout=60)
    # the lock went with the process: the run can be written again
    with lock_run(run_dir):
        assert (run_dir / ".lock").read_text().strip() == str(os.getpid())


# -- 2. SIGTERM ---------------------------------------------------------------------------------

def _barrier_run(out: Path, block_after: int, flag: Path) -> subprocess.Popen:
    args = [a if a != "resnet18" else "barrier-net" for a in ARGS]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "FBENCH_TEST_BLOCK_AFTER": str(block_after),
           "FBENCH_TEST_BLOCKED": str(flag)}
    return subprocess.Popen([sys.executable, "-c", BARRIER, *args, "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def test_sigterm_marks_the_run_interrupted_and_says_how_to_resume(tmp_path):
    """Two runs (85 training images at batch 8: 10 steps an epoch) block in a known step: one
    in epoch 2 (epoch 1 saved), one in epoch 1 (nothing saved). While one trains, resuming it
    from here is refused; SIGTERM then ends each with its one line and exit code 143."""
    late = _barrier_run(tmp_path / "late", 15, tmp_path / "late-blocked")
    early = _barrier_run(tmp_path / "early", 5, tmp_path / "early-blocked")
    _wait_for(tmp_path / "late-blocked", late, "the run blocking in epoch 2")
    _wait_for(tmp_path / "early-blocked", early, "the run blocking in epoch 1")
    late_dir, early_dir = _only_run(tmp_path / "late"), _only_run(tmp_path / "early")

    # the training process itself holds the run's lock
    refused = CliRunner().invoke(cli, ["run", "--resume", str(late_dir)])
    assert refused.exit_code == 2 and f"(pid {late.pid})" in refused.output, refused.output
    assert json.loads((late_dir / "status.json").read_text())["state"] == "running"

    for proc in (late, early):
        proc.send_signal(signal.SIGTERM)
    late_out, _ = late.communicate(timeout=120)
    early_out, _ = early.communicate(timeout=120)

    assert late.returncode == 143, late_out[-3000:]
    assert (f"interrupted after epoch 1 of 3; resume with: fbench run --resume {late_dir}"
            in late_out), late_out[-3000:]
    assert "Traceback" not in late_out and "Aborted" not in late_out
    status = json.loads((late_dir / "status.json").read_text())
    assert status["state"] == "interrupted" and "SIGTERM after epoch 1 of 3" in status["error"]

    assert early.returncode == 143, early_out[-3000:]
    assert "interrupted before epoch 1 of 3 finished; nothing to resume" in early_out
    assert "Traceback" not in early_out
    assert json.loads((early_dir / "status.json").read_text())["state"] == "interrupted"


# -- 3. a full disk -----------------------------------------------------------------------------

def _full_disk_after(monkeypatch, ok_saves: int) -> dict[str, bool]:
    """``torch.save`` writes ``ok_saves`` checkpoints, then fails the way a full disk does,
    after writing part of the file."""
    real, state = torch.save, {"full": False, "calls": 0}

    def save(obj, f, *args, **kwargs):
        if Path(getattr(f, "name", f)).parent.name != "checkpoints":
            return real(obj, f, *args, **kwargs)  # not a run's checkpoint (a cache)
        state["calls"] += 1
        if state["calls"] <= ok_saves:
            return real(obj, f, *args, **kwargs)
        state["full"] = True
        f.write(b"partial checkpoint")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", save)
    return state


def _tiny_run(out: Path, *extra: str):
    with registered(tiny_plugin("fault-tiny"), name="tiny"):
        return CliRunner().invoke(cli, [*TINY, "--out", str(out), *extra])


def test_a_full_disk_while_saving_best_pt_is_one_line_and_recorded(tmp_path, monkeypatch):
    _full_disk_after(monkeypatch, ok_saves=0)  # epoch 1's best.pt: nothing to resume yet
    result = _tiny_run(tmp_path / "runs", "--epochs", "1")
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    [line] = _error_lines(result.output)
    run_dir = _only_run(tmp_path / "runs")
    assert f"disk full while writing {run_dir / 'checkpoints' / 'best.pt'}" in line
    assert "the partial file was removed" in line and "start the run again" in line
    assert f"run {run_dir} marked failed" in line
    assert not list(run_dir.rglob("*.tmp")) and not (run_dir / "checkpoints/best.pt").exists()
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "failed" and "disk full while writing" in status["error"]


def test_a_full_disk_after_an_epoch_was_saved_says_to_resume(tmp_path, monkeypatch):
    _full_disk_after(monkeypatch, ok_saves=2)  # epoch 1's best.pt and last.pt are written
    result = _tiny_run(tmp_path / "runs", "--epochs", "2")
    assert result.exit_code == 2, result.output
    [line] = _error_lines(result.output)
    run_dir = _only_run(tmp_path / "runs")
    assert "disk full while writing" in line
    assert f"Fix: free space, then resume with: fbench run --resume {run_dir}" in line
    assert not list(run_dir.rglob("*.tmp"))
    assert read_checkpoint(run_dir / "checkpoints" / "last.pt")["epoch"] == 1
    assert json.loads((run_dir / "status.json").read_text())["state"] == "failed"


def test_when_even_the_failure_cannot_be_recorded_it_says_so(tmp_path, monkeypatch):
    import fbench.runs.writer as writer

    disk = _full_disk_after(monkeypatch, ok_saves=0)
    real_write_json = writer.write_json

    def write_json(path, data):
        if disk["full"]:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_write_json(path, data)

    monkeypatch.setattr(writer, "write_json", write_json)
    result = _tiny_run(tmp_path / "runs", "--epochs", "1")
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    [line] = _error_lines(result.output)
    run_dir = _only_run(tmp_path / "runs")
    assert "disk full while writing" in line
    assert f"could not mark it failed either: writing {run_dir / 'status.json'} failed" in line
    assert json.loads((run_dir / "status.json").read_text())["state"] == "running"


# -- 4. a read-only --out -----------------------------------------------------------------------

def test_a_read_only_out_is_refused_before_the_dataset_loads(tmp_path, monkeypatch):
    import fbench.runs.store as store
    import fbench.train.resolve as resolve

    read_only = tmp_path / "ro"
    read_only.mkdir()
    read_only.chmod(0o555)
    if os.geteuid() == 0:  # root writes anywhere: deny it the way the kernel denies others
        real_access = os.access

        def access(path, mode, **kwargs):  # 0o555: readable and searchable, not writable
            if Path(path) == read_only and mode & os.W_OK:
                return False
            return real_access(path, mode, **kwargs)

        monkeypatch.setattr(store.os, "access", access)

    def no_dataset(*args, **kwargs):
        raise AssertionError("the dataset was loaded before --out was checked")

    monkeypatch.setattr(resolve, "load_manifest", no_dataset)
    try:
        for out, where in ((read_only, "it is"), (read_only / "sub", f"{read_only} is")):
            result = _tiny_run(out, "--epochs", "1")
            assert result.exit_code == 2, result.output
            [line] = _error_lines(result.output)
            assert f"cannot write runs to --out {out}: {where} not writable." in line
            assert "Fix: give a directory you can write to" in line
            assert "Traceback" not in result.output
        with pytest.raises(FbenchError, match="not writable"):
            store.prepare_out_dir(read_only / "sub")
        assert not (read_only / "sub").exists()
    finally:
        read_only.chmod(0o755)


# -- 5. corrupt and malicious checkpoints -------------------------------------------------------

class _Forbidden:
    """Pickles as a call of builtins.open: weights_only must refuse it (were it unpickled,
    the marker file would appear)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory, module_env):
    """A one-epoch run, marked as if it had been interrupted (so --resume takes it)."""
    out = tmp_path_factory.mktemp("runs")
    with registered(tiny_plugin("fault-tiny"), name="tiny"):
        run = fbench.run(detector="fault-tiny", dataset="synthetic", epochs=1, input_size=32,
                         batch_size=8, out=str(out), keep_last=True,
                         dataset_options={"n_per_class": 12, "image_size": 32})
    (run.path / "status.json").write_text(json.dumps({"state": "interrupted"}))
    return run.path


def _damage(run_dir: Path, name: str, how: str, tmp_path: Path) -> Path:
    file = run_dir / "checkpoints" / name
    if how == "truncated":
        file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])
    else:
        torch.save({"model": _Forbidden(tmp_path / "pwned")}, file)
    return file


@pytest.mark.parametrize("how", ["truncated", "malicious"])
def test_a_bad_checkpoint_is_one_line_in_read_checkpoint_predict_and_resume(
        stopped_run, tmp_path, how):
    run_dir = tmp_path / "run"
    shutil.copytree(stopped_run, run_dir)
    expected = ("it is truncated or damaged" if how == "truncated"
                else "it holds Python objects that no fbench checkpoint contains")
    best = _damage(run_dir, "best.pt", how, tmp_path)
    with pytest.raises(FbenchError) as caught:
        read_checkpoint(best)
    message = caught.value.format_message()
    assert f"cannot load checkpoint {best}: {expected}" in message and "\n" not in message
    if how == "malicious":  # the refused global is named, not torch's page of advice
        assert re.search(r"\(a global: \w+\.open\)", message), message
    assert caught.value.fix

    from fbench.use.model import load_trained

    with registered(tiny_plugin("fault-tiny"), name="tiny"), \
            pytest.raises(FbenchError, match=f"cannot load checkpoint {best}"):
        load_trained(run_dir)

    last = _damage(run_dir, "last.pt", how, tmp_path)
    with registered(tiny_plugin("fault-tiny"), name="tiny"):
        result = CliRunner().invoke(cli, ["run", "--resume", str(run_dir), "--no-progress"])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    [line] = _error_lines(result.output)
    assert f"cannot load checkpoint {last}: {expected}" in line and "Fix:" in line
    assert not (tmp_path / "pwned").exists()
    # a refused resume leaves the run as it was
    assert json.loads((run_dir / "status.json").read_text()) == {"state": "interrupted"}


def test_the_engine_refuses_to_resume_a_locked_run_and_leaves_its_status(stopped_run,
                                                                           tmp_path):
    """The engine's own lock (not only the CLI's early check): a second writer in this very
    process is refused, and the holder's status is not touched."""
    from fbench.runs.store import load_run
    from fbench.train.engine import train_and_evaluate
    from fbench.train.resolve import resolve
    from fbench.use.reproduce import run_config

    run_dir = tmp_path / "run"
    shutil.copytree(stopped_run, run_dir)
    config = run_config(load_run(run_dir)).replace(out=str(tmp_path))
    with registered(tiny_plugin("fault-tiny"), name="tiny"):
        resolved = resolve(config)
        with lock_run(run_dir), pytest.raises(FbenchError, match=f"pid {os.getpid()}"):
            train_and_evaluate(resolved, progress=False, resume=run_dir)
    assert json.loads((run_dir / "status.json").read_text()) == {"state": "interrupted"}
