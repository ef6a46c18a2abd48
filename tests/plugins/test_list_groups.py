"""Groups for the thesis's own lists: its FaceForensics++ frames are ``imgs/N.png`` with no video,
numbered by one global counter, so one video's frames have consecutive numbers. The importer
chains neighbouring, look-alike frames back into pseudo-videos, says the groups are inferred
(``attrs["groups"]``), and the audit then sees a video cut between train and eval."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from thesis_fixtures import noise

import fbench
from fbench import FbenchError
from fbench.cli import cli
from fbench.data.splits import carve_validation
from fbench.train.resolve import run_audit
from fbench_thesis.commands import add_commands
from fbench_thesis.lists import chain_frames, import_lists, infer_frame_groups

AUTHOR = "/home/shenjiyuan/deepfake/"
F2F = "Deepfake_datasets/Face2Face/imgs"
FIRST = 100  # the counter's value at the first video's first frame
VIDEOS, FRAMES = 3, 10


def _drifting_video(rng: np.random.Generator) -> list[np.ndarray]:
    """A smooth random face stand-in that drifts a pixel and brightens a little per frame, with
    sensor noise: neighbouring frames look alike, other videos do not."""
    small = rng.integers(0, 255, (6, 6, 3), dtype=np.uint8)
    base = cv2.resize(small, (72, 72), interpolation=cv2.INTER_CUBIC).astype(np.float32)
    frames = []
    for f in range(FRAMES):
        img = np.roll(base, f, axis=1)[4:68, 4:68] + 1.5 * f + rng.normal(0, 3, (64, 64, 3))
        frames.append(np.clip(img, 0, 255).astype(np.uint8))
    return frames


@pytest.fixture
def deepfake(tmp_path) -> Path:
    """The user's copy of deepfake/: three videos' frames numbered as the thesis numbered them
    (FIRST .. FIRST+29, one video after the other), and four FFHQ images."""
    root = tmp_path / "deepfake"
    (root / F2F).mkdir(parents=True)
    (root / "FFHQ_raw").mkdir()
    rng = np.random.default_rng(0)
    n = FIRST
    for _ in range(VIDEOS):
        for frame in _drifting_video(rng):
            cv2.imwrite(str(root / F2F / f"{n}.png"), frame)
            n += 1
    for i in range(4):
        cv2.imwrite(str(root / "FFHQ_raw" / f"{15000 + i}.png"), noise(rng, 64, 64))
    return root


def _rows(root: Path, numbers) -> list[dict]:
    return [{"path": str(root / F2F / f"{n}.png"), "source": "face2face", "label": 2,
             "group": f"face2face/frame-{n}"} for n in numbers]


def _videos(rows: list[dict]) -> set[frozenset[int]]:
    groups: dict[str, set[int]] = {}
    for r in rows:
        groups.setdefault(r["group"], set()).add(int(Path(r["path"]).stem))
    return {frozenset(g) for g in groups.values()}


def _truth(skip: tuple[int, ...] = ()) -> set[frozenset[int]]:
    return {frozenset(n for n in range(FIRST + v * FRAMES, FIRST + (v + 1) * FRAMES)
                      if n not in skip) for v in range(VIDEOS)}


def test_frames_of_three_videos_chain_back_into_three_groups(deepfake):
    numbers = list(range(FIRST, FIRST + VIDEOS * FRAMES))
    rows = _rows(deepfake, np.random.default_rng(1).permutation(numbers))  # any list order
    info = infer_frame_groups(rows, progress=False)
    assert _videos(rows) == _truth()
    assert info["origin"] == "inferred" and info["n_groups"] == 3 and info["frames"] == 30
    assert "dHash" in info["method"] and "16 bits" in info["method"]
    assert {r["group"] for r in rows} == {f"face2face/pseudo-video-{FIRST + v * FRAMES}"
                                          for v in range(VIDEOS)}

    # a frame left out of the lists does not cut its video in two
    rows = _rows(deepfake, [n for n in numbers if n != 114])
    infer_frame_groups(rows, progress=False)
    assert _videos(rows) == _truth(skip=(114,))

    # nor does one odd frame (a blink, a cut): the chain looks past it
    odd = cv2.imread(str(deepfake / F2F / f"{FIRST + 25}.png"))
    cv2.imwrite(str(deepfake / F2F / f"{FIRST + 5}.png"), odd)
    rows = _rows(deepfake, numbers)
    infer_frame_groups(rows, progress=False)
    # the odd frame itself stands alone; the rest of its video stays one group
    assert _videos(rows) == _truth(skip=(FIRST + 5,)) | {frozenset({FIRST + 5})}


def test_chain_threshold_gap_and_lookahead():
    # hashes as plain ints: 0b111 is 3 bits from 0; the threshold is inclusive
    assert chain_frames([1, 2], [0, 0b111], threshold=3) == [1, 1]
    assert chain_frames([1, 2], [0, 0b111], threshold=2) == [1, 2]
    assert chain_frames([1, 5], [0, 0], max_gap=3) == [1, 5]  # too far apart in numbers
    assert chain_frames([1, 4], [0, 0], max_gap=3) == [1, 1]
    # frame 2 is odd; 1 and 3 still join through the look-ahead, not with lookahead=1
    assert chain_frames([3, 1, 2], [0, 0, 2**64 - 1]) == [1, 1, 2]
    assert chain_frames([3, 1, 2], [0, 0, 2**64 - 1], lookahead=1) == [3, 1, 2]


def test_frames_without_numbers_keep_one_group_each_and_say_unknown(tmp_path):
    rows = [{"path": str(tmp_path / "Face2Face" / "imgs" / f"{name}.png"),
             "source": "face2face", "label": 2, "group": f"face2face/frame-{name}"}
            for name in ("a", "b")]
    rows.append({"path": str(tmp_path / "FFHQ_raw" / "1.png"), "source": "ffhq", "label": 0,
                 "group": "ffhq/1"})
    info = infer_frame_groups(rows, progress=False)
    assert info["origin"] == "unknown" and info["n_groups"] == 2
    assert info["sources"] == ["face2face"]
    assert [r["group"] for r in rows] == ["face2face/frame-a", "face2face/frame-b", "ffhq/1"]
    assert infer_frame_groups(rows[2:], progress=False) is None  # nothing to infer


def _lists(tmp_path: Path, train: range, eval_: range) -> tuple[Path, Path]:
    files = []
    for split, numbers, ffhq in (("train", train, (15000, 15001)),
                                 ("eval", eval_, (15002, 15003))):
        lines = [f"{AUTHOR}{F2F}/{n}.png\t2" for n in numbers]
        lines += [f"{AUTHOR}FFHQ_raw/{i}.png\t0" for i in ffhq]
        f = tmp_path / f"{split}.txt"
        f.write_text("\n".join(lines) + "\n")
        files.append(f)
    return files[0], files[1]


def test_import_infers_groups_and_the_audit_sees_a_video_cut_by_the_lists(deepfake, tmp_path):
    add_commands(cli)
    # the thesis's cut points were not video boundaries: cut inside the second video
    train, eval_ = _lists(tmp_path, range(FIRST, FIRST + 15), range(FIRST + 15, FIRST + 30))
    out = tmp_path / "lists"
    result = CliRunner().invoke(cli, ["data", "import-lists", str(train), str(eval_), "--out",
                                      str(out), "--root", str(deepfake), "--no-progress"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "groups inferred: 3 pseudo-videos from 30 frames of face2face" in text
    assert "1 pseudo-video(s) have frames in both train and eval" in text

    m = fbench.load_dataset("thesis-lists", str(out))
    groups = m.attrs["groups"]  # survives to the manifest the dataset factory returns
    assert groups["origin"] == "inferred" and groups["n_groups"] == 3
    assert groups["straddling"] == 1 and "dHash" in groups["method"]
    assert m.attrs["card"]["groups"] == groups and m.attrs["card"]["groups_unknown"] == []
    assert (m.loc[m["source"] == "ffhq", "group"] == [f"ffhq/{i}" for i in range(15000, 15004)]
            ).all()  # other sources keep their groups
    cut = f"face2face/pseudo-video-{FIRST + FRAMES}"
    assert set(m.loc[m["group"] == cut, "split"]) == {"train", "eval"}

    with pytest.raises(FbenchError, match="groups_in_several_splits 1"):
        run_audit(m, True)
    audit = CliRunner().invoke(cli, ["data", "audit", "thesis-lists", "--data-root", str(out)])
    assert audit.exit_code != 0 and cut in audit.output


def test_validation_is_carved_by_pseudo_video(deepfake, tmp_path):
    train, eval_ = _lists(tmp_path, range(FIRST, FIRST + 20), range(FIRST + 20, FIRST + 30))
    import_lists(train, eval_, tmp_path / "lists", root=deepfake, progress=False)
    m = fbench.load_dataset("thesis-lists", str(tmp_path / "lists"))
    assert m.attrs["groups"]["straddling"] == 0
    carved = carve_validation(m, 0.3, seed=0)
    edited = carved[carved["label"] == 2]
    assert (edited["split"] == "val").sum() == FRAMES  # one whole video, not scattered frames
    assert (edited.groupby("group")["split"].nunique() == 1).all()
    assert carved.attrs["groups"]["origin"] == "inferred"
