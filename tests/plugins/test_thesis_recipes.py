"""The thesis's recipes built from fixture sources in the real layouts (FFHQ and GAN folders,
FaceForensics++ frames prepared from fixture videos): exact counts at a reduced --scale,
determinism, grouped splits, native sizes recorded, masks for seg_2, the leak of recipe 3
caught by the audit (and refused by `fbench run`), an injected duplicate caught too."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner
from thesis_fixtures import MarkerDetector, make_ffpp_videos, make_image_sources

import fbench
from fbench import FbenchError
from fbench.cli import cli
from fbench.plugins.registry import get_registry
from fbench.train.config import RunConfig
from fbench.train.resolve import resolve
from fbench_thesis import plugin
from fbench_thesis.ffpp import prepare_ffpp

SCALE = "0.01"
# the thesis's totals per split (THESIS.md; recipes 1 and 2: the per-source counts' sums)
TOTALS = {"1": (30500, 8413), "2": (40500, 11413), "3": (40600, 11686), "4": (40579, 11707),
          "seg_2": (40579, 11707)}


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> Path:
    """ROOT with ffhq (200), three GANs (100 each) and F2F / FS (6 videos x 5 frames) and DFD
    (2 videos x 3 frames) prepared from videos."""
    base = tmp_path_factory.mktemp("thesis")
    root = base / "sources"
    make_image_sources(root)
    for i, (method, name, n_videos, k) in enumerate((
            ("Face2Face", "face2face", 6, 5), ("FaceSwap", "faceswap", 6, 5),
            ("DeepFakeDetection", "deepfakedetection", 2, 3))):
        videos, masks = make_ffpp_videos(base / "ffpp", method, n_videos, 10, seed=i)
        prepare_ffpp(videos, root / name, masks=masks, per_video=k, progress=False,
                     detector=MarkerDetector())
    return root


def _build(recipe: str, root: Path, out: Path, *extra: str) -> tuple[pd.DataFrame, dict]:
    result = CliRunner().invoke(cli, ["data", "build", recipe, "--root", str(root), "--out",
                                      str(out), "--scale", SCALE, *extra])
    assert result.exit_code == 0, result.output
    manifest = pd.read_parquet(out / "manifest.parquet")
    return manifest, fbench.load_built_dataset(out, recipe).attrs["card"]


def test_registers_the_five_recipes_and_their_datasets():
    recipes = {name: r for name, (r, _) in get_registry().recipes().items()
               if name in TOTALS}
    assert set(recipes) == set(TOTALS)
    for name, (train, eval_) in TOTALS.items():
        r = recipes[name]
        assert (r.total("train"), r.total("eval")) == (train, eval_), name
        assert r.legacy_order == (name == "3") and r.with_masks == (name == "seg_2")
        assert set(r.extra["labels"]) == set(r.sources())
    assert recipes["4"].counts["eval"]["face2face"] == 329
    assert "deepfakedetection" in recipes["1"].sources()
    assert "deepfakedetection" not in recipes["4"].sources()
    names = fbench.list_datasets()
    assert {"thesis-1", "thesis-2", "thesis-3", "thesis-4", "seg_2", "thesis-lists"} <= set(names)
    specs = {s.name: s for s in _specs()}
    assert specs["seg_2"].has_masks and not specs["thesis-4"].has_masks


def _specs():
    out = []
    plugin.register_datasets(out.append)
    return out


def test_recipe_4_counts_groups_sizes_and_determinism(sources, tmp_path):
    m, card = _build("4", sources, tmp_path / "a")
    asked = card["asked"]
    assert asked["train"] == {"ffhq": 150, "wgan-gp": 80, "stylegan": 80,
                              "mspie-stylegan2": 80, "face2face": 7, "faceswap": 7}
    assert asked["eval"]["face2face"] == 3 and asked["eval"]["ffhq"] == 50
    built = m.assign(split=m["split"].replace("val", "train")).groupby(["split", "source"]).size()
    for split, per in asked.items():
        for src, n in per.items():
            assert built[(split, src)] == n, (split, src)
    assert card["audit"]["ok"]
    assert (m.groupby("group")["split"].nunique() == 1).all()
    edited = m[m["label"] == 2]
    # grouped by the people a video touches, Face2Face and FaceSwap together (fixture pairs
    # chain: 000_003 and 003_024 are one group)
    assert edited["group"].str.match(r"ffpp-ids:\d{3}(\+\d{3})+$").all()
    assert "ffpp-ids:000+003+024" in set(edited["group"])
    assert card["audit"]["identities_in_several_splits"] == 0
    assert card["split_together"] == ["face2face", "faceswap"]
    ids = edited.assign(i=edited["identities"].str.split(";")).explode("i")
    assert (ids.groupby("i")["split"].nunique() == 1).all()
    sizes = m.groupby("source")[["width", "height"]].agg(lambda s: sorted(set(s)))
    assert sizes.loc["ffhq", "width"] == [64] and sizes.loc["wgan-gp", "width"] == [16]
    assert sizes.loc["stylegan", "width"] == [32]
    assert sizes.loc["mspie-stylegan2", "width"] == [32, 64]
    assert (m["mask"] == "").all()  # not a segmentation recipe

    again, _ = _build("4", sources, tmp_path / "b")
    assert again.equals(m)
    other, _ = _build("4", sources, tmp_path / "c", "--seed", "1")
    assert set(other["path"]) != set(m["path"])

    loaded = fbench.load_dataset("thesis-4", str(tmp_path / "a"))
    assert len(loaded) == len(m) and loaded.attrs["audit"]


def test_seg_2_keeps_the_frame_masks(sources, tmp_path):
    m, card = _build("seg_2", sources, tmp_path / "seg")
    edited = m[m["label"] == 2]
    assert (edited["mask"] != "").all()
    assert all(Path(p).is_file() and "/masks/" in p for p in edited["mask"])
    assert (m.loc[m["label"] < 2, "mask"] == "").all()  # loader: all-zero / all-one
    loaded = fbench.load_dataset("seg_2", str(tmp_path / "seg"))
    assert card["with_masks"] and (loaded["mask"] != "").sum() == len(edited)


def test_recipe_1_takes_deepfakedetection_too(sources, tmp_path):
    m, card = _build("1", sources, tmp_path / "one")
    assert card["audit"]["ok"]
    assert (m["source"] == "deepfakedetection").sum() == 2  # 100 and 46 at 1%: at least 1 each


def test_recipe_3_reproduces_the_leak_and_run_refuses_it(sources, tmp_path):
    out = tmp_path / "three"
    result = CliRunner().invoke(cli, ["data", "build", "3", "--root", str(sources), "--out",
                                      str(out), "--scale", SCALE])
    assert result.exit_code == 0, result.output
    assert "FAILED" in result.output
    card = fbench.load_built_dataset(out, "3").attrs["card"]
    assert not card["audit"]["ok"] and card["audit"]["groups_in_several_splits"] >= 1
    m = pd.read_parquet(out / "manifest.parquet")
    leaking = m[m["source"] == "face2face"].groupby("group")["split"].nunique()
    assert (leaking > 1).any()
    # the listing order the thesis used: 0, 1, 10, 11, ... as strings
    f2f = m[m["source"] == "face2face"]
    train_numbers = f2f.loc[f2f["split"] != "eval", "legacy_number"].tolist()
    assert sorted(train_numbers, key=str)[:3] == [0, 1, 10]
    # `fbench run` refuses a manifest whose groups straddle splits ...
    with pytest.raises(FbenchError, match="appear in more than one split"):
        resolve(RunConfig(detector="resnet18", dataset="thesis-3", data_root=str(out),
                          out=str(tmp_path / "runs")))
    # ... unless told to skip the audit (to show what the leak does), which the run records
    leaky = resolve(RunConfig(detector="resnet18", dataset="thesis-3", data_root=str(out),
                              out=str(tmp_path / "runs"), audit=False))
    recorded = leaky.stored_config()["audit"]
    assert recorded["skipped"] and recorded["groups_in_several_splits"] >= 1
    audit = CliRunner().invoke(cli, ["data", "audit", "thesis-3", "--data-root", str(out)])
    assert audit.exit_code != 0 and "groups in several splits" in audit.output


def test_an_injected_duplicate_is_caught(sources, tmp_path):
    copy = tmp_path / "sources"
    shutil.copytree(sources, copy)
    m, card = _build("4", copy, tmp_path / "clean")
    assert card["audit"]["ok"]
    ffhq = m[m["source"] == "ffhq"]
    eval_img = ffhq.loc[ffhq["split"] == "eval", "path"].iloc[0]
    train_img = ffhq.loc[ffhq["split"] == "train", "path"].iloc[0]
    Path(train_img).write_bytes(Path(eval_img).read_bytes())  # same selection, same seed
    _, card = _build("4", copy, tmp_path / "dup")
    assert not card["audit"]["ok"] and card["audit"]["identical_files_across_splits"] == 2


def test_missing_sources_and_wrong_directories_say_what_to_do(sources, tmp_path):
    partial = tmp_path / "partial"
    shutil.copytree(sources, partial, ignore=shutil.ignore_patterns("faceswap"))
    result = CliRunner().invoke(cli, ["data", "build", "4", "--root", str(partial), "--out",
                                      str(tmp_path / "x"), "--scale", SCALE])
    text = " ".join(result.output.split())
    assert result.exit_code == 2 and "source 'faceswap' not found" in text
    assert "fbench data prepare ffpp" in text and not (tmp_path / "x").exists()

    short = CliRunner().invoke(cli, ["data", "build", "4", "--root", str(sources), "--out",
                                     str(tmp_path / "y"), "--scale", "0.5"])
    assert short.exit_code == 2 and "--scale" in short.output

    _build("4", sources, tmp_path / "four")
    with pytest.raises(FbenchError, match="use --dataset thesis-4"):
        fbench.load_dataset("thesis-3", str(tmp_path / "four"))
