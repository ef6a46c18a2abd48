"""Bad data met during a run: one clear line naming the file, the run marked failed, other
runs untouched."""

from __future__ import annotations

import json

import cv2
import numpy as np
from click.testing import CliRunner

import fbench
from fbench.cli import cli
from fbench.plugins.registry import registered


def _dataset(root):
    rows = []
    rng = np.random.default_rng(0)
    for i in range(24):
        path = root / f"{i}.png"
        cv2.imwrite(str(path), rng.integers(0, 255, (16, 16, 3), dtype=np.uint8))
        rows.append({"path": str(path), "label": i % 3, "source": "s", "group": str(i),
                     "split": "eval" if i >= 18 else "train"})
    return rows


def test_a_corrupt_image_stops_the_run_cleanly(tmp_path):
    rows = _dataset(tmp_path)

    class Plugin:
        @fbench.hookimpl
        def register_datasets(self, register):
            register(fbench.DatasetSpec(name="bad", summary="b", needs_root=False,
                                        factory=lambda root: fbench.make_manifest(rows)))

    out = tmp_path / "runs"
    with registered(Plugin(), name="bad"):
        good = CliRunner().invoke(cli, ["run", "--dataset", "bad", "--epochs", "1",
                                        "--input-size", "16", "--out", str(out),
                                        "--no-progress"])
        assert good.exit_code == 0, good.output
        (good_run,) = [p for p in out.iterdir() if p.is_dir()]
        before = {p.name: p.read_bytes() for p in good_run.rglob("*") if p.is_file()}

        # whole file structure, corrupt pixel data: passes the pre-run checks (headers and
        # tails only), fails when decoded mid-run
        noise = np.random.default_rng(5).integers(0, 255, (64, 64, 3), dtype=np.uint8)
        cv2.imwrite(str(tmp_path / "5.png"), noise)
        data = bytearray((tmp_path / "5.png").read_bytes())
        data[100:-20] = bytes(len(data) - 120)
        (tmp_path / "5.png").write_bytes(bytes(data))
        bad = CliRunner().invoke(cli, ["run", "--dataset", "bad", "--epochs", "1",
                                       "--input-size", "16", "--out", str(out),
                                       "--no-progress"])
    assert bad.exit_code != 0
    assert "5.png cannot be decoded" in bad.output and "Traceback" not in bad.output
    failed = [p for p in out.iterdir() if p.is_dir() and p != good_run]
    assert len(failed) == 1
    status = json.loads((failed[0] / "status.json").read_text())
    assert status["state"] == "failed" and "5.png" in status["error"]
    assert not (failed[0] / "summary.json").exists()
    after = {p.name: p.read_bytes() for p in good_run.rglob("*") if p.is_file()}
    assert after == before
