"""Hostile lists, manifests and settings (issue 17), one case each: wrong-typed settings and
dataset options are one line naming the setting; a split list that is not UTF-8, starts with a
byte-order mark, climbs out of its root or repeats lines is named by file and line (or
imported as meant); manifests are held to their dataset's roots and lose their duplicates
with a count; lists and manifests read labels with one parser."""

from __future__ import annotations

import warnings
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

import fbench
from fbench import FbenchError
from fbench.cli import cli
from fbench.data.manifest import parse_label, validate_manifest
from fbench.plugins.registry import registered
from fbench.train.config import parse_assignments, typed_options
from fbench_thesis.commands import add_commands
from fbench_thesis.lists import import_lists, read_list

AUTHOR = "/home/author/deepfake/"


def _png(path: Path, seed: int, size: int = 8) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    cv2.imwrite(str(path), rng.integers(0, 255, (size, size, 3), dtype=np.uint8))


@pytest.fixture
def root(tmp_path) -> Path:
    """The user's copy of the author's deepfake/ folder (six FFHQ images), and beside it,
    outside the root, an image a hostile list would reach for."""
    root = tmp_path / "data" / "deepfake"
    for i in range(6):
        _png(root / "FFHQ_raw" / f"{i}.png", i)
    _png(tmp_path / "data" / "secret.png", 99)
    return root


def _lists(tmp_path: Path, train: list[str] | bytes, eval_: list[str] | None = None):
    """Write a train and an eval list (lines, or the train file's raw bytes)."""
    files = tmp_path / "train.txt", tmp_path / "eval.txt"
    data = train if isinstance(train, bytes) else ("\n".join(train) + "\n").encode()
    files[0].write_bytes(data)
    lines = eval_ if eval_ is not None else [f"{AUTHOR}FFHQ_raw/{i}.png\t0" for i in (4, 5)]
    files[1].write_text("\n".join(lines) + "\n")
    return files


def _invoke(*args: str):
    add_commands(cli)
    return CliRunner().invoke(cli, list(args))


# -- 1. settings --------------------------------------------------------------------------


@pytest.mark.parametrize("line, name", [('epochs = "two"', "epochs"), ("detector = 5", "detector"),
                                        ("dataset_options = 3", "dataset_options")])
def test_a_wrong_typed_setting_in_a_config_file_is_one_line(tmp_path, line, name):
    config = tmp_path / "bad.toml"
    config.write_text(line + "\n")
    result = _invoke("run", "--config", str(config), "--out", str(tmp_path / "runs"),
                     "--no-progress")
    assert result.exit_code == 2, result.output
    assert result.output.startswith(f"Error: setting {name} must be ")
    assert result.output.count("\n") == 1 and "Fix: e.g." in result.output
    assert not (tmp_path / "runs").exists()


def test_a_dataset_option_of_the_wrong_type_never_reaches_the_factory(tmp_path):
    """Was the synthetic factory's `int('abc')` traceback."""
    result = _invoke("run", "--dataset", "synthetic", "--dataset-option", "image_size=abc",
                     "--epochs", "1", "--out", str(tmp_path / "runs"), "--no-progress")
    assert result.exit_code == 2, result.output
    assert result.output == ("Error: dataset 'synthetic': option image_size must be an "
                             "integer, got 'abc'. Fix: e.g. --dataset-option image_size=64\n")
    with pytest.raises(FbenchError, match="option n_per_class must be an integer, got True"):
        fbench.load_dataset("synthetic", n_per_class=True)


