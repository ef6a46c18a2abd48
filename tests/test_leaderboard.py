"""`fbench leaderboard`: rows per configuration, seeds aggregated, numbers recomputed from
stored predictions, sorted by macro-F1; `--compare` gives a bootstrap interval."""

from __future__ import annotations

import io

import pandas as pd
import pytest
from click.testing import CliRunner
from tiny import blind_detector, tiny_cnn

import fbench
from fbench.cli import cli
from fbench.plugins.registry import registered
from fbench.report.layout import layout_markdown
from fbench.report.leaderboard import bootstrap_difference, completed_runs, leaderboard
from fbench.report.tables import aggregate, fmt_mean_std, rank, run_row

# Tiny runs on 36 images may collapse or not: where that is not what a test is about, the
# warning is neither asserted nor shown. The tie test below makes and asserts its collapses.
pytestmark = pytest.mark.filterwarnings("ignore:run .* collapsed:UserWarning")
COLLAPSED = "collapsed to the majority class"
DATA = {"n_per_class": 12, "image_size": 32}


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
                       out=str(out), dataset_options=DATA)
        fbench.run(detector="lb-tiny", dataset="synthetic", epochs=1, seed=0, out=str(out),
                   options={"width": 8}, dataset_options=DATA)
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


def _layout_rows(text: str, prefix: str) -> dict[str, list[str]]:
    """A markdown table's rows whose first cell starts with ``prefix``, by that cell."""
    rows = [[c.strip() for c in ln.strip("|").split("|")] for ln in text.splitlines()
            if ln.startswith(f"| {prefix}")]
    return {r[0]: r for r in rows}


def test_thesis_layout_of_stored_runs(runs_dir):
    with registered(Tiny(), name="tiny"):
        out = CliRunner().invoke(cli, ["leaderboard", "--runs", str(runs_dir),
                                       "--layout", "thesis"])
    assert out.exit_code == 0, out.output
    header = next(ln for ln in out.output.splitlines() if ln.startswith("| model |"))
    assert "| backbone | head | feature fusion | multi-task |" in header
    # seeds of one configuration aggregate; another option is another row, named by it.
    # Rows are ranked by their trained scores, so they are found by name, not by position.
    rows = _layout_rows(out.output, "lb-tiny")
    assert set(rows) == {"lb-tiny", "lb-tiny (width=8)"}
    assert rows["lb-tiny"][-1].startswith("2") and rows["lb-tiny (width=8)"][-1].startswith("1")
    bad = CliRunner().invoke(cli, ["leaderboard", "--runs", str(runs_dir), "--layout", "thesis",
                                   "--format", "csv"])
    assert bad.exit_code != 0 and "markdown only" in bad.output


class FlatPlugin:
    @fbench.hookimpl
    def register_detectors(self, register):
        register(fbench.DetectorSpec(name="lb-flat", summary="t", factory=blind_detector,
                                     input_size=32))


def test_equal_scores_rank_in_a_fixed_order(tmp_path):
    with registered(FlatPlugin(), name="flat"):
        with pytest.warns(UserWarning, match=COLLAPSED):
            for spare in (2, 0):  # stored in the reverse of the order the table must show
                fbench.run(detector="lb-flat", dataset="synthetic", epochs=1, seed=0,
                           out=str(tmp_path), options={"spare": spare}, dataset_options=DATA)
        runs = completed_runs(tmp_path)
        option = {r.id: r.config["options"]["spare"] for r in runs}
        for given in (runs, runs[::-1]):
            board = leaderboard(given)
            assert board["macro_f1"].nunique() == 1 and list(board["collapsed"]) == [1, 1]
            # ties break by detector, then the options label: spare=0 before spare=2
            assert [option[r[0]] for r in board["runs"]] == [0, 2]
            text = layout_markdown(pd.DataFrame([run_row(r) for r in given]), "cmd",
                                   by="detector")
            names = [ln.split("|")[1].strip() for ln in text.splitlines()
                     if ln.startswith("| lb-flat")]
            assert names == ["lb-flat (spare=0)", "lb-flat (spare=2)"]
            assert "1 (1 collapsed, 1 not converged)" in text  # one epoch: no plateau seen


def test_one_seed_has_no_spread_and_ties_keep_a_fixed_order():
    rows = pd.DataFrame({"run": ["a", "b", "c", "d"], "config": ["x", "x", "z", "y"],
                         "detector": ["m", "m", "m", "k"], "macro_f1": [50.0, 54.0, 55.0, 55.0],
                         "dice": [None, None, 10.0, None], "collapsed": [False, True, False,
                                                                         False]})
    agg = aggregate(rows, ["config"], ["macro_f1", "dice"])
    x = agg.set_index("config").loc["x"]
    assert x["macro_f1"] == 52.0 and x["macro_f1_std"] == pytest.approx(2.8284271)
    assert x["seeds"] == 2 and x["runs"] == ["a", "b"] and x["collapsed"] == 1
    z = agg.set_index("config").loc["z"]
    # None for one value (a DataFrame holds it as NaN), shown without a ± part
    assert pd.isna(z["macro_f1_std"]) and z["dice"] == 10.0 and pd.isna(z["dice_std"])
    assert pd.isna(x["dice"]) and fmt_mean_std(z["macro_f1"], z["macro_f1_std"], 1) == "55.00"
    assert fmt_mean_std(10.0, None, 2) == "10.00" and fmt_mean_std(x["dice"], None, 2) == "–"
    assert list(rank(agg)["config"]) == ["y", "z", "x"]  # 55 (k), 55 (m), then 52
