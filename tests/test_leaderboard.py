"""`fbench leaderboard`: rows per configuration, seeds aggregated, numbers recomputed from
stored predictions, sorted by macro-F1; `--compare` gives a bootstrap interval."""

from __future__ import annotations

import io

import pandas as pd
import pytest
from click.testing import CliRunner
from tiny import tiny_cnn

import fbench
from fbench.cli import cli
from fbench.plugins.registry import registered
from fbench.report.leaderboard import bootstrap_difference, completed_runs, leaderboard


def _tiny(num_classes: int = 3, width: int = 4):
    return tiny_cnn(num_classes, width, depth=1)


class Tiny:
    @fbench.hookimpl
    def register_detectors(self, register):
        register(fbench.DetectorSpec(name="lb-tiny", summary="t", factory=_tiny, input_size=32))


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory, module_env):
    out = tmp_path_factory.mktemp("runs")
    with registered(Tiny(), name="tiny"):
        for seed in (0, 1):
            fbench.run(detector="lb-tiny", dataset="synthetic", epochs=1, seed=seed,
                       out=str(out), dataset_options={"n_per_class": 12, "image_size": 32})
        fbench.run(detector="lb-tiny", dataset="synthetic", epochs=1, seed=0, out=str(out),
                   options={"width": 8},
                   dataset_options={"n_per_class": 12, "image_size": 32})
    return out


def test_rows_per_configuration_with_seeds(runs_dir):
    board = leaderboard(completed_runs(runs_dir))
    assert len(board) == 2
    assert sorted(board["seeds"]) == [1, 2]
    assert list(board["macro_f1"]) == sorted(board["macro_f1"], reverse=True)
    two = board[board["seeds"] == 2].iloc[0]
    runs = [fbench.load_run(runs_dir / r) for r in two["runs"]]
    expected = sum(100 * r.summary["eval"]["macro_f1"] for r in runs) / 2
    assert two["macro_f1"] == pytest.approx(expected)
    assert any(c.startswith("src:synthetic-") for c in board.columns)


def test_cli_markdown_and_csv(runs_dir, tmp_path):
    md = CliRunner().invoke(cli, ["leaderboard", "--runs", str(runs_dir)])
    assert md.exit_code == 0 and "regenerate with: fbench leaderboard" in md.output
    assert md.output.count("| lb-tiny |") == 2
    csv = CliRunner().invoke(cli, ["leaderboard", "--runs", str(runs_dir), "--format", "csv"])
    frame = pd.read_csv(io.StringIO(csv.output))
    assert set(frame["seeds"]) == {1, 2}
    empty = CliRunner().invoke(cli, ["leaderboard", "--runs", str(runs_dir),
                                     "--dataset", "nothing"])
    assert empty.exit_code != 0 and "no completed runs" in empty.output


def test_compare_two_runs(runs_dir):
    runs = completed_runs(runs_dir)
    same = bootstrap_difference(runs[0], runs[0], n=200)
    assert same["difference"] == 0 and same["ci_low"] == 0 == same["ci_high"]
    d = bootstrap_difference(runs[0], runs[2], n=200)
    assert d["ci_low"] <= d["difference"] <= d["ci_high"] and d["paired"]
    out = CliRunner().invoke(cli, ["leaderboard", "--compare", str(runs[0].path),
                                   str(runs[2].path), "--resamples", "200"])
    assert out.exit_code == 0 and "95% CI" in out.output


def test_thesis_layout_of_stored_runs(runs_dir):
    with registered(Tiny(), name="tiny"):
        out = CliRunner().invoke(cli, ["leaderboard", "--runs", str(runs_dir),
                                       "--layout", "thesis"])
    assert out.exit_code == 0, out.output
    header = next(ln for ln in out.output.splitlines() if ln.startswith("| model |"))
    assert "| backbone | head | feature fusion | multi-task |" in header
    # seeds of one configuration aggregate; another option is another row, named by it
    rows = [ln for ln in out.output.splitlines() if ln.startswith("| lb-tiny")]
    assert len(rows) == 2
    assert rows[0].startswith("| lb-tiny |") and rows[1].startswith("| lb-tiny (width=8) |")
    assert " 2" in rows[0].split("|")[-2] and " 1" in rows[1].split("|")[-2]
    bad = CliRunner().invoke(cli, ["leaderboard", "--runs", str(runs_dir), "--layout", "thesis",
                                   "--format", "csv"])
    assert bad.exit_code != 0 and "markdown only" in bad.output
