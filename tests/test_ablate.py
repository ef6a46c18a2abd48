"""`fbench ablate`: variants resolve within a family, stored runs are reused, seeds aggregate,
reference columns are labelled, and the table is written."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from tiny import tiny_cnn

import fbench
from fbench.cli import cli
from fbench.plugins.registry import registered
from fbench.report.ablate import resolve_variants

# One-epoch toy runs collapse or not, by chance of the CPU's arithmetic: no test here is about
# that, so the warning is neither asserted nor shown (tests/test_leaderboard.py asserts it).
pytestmark = pytest.mark.filterwarnings("ignore:run .* collapsed:UserWarning")


def _tiny(num_classes: int = 3, width: int = 4):
    return tiny_cnn(num_classes, width, depth=1)


class Family:
    @fbench.hookimpl
    def register_detectors(self, register):
        for w in (2, 4):
            register(fbench.DetectorSpec(
                name=f"toy-w{w}", summary="toy", family="toy",
                factory=lambda num_classes=3, w=w: _tiny(num_classes, w), input_size=32,
                traits={"backbone": "TinyCNN", "head": f"width {w}"},
                references={"thesis": {"macro_f1": 91.5, "params_m": 0.01}} if w == 4 else {}))

    @fbench.hookimpl
    def register_ablations(self, register):
        register(fbench.AblationSpec("toy", {"narrow": "toy-w2", "wide": "toy-w4"},
                                     references={"ref: paper": {"narrow": 50.0}}))


ARGS = ["--dataset", "synthetic", "--epochs", "1", "--dataset-option", "n_per_class=12",
        "--dataset-option", "image_size=32", "--no-progress"]


def test_short_names_resolve_within_the_family():
    with registered(Family(), name="fam"):
        spec, variants = resolve_variants(["narrow", "toy-w4"])
        assert spec.family == "toy"
        assert variants == [("narrow", "toy-w2"), ("toy-w4", "toy-w4")]
        with pytest.raises(fbench.FbenchError, match="did you mean"):
            resolve_variants(["narow"])


def test_ablate_writes_table_and_reuses_runs(tmp_path):
    out = tmp_path / "runs"
    with registered(Family(), name="fam"):
        first = CliRunner().invoke(cli, ["ablate", "narrow", "wide", "--seeds", "2",
                                         "--out", str(out), *ARGS])
        assert first.exit_code == 0, first.output
        runs = sorted(p for p in out.iterdir() if p.is_dir())
        assert len(runs) == 4
        table = (out / "ablation-toy-synthetic.md").read_text()
        assert "regenerate with: fbench" in table
        assert "| narrow |" in table and "| wide |" in table
        assert " ± " in table  # two seeds aggregate to mean ± std
        assert "ref: paper" in table and "50.00" in table

        again = CliRunner().invoke(cli, ["ablate", "narrow", "wide", "--seeds", "2",
                                         "--out", str(out), *ARGS])
        assert again.exit_code == 0 and "reusing" in again.output
        assert sorted(p for p in out.iterdir() if p.is_dir()) == runs

        fresh = CliRunner().invoke(cli, ["ablate", "narrow", "--no-reuse", "--out", str(out),
                                         *ARGS])
        assert fresh.exit_code == 0
        assert len([p for p in out.iterdir() if p.is_dir()]) == 5


def test_transform_ablation_of_one_detector(tmp_path):
    with registered(Family(), name="fam"):
        result = CliRunner().invoke(cli, ["ablate", "--detector", "toy-w2", "--transforms",
                                          "raw", "dft", "--out", str(tmp_path), *ARGS])
        assert result.exit_code == 0, result.output
        table = (tmp_path / "ablation-toy-w2-synthetic.md").read_text()
        assert "| toy-w2 | TinyCNN | width 2 | – | – | raw |" in table
        assert "| toy-w2 | TinyCNN | width 2 | – | – | dft |" in table


def test_thesis_layout_shows_traits_and_reference_columns(tmp_path):
    with registered(Family(), name="fam"):
        result = CliRunner().invoke(cli, ["ablate", "narrow", "wide", "--out", str(tmp_path),
                                          *ARGS])
        assert result.exit_code == 0, result.output
    lines = (tmp_path / "ablation-toy-synthetic.md").read_text().splitlines()
    header = next(line for line in lines if line.startswith("| model |"))
    cols = [c.strip() for c in header.strip("|").split("|")]
    assert cols[:9] == ["model", "backbone", "head", "feature fusion", "multi-task", "ACC %",
                        "macro-F1 %", "Dice % (edited)", "params (M)"]
    assert "ref: thesis (ACC / F1 / Dice / params)" in cols and "ref: paper" in cols
    rows = {r.split("|")[1].strip(): [c.strip() for c in r.strip("|").split("|")]
            for r in lines if r.startswith("| narrow") or r.startswith("| wide")}
    ref = cols.index("ref: thesis (ACC / F1 / Dice / params)")
    assert rows["wide"][ref] == "– / 91.50 / – / 0.01" and rows["narrow"][ref] == "–"
    assert rows["narrow"][cols.index("ref: paper")] == "50.00"
    assert rows["wide"][2] == "width 4"
    # the measured numbers are the runs' own: ACC parses as a percentage
    assert 0 <= float(rows["wide"][cols.index("ACC %")]) <= 100
