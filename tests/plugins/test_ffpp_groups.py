"""FaceForensics++ frames grouped by the people their video touches, across methods: Face2Face
``000_003`` and FaceSwap ``003_000`` / ``000_003`` show the same two people, so a per-method
split by video puts one face on both sides. The identity audit catches that; the identity
grouping (split jointly over methods) and FaceForensics++'s official split files prevent it;
frame sampling is seeded by method too."""

from __future__ import annotations

import functools
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner
from thesis_fixtures import MarkerDetector, make_ffpp_videos

import fbench
from fbench import FbenchError
from fbench.cli import cli
from fbench.data.audit import audit
from fbench.data.built import build_dataset
from fbench.data.recipes import build
from fbench.plugins.registry import registered
from fbench.train.resolve import run_audit
from fbench_thesis.commands import add_commands
from fbench_thesis.ffpp import infer_method, prepare_ffpp, sample_frames
from fbench_thesis.identities import (
    assign_identity_groups,
    component_name,
    read_split_files,
    video_identities,
)
from fbench_thesis.sources import collect

# disjoint pairs, as FaceForensics++ pairs its 1,000 videos; both methods hold both directions
PAIRS = [("000", "003"), ("001", "010"), ("002", "017"), ("004", "020"), ("005", "030"),
         ("006", "040")]
NAMES = [f"{a}_{b}" for a, b in PAIRS] + [f"{b}_{a}" for a, b in PAIRS]
PER_VIDEO = 3
SOURCES = ("face2face", "faceswap")
# per method: 12 videos x 3 frames = 36; eval 2 pairs (12 frames), train 4 pairs (24)
RECIPE = fbench.Recipe("ffpp-ids", "F2F + FS grouped by identity",
                       {"train": {"face2face": 24, "faceswap": 24},
                        "eval": {"face2face": 12, "faceswap": 12}},
                       collect=functools.partial(collect, sources=SOURCES),
                       extra={"labels": {"face2face": 2, "faceswap": 2}})


class IdsPlugin:
    @fbench.hookimpl
    def register_recipes(self, register):
        register(RECIPE)

    @fbench.hookimpl
    def register_datasets(self, register):
        register(fbench.DatasetSpec(
            name="ffpp-ids", summary="built F2F + FS", labels=(2,),
            factory=lambda root: fbench.load_built_dataset(root, "ffpp-ids")))


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """ROOT/face2face and ROOT/faceswap prepared from 12 videos each (same names)."""
    base = tmp_path_factory.mktemp("ffpp-ids")
    for i, (method, name) in enumerate((("Face2Face", "face2face"), ("FaceSwap", "faceswap"))):
        videos, masks = make_ffpp_videos(base / "ff", method, len(NAMES), 12, seed=i,
                                         names=NAMES)
        prepare_ffpp(videos, base / "sources" / name, masks=masks, per_video=PER_VIDEO,
                     progress=False, detector=MarkerDetector())
    return base / "sources"


def _ids_by_split(m: pd.DataFrame) -> dict[str, set[str]]:
    ids = m.assign(identity=m["identities"].str.split(";")).explode("identity")
    return {s: set(part["identity"]) for s, part in ids.groupby("split")}


def test_video_names_give_their_ids_and_components_span_methods():
    assert video_identities("face2face", "000_003") == ("000", "003")
    assert video_identities("original", "071") == ("071",)
    assert video_identities("deepfakedetection", "01_02__meeting_serious__YVGY8LOK") == (
        "dfd-01", "dfd-02")  # DFD actors are not YouTube ids
    assert video_identities("faceswap", "clip-a") == ()
    rows = [{"source": "face2face", "video": "000_003", "group": "x"},
            {"source": "faceswap", "video": "003_000", "group": "x"},
            {"source": "faceswap", "video": "003_024", "group": "x"},
            {"source": "face2face", "video": "001_010", "group": "x"},
            {"source": "faceswap", "video": "odd-name", "group": "faceswap/odd-name"}]
    assert assign_identity_groups(rows) == 2
    assert rows[0]["group"] == rows[1]["group"] == rows[2]["group"] == "ffpp-ids:000+003+024"
    assert rows[3]["group"] == "ffpp-ids:001+010" and rows[1]["identities"] == "003;000"
    assert rows[4]["group"] == "faceswap/odd-name" and rows[4]["identities"] == ""
    many = component_name(f"{i:03d}" for i in range(9, -1, -1))
    assert many.startswith("ffpp-ids:000+9more-") and many == component_name(
        f"{i:03d}" for i in range(10))  # stable whatever the order


