"""Terminal output: piped or redirected, tables are full width and never cut a name to "…";
on a terminal names fold instead of being cut; ``--json`` prints one JSON document on stdout;
``fbench leaderboard`` prints a table on a terminal and markdown into pipes and .md files."""

from __future__ import annotations

import json
import re

import pytest
from click.testing import CliRunner
from tiny import tiny_plugin

import fbench
from fbench.cli import cli
from fbench.plugins.registry import registered

pytestmark = pytest.mark.filterwarnings("ignore:run .* collapsed:UserWarning")

# longer than any column rich gives a name in an 80-column table of several columns
DETECTOR = "tiny-detector-with-a-deliberately-long-identifier-name"
PLUGIN = "a-plugin-whose-name-is-longer-than-an-eighty-column-table-allows"
DATA = {"n_per_class": 6, "image_size": 32}
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _strict(text: str):
    """JSON as a strict parser reads it: NaN or Infinity in it is an error."""
    def refuse(name):
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, parse_constant=refuse)


@pytest.fixture(autouse=True)
def _not_a_terminal(monkeypatch):
    """CliRunner's stdout is no terminal; these variables would make rich treat it as one."""
    for var in ("FORCE_COLOR", "TTY_COMPATIBLE", "COLUMNS"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def terminal(monkeypatch):
    """Make stdout a terminal of ``width`` columns for rich (and so for fbench)."""
    def _set(width: int) -> None:
        monkeypatch.setenv("TTY_COMPATIBLE", "1")
        monkeypatch.setenv("COLUMNS", str(width))
        monkeypatch.setenv("NO_COLOR", "1")

    return _set


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory, module_env):
    out = tmp_path_factory.mktemp("runs")
    with registered(tiny_plugin(DETECTOR), name="tiny"):
        for seed in (0, 1):
            fbench.run(detector=DETECTOR, dataset="synthetic", epochs=1, seed=seed,
                       out=str(out), dataset_options=DATA)
    return out


def _invoke(*args: str):
    return CliRunner().invoke(cli, list(args))


def _column(output: str, index: int) -> str:
    """The text of one column of a rich table's body, its folded pieces joined."""
    cells = [ln.split("│") for ln in ANSI.sub("", output).splitlines() if ln.startswith("│")]
    return "".join(c[index].strip() for c in cells if len(c) > index)


# ------------------------------------------------------------------ fbench plugins


def test_plugins_piped_are_full_width_and_never_cut():
    with registered(tiny_plugin(DETECTOR), name=PLUGIN):
        result = _invoke("plugins")
    assert result.exit_code == 0, result.output
    # before: the table was fitted to 80 columns: `a-plugin-…`, `tiny-de…`
    assert PLUGIN in result.output and DETECTOR in result.output
    assert "…" not in result.output
    line = next(ln for ln in result.output.splitlines() if PLUGIN in ln)
    assert DETECTOR in line  # one row, one line: grep finds the plugin with its detectors
    assert "\x1b[" not in result.output  # no colour codes into a pipe


def test_plugins_on_a_narrow_terminal_fold_names_instead_of_cutting_them(terminal):
    terminal(60)
    with registered(tiny_plugin(DETECTOR), name=PLUGIN):
        result = _invoke("plugins")
    assert result.exit_code == 0, result.output
    assert "…" not in result.output
    assert max(len(ln) for ln in ANSI.sub("", result.output).splitlines()) <= 60
    assert PLUGIN in _column(result.output, 1) and DETECTOR in _column(result.output, 6)


def test_plugins_json_is_one_document_on_stdout(monkeypatch):
    monkeypatch.setenv("FBENCH_LOAD_PLUGINS", "")
    with registered(tiny_plugin(DETECTOR), name=PLUGIN):
        result = _invoke("plugins", "--json")
    assert result.exit_code == 0, result.output
    doc = _strict(result.stdout)
    assert doc["FBENCH_LOAD_PLUGINS"] == ""
    mine = next(p for p in doc["plugins"] if p["name"] == PLUGIN)
    assert mine["detectors"] == [DETECTOR] and mine["builtin"] is False
    assert {"distribution", "version", "datasets", "transforms", "error"} <= set(mine)
    resnet = next(p for p in doc["plugins"] if "resnet18" in p["detectors"])
    assert resnet["builtin"] is True


# ------------------------------------------------------------------ fbench show


def test_show_piped_keeps_ids_and_paths_on_one_line(runs_dir):
    run = sorted(p for p in runs_dir.iterdir() if p.is_dir())[0]
    result = _invoke("show", str(run))
    assert result.exit_code == 0, result.output
    # before: wrapped at 80 columns, the path was split over two lines
    assert f"stored in {run}" in result.output
    assert run.name in result.output and DETECTOR in result.output
    assert "…" not in result.output