def test_dataset_options_are_checked_against_the_factory_defaults(tmp_path):
    got = {}

    def factory(root=None, size: int = 4, scale: float = 0.5, tag: str = "a",
                flag: bool = False, anything=None):
        got.update(size=size, scale=scale, tag=tag, flag=flag, anything=anything)
        return fbench.make_manifest([{"path": "x.png", "label": 0, "source": "s", "group": "g",
                                      "split": s} for s in ("train", "eval")])

    assert typed_options("dataset", "d", factory, {"scale": 1, "anything": [1]}) == {
        "scale": 1, "anything": [1]}
    with pytest.raises(FbenchError, match=r"option flag must be true or false, got 1\. "
                                          r"Fix: e\.g\. --dataset-option flag=false"):
        typed_options("dataset", "d", factory, {"flag": 1})
    with pytest.raises(FbenchError, match="option scale must be a number, got 'fast'"):
        typed_options("dataset", "d", factory, {"scale": "fast"})

    class Plugin:
        @fbench.hookimpl
        def register_datasets(self, register):
            register(fbench.DatasetSpec(name="typed", summary="t", factory=factory,
                                        needs_root=False))

    with registered(Plugin(), name="typed"), pytest.raises(FbenchError):
        # an older run's config (or the Python API) may hold "6": read as the number it is
        fbench.load_dataset("typed", size="6", tag=3)  # x.png does not exist: refused after
    assert got == {"size": 6, "scale": 0.5, "tag": "3", "flag": False, "anything": None}


def test_assignments_are_stored_as_json_can_hold_them(tmp_path):
    """A TOML date would have failed writing config.json, NaN too (strict JSON)."""
    assert parse_assignments(["tag=2024-01-01", "at=07:32:00", "dates=[2024-01-01]"],
                             "--set") == {"tag": "2024-01-01", "at": "07:32:00",
                                          "dates": ["2024-01-01"]}
    for bad in ("lr=nan", "lr=-inf", "levels=[1, nan]"):
        with pytest.raises(FbenchError, match="is not a finite number"):
            parse_assignments([bad], "--set")
    result = _invoke("run", "--dataset-option", "eval_fraction=nan", "--out",
                     str(tmp_path / "runs"), "--no-progress")
    assert result.exit_code == 2 and result.output.startswith(
        "Error: --dataset-option eval_fraction=nan: nan is not a finite number.")


# -- 2. encodings ---------------------------------------------------------------------------


def test_a_list_that_is_not_utf8_is_named_by_file_and_line(root, tmp_path):
    train, eval_ = _lists(tmp_path, f"{AUTHOR}FFHQ_raw/0.png\t0\n".encode()
                          + f"{AUTHOR}FFHQ_raw/\xe9.png\t0\n".encode("latin-1"))
    with pytest.raises(FbenchError, match=r"train.txt:2: not UTF-8 text \(byte 0xe9 at column "
                                          r"32\)"):
        read_list(train, "train")
    out = tmp_path / "out"
    result = _invoke("data", "import-lists", str(train), str(eval_), "--out", str(out),
                     "--root", str(root), "--no-progress")
    assert result.exit_code == 2 and "train.txt:2: not UTF-8" in result.output
    assert "Traceback" not in result.output and not out.exists()


def test_a_byte_order_mark_and_crlf_lines_are_read_as_meant(root, tmp_path):
    """The mark made the first path's prefix differ: '2 different prefixes'."""
    lines = [f"{AUTHOR}FFHQ_raw/{i}.png\t0" for i in range(4)]
    train, eval_ = _lists(tmp_path, b"\xef\xbb\xbf" + "\r\n".join(lines).encode() + b"\r\n")
    card = import_lists(train, eval_, tmp_path / "out", root=root, progress=False)
    assert card["lists"]["train"]["rows"] == 4
    m = fbench.load_dataset("thesis-lists", str(tmp_path / "out"))
    assert m.loc[m["split"] == "train", "path"].tolist() == [
        str(root.resolve() / "FFHQ_raw" / f"{i}.png") for i in range(4)]


# -- 3. paths outside the root --------------------------------------------------------------