def test_per_method_video_groups_leak_identities_and_the_audit_fails_them(root):
    candidates = collect(str(root), SOURCES)
    old = candidates.assign(group=candidates["source"] + "/" + candidates["video"])
    reports = [audit(build(RECIPE, old, seed), hashes=False) for seed in range(5)]
    # the old grouping never puts one video in two splits, yet people cross over
    assert all(r.group_leaks.empty for r in reports)
    leaking = [r for r in reports if not r.ok]
    assert len(leaking) >= 4
    report = leaking[0]
    n = report.summary()["identities_in_several_splits"]
    assert n == report.identity_leaks["identity"].nunique() >= 2
    assert set(report.identity_leaks["split"]) == {"train", "eval"}

    # what `fbench run` does with such a manifest (files hashed too: only the faces leak)
    leaky = build(RECIPE, old, next(s for s, r in enumerate(reports) if not r.ok))
    leaky.attrs.update({"name": "old-style", "audit": True, "root": str(root)})
    with pytest.raises(FbenchError, match=r"fails the leakage audit: "
                                          r"identities_in_several_splits \d+\. Fix"):
        run_audit(leaky, True)


def test_identity_groups_split_every_method_together_with_no_face_on_two_sides(root, tmp_path):
    for seed in range(3):
        card = build_dataset(RECIPE, root, tmp_path / f"s{seed}", seed=seed)
        m = pd.read_parquet(tmp_path / f"s{seed}" / "manifest.parquet")
        assert card["audit"]["ok"] and card["audit"]["identities_in_several_splits"] == 0
        assert card["split_together"] == ["face2face", "faceswap"]
        by_split = _ids_by_split(m)
        assert {"train", "val", "eval"} == set(by_split)
        assert not by_split["eval"] & (by_split["train"] | by_split["val"])
        assert not by_split["train"] & by_split["val"]
        built = m.assign(split=m["split"].replace("val", "train")).groupby(
            ["split", "source"]).size()
        assert built.to_dict() == {("eval", "face2face"): 12, ("eval", "faceswap"): 12,
                                   ("train", "face2face"): 24, ("train", "faceswap"): 24}
        assert (m.groupby("group")["split"].nunique() == 1).all()
        assert m["group"].str.startswith("ffpp-ids:").all()
        # a group holds both methods: Face2Face and FaceSwap of one pair sit together
        assert (m.groupby("group")["source"].nunique() == 2).all()
        assert "fixed_split" not in m.columns


def test_data_audit_and_run_refuse_a_face_on_both_sides(root, tmp_path):
    add_commands(cli)
    out = tmp_path / "built"
    with registered(IdsPlugin(), name="ffpp-ids"):
        build_dataset(RECIPE, root, out, seed=0)
        ok = CliRunner().invoke(cli, ["data", "audit", "ffpp-ids", "--data-root", str(out)])
        assert ok.exit_code == 0, ok.output
        assert "identities_in_several_splits 0" in " ".join(ok.output.split())
        # move one eval frame to train under a group of its own: no group straddles, a face does
        m = pd.read_parquet(out / "manifest.parquet")
        row = m.index[m["split"] == "eval"][0]
        m.loc[row, ["split", "group"]] = ["train", "moved"]
        m.to_parquet(out / "manifest.parquet")
        bad = CliRunner().invoke(cli, ["data", "audit", "ffpp-ids", "--data-root", str(out)])
        text = " ".join(bad.output.split())
        assert bad.exit_code != 0 and "groups_in_several_splits 0" in text
        assert "identities_in_several_splits 2" in text  # the two people of that video
        with pytest.raises(FbenchError, match="fails the leakage audit: "
                                              "identities_in_several_splits 2"):
            run_audit(fbench.load_dataset("ffpp-ids", str(out)), True)


def _write_splits(folder: Path, train, val, test) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, pairs in (("train", train), ("val", val), ("test", test)):
        if pairs is not None:
            (folder / f"{name}.json").write_text(json.dumps([list(p) for p in pairs]))


def test_official_split_files_decide_the_side_of_every_video(root, tmp_path):
    copy = tmp_path / "sources"
    shutil.copytree(root, copy)
    _write_splits(copy / "ffpp-splits", PAIRS[:3], PAIRS[3:4], PAIRS[4:])
    card = build_dataset(RECIPE, copy, tmp_path / "official", seed=0)
    m = pd.read_parquet(tmp_path / "official" / "manifest.parquet")
    by_split = _ids_by_split(m)
    assert by_split["eval"] == {"005", "030", "006", "040"}  # test.json, nothing else
    assert by_split["train"] | by_split["val"] == {i for p in PAIRS[:4] for i in p}
    assert card["audit"]["ok"] and card["fixed_splits"]["files"].keys() == {"train", "val",
                                                                            "test"}
    assert "test -> eval" in card["fixed_splits"]["mapping"]
    # the draw does not depend on the seed any more: the files decide
    build_dataset(RECIPE, copy, tmp_path / "other", seed=5)
    other = pd.read_parquet(tmp_path / "other" / "manifest.parquet")
    assert _ids_by_split(other)["eval"] == by_split["eval"]

    # a test side too small for the recipe says which side ran short
    _write_splits(copy / "ffpp-splits", PAIRS[:5], None, PAIRS[5:])
    (copy / "ffpp-splits" / "val.json").unlink()
    with pytest.raises(FbenchError, match=r"eval side of face2face/faceswap.*face2face: asked "
                                          r"12, found 6"):
        build_dataset(RECIPE, copy, tmp_path / "short", seed=0)


