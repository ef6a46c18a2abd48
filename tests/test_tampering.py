"""Damaged and edited run stores: a run whose files cannot be read is named in one line and
left out of reports over the others; a run whose results changed after it finished (its
``digests.json`` no longer matches) is refused by every reader unless ``--allow-edited``, and
then marked as edited wherever it is tabled."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner
from tiny import tiny_plugin

import fbench
from fbench.cli import cli
from fbench.errors import FbenchError
from fbench.files import read_json, write_json
from fbench.metrics import PROB_COLUMNS
from fbench.plugins.registry import registered
from fbench.runs.digests import DIGESTS, EditedRunError, edited_files, record_digests
from fbench.runs.store import DamagedRunError, load_run

# one tiny epoch may collapse; that is not what is tested here
pytestmark = pytest.mark.filterwarnings("ignore:run .* collapsed:UserWarning")
DETECTOR = "tamper-tiny"
# a leaderboard and an ablation of the same runs
BOARDS = "".join(f"""
[[board]]
file = "{file}"
kind = "{kind}"
detectors = ["{DETECTOR}"]
seeds = 2
dataset_options = {{n_per_class = 20, image_size = 32}}
settings = {{epochs = 1, input_size = 32, batch_size = 32}}
""" for file, kind in (("tiny.md", "leaderboard"), ("tiny-ablation.md", "ablation")))


def _regenerate(boards: Path, runs: Path, *extra: str):
    with registered(tiny_plugin(DETECTOR), name="tiny"):
        return CliRunner().invoke(cli, ["regenerate", "--boards", str(boards), "--runs",
                                        str(runs), "--no-progress", *extra])


@pytest.fixture(scope="module")
def store(tmp_path_factory, module_env):
    """Two completed one-epoch runs (seeds 0 and 1 of one configuration), made by
    ``fbench regenerate`` from a boards file, each sealed with its digests."""
    root = tmp_path_factory.mktemp("boards")
    boards = root / "boards.toml"
    boards.write_text(BOARDS)
    runs = root / "runs"
    made = _regenerate(boards, runs)
    assert made.exit_code == 0, made.output
    dirs = sorted(p.parent for p in runs.glob(f"*/{DIGESTS}"))
    assert len(dirs) == 2
    return boards, runs


@pytest.fixture
def runs(store, tmp_path):
    """A private copy of the store, free to damage or edit."""
    copy = tmp_path / "runs"
    shutil.copytree(store[1], copy)
    return copy


def _dirs(runs: Path) -> list[Path]:
    return sorted(p.parent for p in runs.glob("*/config.json"))


def _truncate(path: Path, keep: int = 100) -> None:
    path.write_bytes(path.read_bytes()[:keep])


def _labels_as_predictions(run_dir: Path) -> None:
    """The attack: every eval prediction set to its label, its probabilities to match."""
    file = run_dir / "predictions.parquet"
    preds = pd.read_parquet(file)
    ev = preds["split"] == "eval"
    preds.loc[ev, "pred"] = preds.loc[ev, "label"]
    for cls, col in enumerate(PROB_COLUMNS):
        preds.loc[ev, col] = (preds.loc[ev, "label"] == cls).astype(float)
    preds.to_parquet(file, index=False)


# ------------------------------------------------------------------ damaged runs


DAMAGE = {
    "predictions.parquet": lambda d: _truncate(d / "predictions.parquet"),
    "predictions-last.parquet": lambda d: _truncate(d / "predictions-last.parquet"),
    "summary.json": lambda d: _truncate(d / "summary.json", 40),
    "epochs.json": lambda d: _truncate(d / "epochs.json", 30),
    "status.json": lambda d: (d / "status.json").write_text("[1, 2]"),
    "predictions.parquet is missing": lambda d: (d / "predictions.parquet").unlink(),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_file_is_one_error_naming_the_run_and_the_file(runs, damage):
    run_dir = _dirs(runs)[0]
    DAMAGE[damage](run_dir)
    file = damage.split()[0]
    # before: pyarrow's ArrowInvalid, json's JSONDecodeError or a run without predictions
    with pytest.raises(DamagedRunError) as caught:
        load_run(run_dir)
    assert isinstance(caught.value, FbenchError)
    assert str(run_dir) in caught.value.problem and file in caught.value.problem
    shown = CliRunner().invoke(cli, ["show", str(run_dir)])
    assert shown.exit_code == 2
    lines = shown.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: run ") and file in lines[0]
    assert "Traceback" not in shown.output and shown.exception.__class__ is SystemExit


def test_the_leaderboard_shows_the_other_runs_and_names_the_damaged_one(runs):
    damaged, intact = _dirs(runs)
    _truncate(damaged / "predictions.parquet")
    with pytest.warns(UserWarning, match="damaged") as caught:
        result = CliRunner().invoke(cli, ["leaderboard", "--runs", str(runs), "--format",
                                          "csv"])
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(pd.io.common.StringIO(result.output))
    assert list(frame["seeds"]) == [1] and list(frame["detector"]) == [DETECTOR]
    messages = " ".join(str(w.message) for w in caught)
    assert damaged.name in messages and "predictions.parquet" in messages
    assert intact.name not in messages


# ------------------------------------------------------------------ edited runs


def test_runs_without_digests_are_read_as_before(runs):
    """A run stored before fbench wrote digests has no digests.json: nothing to compare."""
    run_dir = _dirs(runs)[0]
    (run_dir / DIGESTS).unlink()
    status = read_json(run_dir / "status.json")
    status.pop("digests")  # what an older fbench wrote
    write_json(run_dir / "status.json", status)
    _labels_as_predictions(run_dir)
    assert edited_files(run_dir) is None
    run = load_run(run_dir)
    assert run.edited == () and run.metrics()["macro_f1"] == 1.0


def test_labels_copied_into_predictions_are_refused(runs):
    edited, other = _dirs(runs)
    honest = 100 * load_run(edited).metrics()["macro_f1"]
    _labels_as_predictions(edited)
    with pytest.raises(EditedRunError, match="predictions.parquet") as caught:
        load_run(edited)
    assert str(edited) in caught.value.problem and "--allow-edited" in caught.value.fix
    with pytest.raises(EditedRunError):
        list(fbench.iter_runs(runs))
    for args in (["show", str(edited)], ["leaderboard", "--runs", str(runs)],
                 ["leaderboard", "--compare", str(edited), str(other), "--resamples", "100"]):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 2, (args, result.output)
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and edited.name in lines[0] and "predictions.parquet" in lines[0]
    # the other run is still read, and showing it is not refused
    assert CliRunner().invoke(cli, ["show", str(other)]).exit_code == 0
    assert honest < 100


def test_allow_edited_reads_the_run_and_marks_it(store, runs):
    edited, _ = _dirs(runs)
    _labels_as_predictions(edited)
    with pytest.warns(UserWarning, match="edited"):
        shown = CliRunner().invoke(cli, ["show", "--allow-edited", str(edited)])
    assert shown.exit_code == 0 and "EDITED:" in shown.output
    with pytest.warns(UserWarning, match=f"{edited.name}.*edited"):
        md = CliRunner().invoke(cli, ["leaderboard", "--runs", str(runs), "--allow-edited"])
    assert md.exit_code == 0, md.output
    row = next(ln for ln in md.output.splitlines() if ln.startswith("| 1 |"))
    assert f"{DETECTOR} *(edited: 1 of 2)*" in row
    note = next(ln for ln in md.output.splitlines() if "edited run(s)" in ln)
    assert f"`{edited.name} (predictions.parquet)`" in note
    with pytest.warns(UserWarning):
        csv = CliRunner().invoke(cli, ["leaderboard", "--runs", str(runs), "--allow-edited",
                                       "--format", "csv"])
    assert list(pd.read_csv(pd.io.common.StringIO(csv.output))["edited"]) == [1]
    with pytest.warns(UserWarning), registered(tiny_plugin(DETECTOR), name="tiny"):
        thesis = CliRunner().invoke(cli, ["leaderboard", "--runs", str(runs), "--allow-edited",
                                          "--layout", "thesis"])
    assert thesis.exit_code == 0 and "edited run(s)" in thesis.output
    # without edits, --allow-edited changes nothing
    clean = CliRunner().invoke(cli, ["leaderboard", "--runs", str(store[1]), "--allow-edited"])
    assert clean.exit_code == 0 and "(edited" not in clean.output
    assert "edited run(s)" not in clean.output


def _edit_summary(d: Path) -> None:
    summary = read_json(d / "summary.json")
    summary["eval"]["macro_f1"] = 0.99
    write_json(d / "summary.json", summary)


def _add_last(d: Path) -> None:
    """predictions-last.parquet put back after the digests were written without it."""
    last = (d / "predictions-last.parquet").read_bytes()
    (d / "predictions-last.parquet").unlink()
    record_digests(d)
    (d / "predictions-last.parquet").write_bytes(last)


EDITS = {
    "summary.json": _edit_summary,
    "predictions-last.parquet (missing)": lambda d: (d / "predictions-last.parquet").unlink(),
    "predictions-last.parquet (added)": _add_last,
    "digests.json (unreadable)": lambda d: (d / DIGESTS).write_text('{"algorithm": "md5"}'),
    "digests.json (missing)": lambda d: write_json(d / "status.json", {
        **read_json(d / "status.json"), "digests": True}) or (d / DIGESTS).unlink(),
    "summary.json (missing)": lambda d: write_json(d / DIGESTS, {
        "algorithm": "sha256", "files": {**read_json(d / DIGESTS)["files"],
                                         "summary.json": "0" * 64}}) or (
        d / "summary.json").unlink(),
}


@pytest.mark.parametrize("edit", EDITS)
def test_every_kind_of_edit_is_named(runs, edit):
    run_dir = _dirs(runs)[0]
    assert edited_files(run_dir) == []
    EDITS[edit](run_dir)
    sealed = read_json(run_dir / "status.json").get("digests") is True
    assert edited_files(run_dir, expected=sealed) == [edit]
    with pytest.raises(EditedRunError, match=edit.replace("(", r"\(").replace(")", r"\)")):
        load_run(run_dir)
    with pytest.warns(UserWarning, match="edited"):
        assert load_run(run_dir, allow_edited=True).edited == (edit,)


def test_regenerate_refuses_a_reused_edited_run_unless_allowed(store, runs):
    boards, _ = store
    tables = boards.parent
    edited = _dirs(runs)[0]
    _labels_as_predictions(edited)
    refused = _regenerate(boards, runs)
    assert refused.exit_code == 2
    assert f"{edited.name} was edited" in refused.output
    assert "predictions.parquet" in refused.output
    allowed = _regenerate(boards, runs, "--allow-edited")
    assert allowed.exit_code == 0, allowed.output
    # the warning is said once, in fbench's voice, not as a Python UserWarning line
    warned = [ln for ln in allowed.output.splitlines() if ln.startswith("warning:")
              and "edited" in ln]
    assert warned and "UserWarning" not in allowed.output
    assert "reusing" in allowed.output and "training" not in allowed.output
    board = (tables / "tiny.md").read_text()
    assert f"{DETECTOR} *(edited: 1 of 2)*" in board and "edited run(s)" in board
    ablation = (tables / "tiny-ablation.md").read_text()
    assert f"`{edited.name} (predictions.parquet)`" in ablation
    assert len(_dirs(runs)) == 2  # reused, not retrained