def test_show_json(runs_dir):
    run = sorted(p for p in runs_dir.iterdir() if p.is_dir())[0]
    result = _invoke("show", str(run), "--json")
    assert result.exit_code == 0, result.output
    doc = _strict(result.stdout)
    stored = fbench.load_run(run)
    assert doc["run"] == stored.id and doc["detector"] == DETECTOR and doc["path"] == str(run)
    assert doc["eval"]["macro_f1"] == pytest.approx(stored.metrics("eval")["macro_f1"])
    assert len(doc["eval"]["confusion_matrix"]) == 3
    assert doc["summary_disagrees_on"] == [] and doc["edited"] == []
    assert {"selected_epoch", "epochs", "settings", "warnings", "last"} <= set(doc)
    bad = _invoke("show", str(runs_dir), "--json")
    assert bad.exit_code == 2 and bad.stdout == ""  # the error goes to stderr, not stdout


# ------------------------------------------------------------------ fbench leaderboard


def test_leaderboard_piped_is_markdown_with_full_names(runs_dir):
    result = _invoke("leaderboard", "--runs", str(runs_dir))
    assert result.exit_code == 0, result.output
    assert "regenerate with: fbench leaderboard" in result.output
    assert f"| {DETECTOR} |" in result.output and "…" not in result.output


def test_leaderboard_on_a_terminal_is_a_table_with_units(runs_dir, terminal):
    terminal(400)
    result = _invoke("leaderboard", "--runs", str(runs_dir))
    assert result.exit_code == 0, result.output
    text = ANSI.sub("", result.output)
    # before: the raw markdown (`| # | detector |`, `|---|`) went into the terminal
    assert "| # |" not in text and "|---" not in text and "┃" in text
    header = next(ln for ln in text.splitlines() if ln.startswith("┃") and "macro-F1" in ln)
    for unit in ("macro-F1 %", "Δ to next (points, 95% CI)", "ACC %", "F1 real %",
                 "F1 generated %", "F1 edited %", "AUC %", "Dice %"):
        assert unit in header, unit
    row = next(ln for ln in text.splitlines() if DETECTOR in ln)
    # one precision: every number in a row has two decimals (Δ and its interval included)
    numbers = re.findall(r"\d+\.\d+", row)
    assert len(numbers) >= 7 and all(len(n.split(".")[1]) == 2 for n in numbers)
    assert "not shown at this width" not in text and "--json" in text


@pytest.mark.parametrize("width", [80, 74])
def test_leaderboard_on_a_narrow_terminal_fits_and_never_cuts_the_name(runs_dir, terminal,
                                                                       width):
    terminal(width)
    result = _invoke("leaderboard", "--runs", str(runs_dir))
    assert result.exit_code == 0, result.output
    text = ANSI.sub("", result.output)
    assert "…" not in text and DETECTOR in _column(text, 2)
    assert max(len(ln.rstrip()) for ln in text.splitlines()) <= width
    # what did not fit is named, not silently lost
    assert "not shown at this width:" in text and "stopped" in text.split("not shown")[1]
    # a number is never folded inside; a `mean ± std` that does not fit breaks before its `±`
    header = next(ln for ln in text.splitlines() if ln.startswith("┃") and "macro-F1" in ln)
    index = next(i for i, c in enumerate(header.split("┃")) if "macro-F1" in c)
    means = [ln.split("│")[index].strip() for ln in text.splitlines() if ln.startswith("│")]
    whole = r"\d+\.\d\d( ± \d+\.\d\d)?|± \d+\.\d\d|"
    assert all(re.fullmatch(whole, m) for m in means), means
    # at 74 columns the cell is too narrow for one line
    assert any(m.startswith("± ") for m in means) == (width == 74), means


def test_leaderboard_writes_markdown_or_the_files_format(runs_dir, terminal, tmp_path):
    terminal(200)
    md = _invoke("leaderboard", "--runs", str(runs_dir), "--format", "md")
    assert md.exit_code == 0 and f"| {DETECTOR} |" in md.output
    _invoke("leaderboard", "--runs", str(runs_dir), "-o", str(tmp_path / "board.md"))
    assert f"| {DETECTOR} |" in (tmp_path / "board.md").read_text()
    _invoke("leaderboard", "--runs", str(runs_dir), "-o", str(tmp_path / "board.csv"))
    assert (tmp_path / "board.csv").read_text().startswith("detector,")


def test_leaderboard_json(runs_dir):
    result = _invoke("leaderboard", "--runs", str(runs_dir), "--json")
    assert result.exit_code == 0, result.output
    doc = _strict(result.stdout)  # NaN (no Dice without masks) is written as null
    assert doc["checkpoint"] == "selected" and len(doc["rows"]) == 1
    row = doc["rows"][0]
    assert row["rank"] == 1 and row["detector"] == DETECTOR and row["seeds"] == 2
    assert row["dice"] is None and 0 <= row["macro_f1"] <= 100 and len(row["runs"]) == 2
    runs = sorted(str(p) for p in runs_dir.iterdir() if p.is_dir())
    compare = _invoke("leaderboard", "--compare", *runs, "--resamples", "100", "--json")
    assert compare.exit_code == 0, compare.output
    diff = _strict(compare.stdout)
    assert diff["ci_low"] <= diff["difference"] <= diff["ci_high"] and diff["resamples"] == 100
    both = _invoke("leaderboard", "--runs", str(runs_dir), "--json", "--format", "csv")
    assert both.exit_code == 2 and "--json" in both.output