@pytest.mark.parametrize(("content", "problem"), [
    ("[[\"000\", \"003\"],", "not valid JSON"),
    ("{\"000\": \"003\"}", "not a non-empty list"),
    ("[]", "not a non-empty list"),
    ("[[\"000\", \"003\", \"004\"]]", "entry 0 is"),
    ("[[\"000\", \"003\"], [0, 3]]", r"entry 1 is \[0, 3\]"),
    ("[[\"001\", \"010\"]]", "id 001 is listed in both"),
])
def test_malformed_split_files_are_refused_with_the_file_and_the_fix(tmp_path, content,
                                                                     problem):
    _write_splits(tmp_path, [("001", "010")], None, [("000", "003")])
    (tmp_path / "test.json").write_text(content)
    with pytest.raises(FbenchError, match=problem) as err:
        read_split_files(tmp_path)
    text = err.value.format_message()
    assert "dataset/splits" in text and ("test.json" in text or "train.json" in text)


def test_missing_or_incomplete_split_files_are_refused(root, tmp_path):
    _write_splits(tmp_path / "only-train", PAIRS, None, None)
    with pytest.raises(FbenchError, match="has no test.json"):
        read_split_files(tmp_path / "only-train")
    copy = tmp_path / "sources"
    shutil.copytree(root, copy)
    _write_splits(copy / "ffpp-splits", PAIRS[:4], None, PAIRS[4:5])  # 006/040 listed nowhere
    with pytest.raises(FbenchError, match=r"video 006_040 touches id\(s\) 006, 040 that no "
                                          "file in"):
        collect(str(copy), SOURCES)
    _write_splits(copy / "ffpp-splits", [("000", "999")] + PAIRS[1:4], None,
                  [("003", "998")] + PAIRS[4:])
    with pytest.raises(FbenchError, match=r"touches ids on both sides .*000: train, 003: eval"):
        collect(str(copy), SOURCES)


def test_prepare_ffpp_splits_checks_then_installs_the_files(tmp_path):
    add_commands(cli)
    _write_splits(tmp_path / "official", PAIRS[:4], PAIRS[4:5], PAIRS[5:])
    result = CliRunner().invoke(cli, ["data", "prepare", "ffpp-splits",
                                      str(tmp_path / "official"), "--root", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    assert "10 ids on the train side, 2 on eval" in " ".join(result.output.split())
    assert sorted(p.name for p in (tmp_path / "r" / "ffpp-splits").iterdir()) == [
        "test.json", "train.json", "val.json"]
    (tmp_path / "official" / "val.json").write_text("nonsense")
    bad = CliRunner().invoke(cli, ["data", "prepare", "ffpp-splits", str(tmp_path / "official"),
                                   "--root", str(tmp_path / "r2")])
    assert bad.exit_code == 2 and "val.json is not valid JSON" in " ".join(bad.output.split())
    assert not (tmp_path / "r2").exists()


def test_frame_sampling_is_seeded_by_method_too(root, tmp_path):
    f2f = sample_frames(300, "000_003", 0, per_video=30, method="face2face")
    assert f2f == sample_frames(300, "000_003", 0, per_video=30, method="face2face")
    assert f2f != sample_frames(300, "000_003", 0, per_video=30, method="faceswap")
    assert sample_frames(100, "000_003", 0, every=20, method="face2face") != sample_frames(
        100, "000_003", 0, every=20, method="faceswap")  # the offset differs too (seed 0)
    # what prepare wrote: each method's own draw, so the same video ids get other frames
    frames = {}
    for name in SOURCES:
        index = pd.read_parquet(root / name / "index.parquet")
        frames[name] = {v: sorted(part["frame"]) for v, part in index.groupby("video")}
        for video, got in frames[name].items():
            assert got == sample_frames(12, video, 0, per_video=PER_VIDEO, method=name)
        assert json.loads((root / name / "settings.json").read_text())["method"] == name
    differ = sum(frames["face2face"][v] != frames["faceswap"][v] for v in NAMES)
    assert differ >= len(NAMES) - 2
    videos = tmp_path / "FF" / "manipulated_sequences" / "FaceSwap" / "c23" / "videos"
    assert infer_method(videos, tmp_path / "anything") == "faceswap"
    assert infer_method(tmp_path / "clips", tmp_path / "Face2Face") == "face2face"