@pytest.mark.parametrize("hostile", ["climbs", "absolute"])
def test_a_list_path_outside_the_root_is_refused(root, tmp_path, hostile):
    secret = tmp_path / "data" / "secret.png"
    line = (f"{AUTHOR}FFHQ_raw/../../secret.png\t0" if hostile == "climbs"
            else f"{secret}\t0")
    train, eval_ = _lists(tmp_path, [f"{AUTHOR}FFHQ_raw/{i}.png\t0" for i in range(2)] + [line])
    out = tmp_path / "out"
    with pytest.raises(FbenchError, match=r"1 listed path\(s\) lie outside the dataset root "
                                          rf".*{secret}.*train.txt:3\).*--allow-outside-root"):
        import_lists(train, eval_, out, root=root, progress=False)
    result = _invoke("data", "import-lists", str(train), str(eval_), "--out", str(out),
                     "--root", str(root), "--no-progress")
    assert result.exit_code == 2 and "outside the dataset root" in result.output
    assert not out.exists()

    # meant: imported, recorded, and runs accept it
    result = _invoke("data", "import-lists", str(train), str(eval_), "--out", str(out),
                     "--root", str(root), "--no-progress", "--allow-outside-root")
    assert result.exit_code == 0, result.output
    m = fbench.load_dataset("thesis-lists", str(out))
    assert str(secret) in set(m["path"]) and m.attrs["card"]["allow_outside_root"] is True


def test_an_edited_manifest_pointing_outside_its_roots_is_refused_at_load(root, tmp_path):
    train, eval_ = _lists(tmp_path, [f"{AUTHOR}FFHQ_raw/{i}.png\t0" for i in range(4)])
    out = tmp_path / "out"
    import_lists(train, eval_, out, root=root, progress=False)
    assert len(fbench.load_dataset("thesis-lists", str(out))) == 6
    manifest = pd.read_parquet(out / "manifest.parquet")  # keeps its attrs (roots)
    manifest.loc[0, "path"] = str(tmp_path / "data" / "secret.png")
    manifest.to_parquet(out / "manifest.parquet", index=False)
    with pytest.raises(FbenchError, match=r"1 path\(s\) point outside the dataset root"):
        fbench.load_dataset("thesis-lists", str(out))


def _rows(paths: list[str]) -> list[dict]:
    return [{"path": p, "label": i % 3, "source": "s", "group": str(i),
             "split": "eval" if i == len(paths) - 1 else "train"} for i, p in enumerate(paths)]


def test_manifests_are_held_to_their_roots(root, tmp_path):
    secret = str(tmp_path / "data" / "secret.png")
    inside = [str(root / "FFHQ_raw" / f"{i}.png") for i in range(3)]
    fbench.make_manifest(_rows(inside), root=root)  # absolute, but inside: fine
    with pytest.raises(FbenchError, match=rf"1 path\(s\) point outside the dataset root "
                                          rf"{root}, e\.g\. '{secret}'"):
        fbench.make_manifest(_rows([*inside, secret]), root=root)
    rows = _rows(inside)
    rows[0]["mask"] = "../secret.png"
    with pytest.raises(FbenchError, match=r"1 mask\(s\) point outside"):
        fbench.make_manifest(rows, root=root / "FFHQ_raw")

    meant = fbench.make_manifest(_rows([*inside, secret]), root=root, allow_outside_root=True)
    assert validate_manifest(meant)["path"].iloc[-1] == secret  # recorded: passes again
    beside = fbench.make_manifest(_rows([*inside, secret]), root=root,
                                  roots=[tmp_path / "data"])
    assert beside.attrs["roots"] == [str(tmp_path / "data")]

    # a built dataset: files under the sources root its card names, read from its directory
    built = pd.DataFrame(_rows(inside))
    built.attrs = {"name": "b", "root": str(tmp_path / "built"),
                   "card": {"sources_root": str(root)}}
    validate_manifest(built)
    built.loc[0, "path"] = secret
    with pytest.raises(FbenchError, match="outside the dataset root"):
        validate_manifest(built)


# -- 4. duplicates --------------------------------------------------------------------------


