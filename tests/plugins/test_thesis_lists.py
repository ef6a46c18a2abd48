"""`fbench data import-lists`: the thesis's own tab-separated split files, with the author's
absolute prefix mapped to the user's copy, become the dataset `thesis-lists`; reading the
manifest back reproduces the files line for line."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from thesis_fixtures import noise

import fbench
from fbench import FbenchError
from fbench.cli import cli
from fbench_thesis.commands import add_commands
from fbench_thesis.lists import author_prefix, import_lists, infer_source

AUTHOR = "/home/shenjiyuan/deepfake/"
# the author's folders (THESIS.md and the published lists), a few files each
LAYOUT = {
    "FFHQ_raw/{i}.png": (0, range(15000, 15006), (64, 64)),
    "Deepfake_datasets/mspie_stylegan2_img/mspie_gen_{i}.png": (1, range(8000, 8003), (64, 64)),
    "Deepfake_datasets/stylegan_img/style_gen_{i}.png": (1, range(8000, 8003), (32, 32)),
    "Deepfake_datasets/wgan_gp_img/wgan_gp_gen_{i}.png": (1, range(8000, 8003), (16, 16)),
    "Deepfake_datasets/Face2Face/imgs/{i}.png": (2, range(794, 798), (40, 40)),
    "Deepfake_datasets/FaceSwap/imgs/{i}.png": (2, range(785, 788), (40, 40)),
}


@pytest.fixture
def thesis_copy(tmp_path) -> tuple[Path, Path, Path]:
    """The user's copy of the author's deepfake/ folder, and seg-style train/eval lists that
    name the files under the author's prefix (half of each source in each split)."""
    root = tmp_path / "my data" / "deepfake"
    rng = np.random.default_rng(0)
    lines: dict[str, list[str]] = {"train": [], "eval": []}
    for pattern, (label, numbers, size) in LAYOUT.items():
        for k, i in enumerate(numbers):
            rel = pattern.format(i=i)
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(root / rel), noise(rng, *size))
            if label == 2:
                mask_rel = rel.replace("/imgs/", "/masks/")
                (root / mask_rel).parent.mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(root / mask_rel), np.full((40, 40), 255, np.uint8))
                mask = AUTHOR + mask_rel
            else:
                mask = AUTHOR + ("real.png" if label == 0 else "fake.png")
            split = "train" if k < len(numbers) // 2 else "eval"
            lines[split].append(f"{AUTHOR}{rel}\t{mask}\t{label}")
    for name in ("real.png", "fake.png"):
        cv2.imwrite(str(root / name), np.zeros((8, 8), np.uint8))
    files = []
    for split in ("train", "eval"):
        f = tmp_path / f"{split}_data_seg_2.txt"
        f.write_text("\n".join(lines[split]) + "\n")
        files.append(f)
    return root, files[0], files[1]


def _lines_from_manifest(m: pd.DataFrame, root: Path, split: str) -> list[str]:
    """Write a split back in the thesis's format, with the author's prefix."""
    out = []
    for r in m[m["split"] == split].itertuples():
        back = AUTHOR + str(Path(r.path).relative_to(root))
        mask = (AUTHOR + str(Path(r.mask).relative_to(root)) if r.mask
                else AUTHOR + ("real.png" if r.label == 0 else "fake.png"))
        out.append(f"{back}\t{mask}\t{r.label}")
    return out


