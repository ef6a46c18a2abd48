"""Recipe building (grouped, deterministic, exact counts) and the leakage audit."""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd
import pytest

from fbench import FbenchError
from fbench.data.audit import audit, difference_hash
from fbench.data.recipes import Recipe, build, shortfall


def _candidates(videos=10, frames=6):
    rows = []
    for v in range(videos):
        for f in range(frames):
            rows.append({"path": f"f2f/{v * frames + f}.png", "label": 2, "source": "f2f",
                         "group": f"f2f-video{v}", "mask": f"m/{v}-{f}.png"})
    for i in range(40):
        rows.append({"path": f"ffhq/{i}.png", "label": 0, "source": "ffhq", "group": f"ffhq-{i}",
                     "mask": ""})
    return pd.DataFrame(rows)


RECIPE = Recipe("t", "test", {"train": {"ffhq": 20, "f2f": 25}, "eval": {"ffhq": 10, "f2f": 13}})


def test_counts_are_exact_and_groups_never_straddle():
    out = build(RECIPE, _candidates(), seed=0)
    counts = out.groupby(["split", "source"]).size()
    assert counts[("train", "f2f")] == 25 and counts[("eval", "f2f")] == 13
    assert counts[("train", "ffhq")] == 20 and counts[("eval", "ffhq")] == 10
    assert (out.groupby("group")["split"].nunique() == 1).all()
    assert (out["mask"] == "").all()  # not a segmentation recipe


def test_deterministic_for_a_seed():
    a, b = build(RECIPE, _candidates(), 1), build(RECIPE, _candidates(), 1)
    assert a.equals(b)
    assert not a.equals(build(RECIPE, _candidates(), 2))


def test_shortfall_names_the_source_and_suggests_scale():
    big = Recipe("big", "", {"train": {"ffhq": 60}, "eval": {"ffhq": 20}})
    assert shortfall(big, _candidates()) == {"ffhq": (80, 40)}
    with pytest.raises(FbenchError, match=r"ffhq: asked 80, found 40.*--scale 0.5"):
        build(big, _candidates(), 0)
    small = build(big.scaled(0.5), _candidates(), 0)
    assert (small["split"] == "train").sum() == 30 and (small["split"] == "eval").sum() == 10


def test_legacy_order_reproduces_a_leak_that_the_audit_catches():
    cands = _candidates()
    # the thesis listed frames in os.listdir order: 0, 1, 10, 11, ... (lexicographic)
    f2f = cands[cands.source == "f2f"].copy()
    f2f = f2f.iloc[np.argsort(f2f["path"].to_numpy())]
    leaky = Recipe("3", "", RECIPE.counts, legacy_order=True)
    out = build(leaky, pd.concat([f2f, cands[cands.source == "ffhq"]]), 0)
    report = audit(out, hashes=False)
    assert not report.ok and report.summary()["groups_in_several_splits"] > 0
    assert audit(build(RECIPE, cands, 0), hashes=False).ok


def test_audit_finds_copies_and_near_copies_across_splits(tmp_path):
    rng = np.random.default_rng(0)
    rows = []
    for i in range(6):
        img = cv2.resize(rng.integers(0, 255, (6, 6, 3), dtype=np.uint8), (64, 64),
                         interpolation=cv2.INTER_CUBIC)  # smooth, like a photo at 8x8
        cv2.imwrite(str(tmp_path / f"{i}.png"), img)
        rows.append({"path": f"{i}.png", "label": i % 3, "source": "s", "group": str(i),
                     "split": "train" if i < 4 else "eval"})
    # an exact copy of train image 0 in eval, and a re-encoded, resized copy of image 1
    (tmp_path / "copy.png").write_bytes((tmp_path / "0.png").read_bytes())
    img1 = cv2.imread(str(tmp_path / "1.png"))
    cv2.imwrite(str(tmp_path / "near.jpg"), cv2.resize(img1, (48, 48)),
                [cv2.IMWRITE_JPEG_QUALITY, 80])
    rows += [{"path": "copy.png", "label": 0, "source": "s", "group": "c", "split": "eval"},
             {"path": "near.jpg", "label": 1, "source": "s", "group": "n", "split": "eval"}]
    m = pd.DataFrame(rows)
    m.attrs["root"] = str(tmp_path)
    report = audit(m)
    assert set(report.duplicate_leaks["path"]) == {"0.png", "copy.png"}
    assert "near.jpg" in set(report.near_duplicate_leaks["path"])
    assert difference_hash(str(tmp_path / "1.png")) != difference_hash(str(tmp_path / "2.png"))


def test_balance_check_against_the_recipe():
    m = pd.DataFrame({"path": list("abcd"), "label": [0, 0, 0, 1], "source": "s",
                      "group": list("abcd"), "split": "eval"})
    report = audit(m, expected_balance={"eval": {0: 0.5, 1: 0.5}}, hashes=False)
    assert not report.ok and report.summary()["balance_mismatches"] == 2


def test_identity_check_catches_a_person_in_train_and_val():
    m = pd.DataFrame({"path": list("abcde"), "label": 2, "source": "s", "group": list("abcde"),
                      "split": ["train", "val", "eval", "eval", "train"],
                      "identities": ["000;003", "003;000", "010", "", None]})
    report = audit(m, hashes=False)
    assert report.group_leaks.empty and not report.ok
    assert report.summary()["identities_in_several_splits"] == 2  # 000 and 003
    assert set(report.identity_leaks["path"]) == {"a", "b"}
    assert set(report.identity_leaks["split"]) == {"train", "val"}
    m.loc[1, "split"] = "train"  # both on one side: clean
    assert audit(m, hashes=False).ok
    assert audit(m.drop(columns="identities"), hashes=False).identity_leaks.empty