def test_duplicate_manifest_rows_are_dropped_and_counted(root):
    paths = [str(root / "FFHQ_raw" / f"{i}.png") for i in range(4)]
    rows = _rows(paths)
    rows += [dict(rows[1]), {**rows[1], "path": "FFHQ_raw/./1.png"}, {**rows[2]}]
    rows.append({**rows[0], "split": "eval"})  # another split: a leak for the audit, kept
    with pytest.warns(UserWarning, match=r"dataset: 3 duplicate row\(s\) dropped \(the same "
                                         r"file twice in one split\), e\.g\. .*1\.png \(train\)"):
        m = fbench.make_manifest(rows, root=root)
    assert len(m) == 5 and m.attrs["duplicates_dropped"] == 3
    assert (m["path"] == paths[0]).sum() == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert validate_manifest(m).attrs["duplicates_dropped"] == 3  # counted once

    rows = _rows(paths) + [{**_rows(paths)[1], "label": 2}]
    with pytest.raises(FbenchError, match=r"1\.png is listed 2 times in the 'train' split with "
                                          "different labels"):
        fbench.make_manifest(rows, root=root)


def test_duplicated_list_lines_are_dropped_counted_and_shown(root, tmp_path):
    lines = [f"{AUTHOR}FFHQ_raw/{i}.png\t0" for i in range(3)]
    train, eval_ = _lists(tmp_path, [*lines, lines[0], lines[0], lines[2]])
    with pytest.warns(UserWarning, match=r"3 duplicated line\(s\) dropped .*train\.txt:4 "
                                         r"\(repeats line 1\)"):
        card = import_lists(train, eval_, tmp_path / "api", root=root, progress=False)
    assert card["duplicates_dropped"] == 3 and card["lists"]["train"]["rows"] == 3
    assert fbench.load_dataset("thesis-lists", str(tmp_path / "api")).attrs[
        "duplicates_dropped"] == 3

    result = _invoke("data", "import-lists", str(train), str(eval_), "--out",
                     str(tmp_path / "cli"), "--root", str(root), "--no-progress")
    assert result.exit_code == 0, result.output
    assert "warning: 3 duplicated line(s) dropped" in " ".join(result.output.split())

    train, eval_ = _lists(tmp_path, [*lines, lines[1].replace("\t0", "\t1")])
    with pytest.raises(FbenchError, match=r"train\.txt:4: .*1\.png is listed again with another "
                                          r"label or mask than on line 2"):
        import_lists(train, eval_, tmp_path / "conflict", root=root, progress=False)


# -- 5. one label parser --------------------------------------------------------------------


def test_lists_and_manifests_read_labels_alike(root, tmp_path):
    texts = ["0", "1", "2", "real", "Generated", " edited ", "1.0"]
    assert [parse_label(t) for t in texts] == [0, 1, 2, 0, 1, 2, 1]
    assert [parse_label(v) for v in (2, np.int64(1), 0.0, True, np.bool_(False), 1.5, 3,
                                     float("nan"), "fake", None)] == [2, 1, 0] + [None] * 7

    names = ["real", "generated", "edited", "Real"]
    train, eval_ = _lists(tmp_path, [f"{AUTHOR}FFHQ_raw/{i}.png\t{n}"
                                     for i, n in enumerate(names)])
    result = _invoke("data", "import-lists", str(train), str(eval_), "--out",
                     str(tmp_path / "out"), "--root", str(root), "--no-progress")
    assert result.exit_code == 0, result.output  # was: label 'edited' is not 0, 1 or 2
    m = fbench.load_dataset("thesis-lists", str(tmp_path / "out"))
    assert m.loc[m["split"] == "train", "label"].tolist() == [0, 1, 2, 0]
    rows = [{**r, "label": n} for r, n in
            zip(_rows([f"FFHQ_raw/{i}.png" for i in range(4)]), names, strict=True)]
    manifest = fbench.make_manifest(rows, root=root)
    assert manifest["label"].tolist() == [0, 1, 2, 0]

    train.write_text(f"{AUTHOR}FFHQ_raw/0.png\tfake\n")
    with pytest.raises(FbenchError, match=r"train\.txt:1: label 'fake' is not 0, 1 or 2"):
        read_list(train, "train")