def test_import_round_trip_with_the_prefix_mapped_to_the_users_root(thesis_copy, tmp_path):
    root, train, eval_ = thesis_copy
    add_commands(cli)
    out = tmp_path / "lists"
    result = CliRunner().invoke(cli, ["data", "import-lists", str(train), str(eval_),
                                      "--out", str(out), "--root", str(root), "--no-progress"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "groups inferred: 7 pseudo-videos from 7 frames of face2face, faceswap" in text

    m = fbench.load_dataset("thesis-lists", str(out))
    card = m.attrs["card"]
    assert len(m) == sum(len(v[1]) for v in LAYOUT.values())
    assert _lines_from_manifest(m, root, "train") == train.read_text().splitlines()
    assert _lines_from_manifest(m, root, "eval") == eval_.read_text().splitlines()
    assert set(m["source"]) == {"ffhq", "mspie-stylegan2", "stylegan", "wgan-gp", "face2face",
                                "faceswap"}
    assert (m.loc[m["label"] < 2, "mask"] == "").all()  # real.png / fake.png -> ""
    assert (m.loc[m["label"] == 2, "mask"].str.contains("/masks/")).all()
    row = m[m["path"].str.endswith("FFHQ_raw/15000.png")].iloc[0]
    assert row["group"] == "ffhq/15000" and row["width"] == 64
    assert m.loc[m["source"] == "wgan-gp", "width"].eq(16).all()
    # noise frames share nothing: every frame is a pseudo-video of its own
    assert m.loc[m["source"] == "face2face", "group"].str.startswith(
        "face2face/pseudo-video-").all()
    assert m.attrs["groups"]["origin"] == "inferred" and m.attrs["groups"]["n_groups"] == 7
    assert card["groups_unknown"] == [] and card["with_masks"]
    assert card["prefix_map"] == [[AUTHOR, str(root.resolve())]]
    assert card["lists"]["eval"]["rows"] == (m["split"] == "eval").sum()

    # the explicit form gives the same manifest
    card2 = import_lists(train, eval_, tmp_path / "explicit",
                         map_prefix=[(AUTHOR, str(root))], progress=False)
    m2 = pd.read_parquet(tmp_path / "explicit" / "manifest.parquet")
    assert m2[["path", "mask", "label", "source", "group", "split"]].equals(
        m[["path", "mask", "label", "source", "group", "split"]])
    assert card2["built"] == card["built"]


def test_two_column_lists_and_source_inference(tmp_path):
    assert infer_source("/x/deepfake/Deepfake_datasets/FaceSwap/imgs/1.png") == "faceswap"
    assert infer_source("/x/deepfake/FFHQ_raw/1.png") == "ffhq"
    assert infer_source("/data/my_faces/img/3.png") == "img"
    assert author_prefix([AUTHOR + "FFHQ_raw/1.png", AUTHOR + "real.png"]) == AUTHOR
    with pytest.raises(FbenchError, match="2 different prefixes"):
        author_prefix(["/a/FFHQ_raw/1.png", "/b/FFHQ_raw/2.png"])

    rng = np.random.default_rng(0)
    for i in range(4):
        cv2.imwrite(str(tmp_path / f"{i}.png"), noise(rng, 8, 8))
    (tmp_path / "train.txt").write_text("/old/FFHQ_raw/0.png\t0\n/old/FFHQ_raw/1.png\t0\n")
    (tmp_path / "eval.txt").write_text("/old/FFHQ_raw/2.png\t0\n/old/FFHQ_raw/3.png\t0\n")
    card = import_lists(tmp_path / "train.txt", tmp_path / "eval.txt", tmp_path / "out",
                        map_prefix=[("/old/FFHQ_raw", str(tmp_path))], progress=False)
    assert not card["with_masks"] and card["groups_unknown"] == []
    assert "groups" not in card  # FFHQ only: every image is its own, recorded, identity
    assert card["built"] == {"eval": {"ffhq": 2}, "train": {"ffhq": 2}}


def test_bad_lists_and_missing_files_are_refused_before_writing(thesis_copy, tmp_path):
    root, train, eval_ = thesis_copy
    out = tmp_path / "out"
    with pytest.raises(FbenchError, match=r"do not exist.*--root DIR"):
        import_lists(train, eval_, out, progress=False)  # the author's paths, unmapped
    assert not out.exists()
    (root / "FFHQ_raw" / "15000.png").unlink()
    with pytest.raises(FbenchError, match=r"1 listed file\(s\) do not exist.*15000.png"):
        import_lists(train, eval_, out, root=root, progress=False)
    assert not out.exists()

    with pytest.raises(FbenchError, match="import them first: `fbench data import-lists"):
        fbench.load_dataset("thesis-lists", str(tmp_path))

    bad = tmp_path / "bad.txt"
    bad.write_text(f"{AUTHOR}FFHQ_raw/15001.png 0\n")
    with pytest.raises(FbenchError, match=r"bad.txt:1: expected `path<TAB>label`"):
        import_lists(bad, eval_, out, root=root, progress=False)
    bad.write_text(f"{AUTHOR}FFHQ_raw/15001.png\t3\n")
    with pytest.raises(FbenchError, match=r"bad.txt:1: label '3'"):
        import_lists(bad, eval_, out, root=root, progress=False)
    assert not out.exists()
    add_commands(cli)
    result = CliRunner().invoke(cli, ["data", "import-lists", str(train), str(eval_), "--out",
                                      str(out), "--map-prefix", "nonsense"])
    assert result.exit_code == 2 and "OLD=NEW" in result.output
