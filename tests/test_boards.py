"""Committed tables: `fbench regenerate --check` reproduces the committed smoke leaderboard
cell for cell, a changed cell is reported, and bad board files are explained."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from fbench import FbenchError
from fbench.cli import cli
from fbench.report.boards import differences, load_boards, select, table_cells

REPO = Path(__file__).resolve().parents[1]
BOARDS = REPO / "leaderboards" / "boards.toml"


def test_every_committed_table_is_declared_and_names_its_command():
    boards = load_boards(BOARDS)
    committed = sorted(p.name for p in (REPO / "leaderboards").glob("*.md"))
    assert committed == sorted(b.file.name for b in boards)
    for board in boards:
        first = board.file.read_text().splitlines()[0]
        assert f"regenerate with: fbench regenerate leaderboards/{board.file.name}" in first


def test_committed_smoke_leaderboard_is_reproduced(monkeypatch):
    monkeypatch.chdir(REPO)
    result = CliRunner().invoke(cli, ["regenerate", "--check", "--no-progress",
                                      "leaderboards/smoke-synthetic.md"])
    assert result.exit_code == 0, result.output
    assert "reproduced" in result.output


def test_a_changed_metric_cell_is_reported_but_throughput_is_not():
    table = (REPO / "leaderboards" / "smoke-synthetic.md").read_text()
    rows = table_cells(table)
    assert rows and "train img/s" not in rows[0] and "macro-F1 %" in rows[0]
    line = next(ln for ln in table.splitlines() if ln.startswith("| 1 |"))
    cells = line.split("|")
    changed_f1 = table.replace(line, "|".join(cells[:5] + [" 99.99 "] + cells[6:]))
    diff = differences(table, changed_f1)
    assert list(diff["column"]) == ["macro-F1 %"] and list(diff["rebuilt"]) == ["99.99"]
    header = next(ln for ln in table.splitlines() if ln.startswith("| # |")).split("|")
    speed = header.index(" train img/s ")
    changed_speed = table.replace(line, "|".join(cells[:speed] + [" 12345 "] + cells[speed + 1:]))
    assert differences(table, changed_speed).empty


def test_bad_board_files_are_explained(tmp_path):
    with pytest.raises(FbenchError, match="does not exist"):
        load_boards(tmp_path / "none.toml")
    bad = tmp_path / "boards.toml"
    bad.write_text('[[board]]\nfile = "x.md"\nkind = "table"\ndetectors = ["resnet18"]\n')
    with pytest.raises(FbenchError, match="leaderboard or ablation"):
        load_boards(bad)
    bad.write_text('[[board]]\nfile = "x.md"\nkind = "ablation"\ndetectors = ["a"]\nepoch = 1\n')
    with pytest.raises(FbenchError, match="unknown key"):
        load_boards(bad)
    bad.write_text('[[board]]\nfile = "x.md"\nkind = "ablation"\ndetectors = ["a"]\n')
    with pytest.raises(FbenchError, match="no board writes y.md"):
        select(load_boards(bad), ["y.md"])
