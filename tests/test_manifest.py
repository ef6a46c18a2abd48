"""Manifest validation and grouped splitting."""

from __future__ import annotations

import pandas as pd
import pytest

from fbench import FbenchError
from fbench.data.manifest import validate_manifest
from fbench.data.splits import assert_grouped, carve_validation, groups_in_several_splits


def _rows(n=40, groups_of=2):
    return pd.DataFrame({
        "path": [f"img{i}.png" for i in range(n)],
        "label": [i % 3 for i in range(n)],
        "source": "s",
        "group": [f"g{i // groups_of}-{i % 3}" for i in range(n)],
        "split": ["train" if i < n * 3 // 4 else "eval" for i in range(n)],
    })


def test_labels_outside_range_name_the_file():
    df = _rows()
    df.loc[3, "label"] = 7
    with pytest.raises(FbenchError, match=r"img3.png \(label 7\)"):
        validate_manifest(df, check_files=False)


def test_string_labels_are_accepted_when_numeric():
    df = _rows()
    df["label"] = df["label"].astype(str)
    assert validate_manifest(df, check_files=False)["label"].dtype == "int64"


def test_empty_split_and_missing_columns():
    df = _rows()
    df["split"] = "train"
    with pytest.raises(FbenchError, match="'eval' split is empty"):
        validate_manifest(df, check_files=False)
    with pytest.raises(FbenchError, match="lacks column"):
        validate_manifest(_rows().drop(columns=["group"]), check_files=False)


def test_missing_files_are_reported(tmp_path):
    df = _rows()
    df.attrs["root"] = str(tmp_path)
    with pytest.raises(FbenchError, match="do not exist"):
        validate_manifest(df)


def test_validation_is_carved_by_group_and_label():
    df = validate_manifest(_rows(200), check_files=False)
    out = carve_validation(df, 0.2, seed=1)
    assert groups_in_several_splits(out).empty
    val = out[out["split"] == "val"]
    assert set(val["label"]) == {0, 1, 2}
    assert 0.1 < len(val) / (df["split"] == "train").sum() < 0.3
    assert (out["split"] == "eval").sum() == (df["split"] == "eval").sum()
    again = carve_validation(df, 0.2, seed=1)
    assert again["split"].tolist() == out["split"].tolist()
    assert carve_validation(df, 0.2, seed=2)["split"].tolist() != out["split"].tolist()


def test_a_group_in_two_splits_is_a_leak():
    df = validate_manifest(_rows(), check_files=False)
    df.loc[0, "group"] = df.loc[len(df) - 1, "group"]
    with pytest.raises(FbenchError, match="more than one split"):
        assert_grouped(df)
