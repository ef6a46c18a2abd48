"""The landmark cache (fbench.data.landmarks): where it lives, the round trip aligned by image path,
stale and corrupt files named in the error, landmarks reaching batches, and `fbench run`
attaching them (or refusing, with the command that prepares them). No landmark model here:
points are made up; the mediapipe side is tested with the landmarks plugin."""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

import fbench
from fbench import FbenchError
from fbench.data.images import ManifestDataset, collate
from fbench.data.landmarks import (
    attach_landmarks,
    landmark_cache_path,
    landmark_summary,
    load_landmarks,
    require_landmarks,
    write_landmark_cache,
)
from fbench.plugins.registry import registered

K = 5


def _rows(root, n=6, offset=0):
    rows = []
    rng = np.random.default_rng(offset)
    for i in range(offset, offset + n):
        path = root / f"{i}.png"
        cv2.imwrite(str(path), rng.integers(0, 255, (16, 16, 3), dtype=np.uint8))
        rows.append({"path": f"{i}.png", "label": i % 3, "source": "s", "group": str(i),
                     "split": "eval" if i % 3 == 0 and i >= 3 else "train"})
    return rows


def _points(n, seed=0):
    return np.random.default_rng(seed).random((n, K, 2)).astype(np.float32)


@pytest.fixture
def manifest(tmp_path):
    return fbench.make_manifest(_rows(tmp_path), root=tmp_path, name="tiny")


def test_round_trip_follows_image_paths_not_row_order(manifest):
    points = _points(len(manifest))
    found = np.array([True, False, True, True, False, True])
    path = write_landmark_cache(manifest, points, found, {"producer": "test"})
    assert path == landmark_cache_path(manifest) and path.is_file()

    loaded = load_landmarks(manifest)
    assert loaded is not None and loaded.path == path
    assert np.array_equal(loaded.found, found) and loaded.n_missing == 2
    assert np.allclose(loaded.points[found], points[found])
    assert not loaded.points[~found].any()  # no face: zeros, whatever was passed
    assert loaded.meta["producer"] == "test" and loaded.meta["no_face"] == 2

    shuffled = manifest.iloc[::-1].reset_index(drop=True)
    shuffled.attrs = dict(manifest.attrs)
    again = load_landmarks(shuffled)
    assert np.array_equal(again.found, found[::-1])
    assert np.allclose(again.points, loaded.points[::-1])


def test_cache_location(manifest, tmp_path, monkeypatch):
    monkeypatch.setenv("FBENCH_CACHE", str(tmp_path / "cache"))
    path = landmark_cache_path(manifest)
    assert path.parent == tmp_path / "cache" / "landmarks" and path.name.startswith("tiny-")
    # splits and row order do not change which images a cache covers
    moved = manifest.assign(split="train")
    moved.attrs = dict(manifest.attrs)
    assert landmark_cache_path(moved) == path
    fewer = manifest.iloc[:4].reset_index(drop=True)
    fewer.attrs = dict(manifest.attrs)
    assert landmark_cache_path(fewer) != path
    # a built dataset keeps its landmarks inside its own directory
    built = manifest.copy()
    built.attrs = {**manifest.attrs, "card": {"recipe": "x"}, "root": str(tmp_path / "built")}
    assert landmark_cache_path(built) == tmp_path / "built" / "landmarks.npz"


def test_absent_cache_is_none_and_stale_or_corrupt_caches_are_named(manifest, tmp_path):
    assert load_landmarks(manifest) is None
    path = write_landmark_cache(manifest, _points(6), np.ones(6, bool))
    # an image changed after the landmarks were computed
    cv2.imwrite(str(tmp_path / "2.png"), np.zeros((40, 40, 3), np.uint8))
    with pytest.raises(FbenchError, match=r"is stale: 1 image\(s\) changed.*2\.png") as err:
        load_landmarks(manifest)
    assert str(path) in str(err.value)

    cv2.imwrite(str(tmp_path / "2.png"), np.zeros((16, 16, 3), np.uint8))
    write_landmark_cache(manifest, _points(6), np.ones(6, bool))
    whole = path.read_bytes()
    for garbage in (b"not an npz at all", whole[: len(whole) // 2]):  # truncated zip too
        path.write_bytes(garbage)
        with pytest.raises(FbenchError, match="cannot be read") as err:
            load_landmarks(manifest)
        assert str(path) in str(err.value)


def test_built_dataset_cache_made_for_other_images_is_stale(tmp_path):
    built = tmp_path / "built"
    small = fbench.make_manifest(_rows(tmp_path, 4), root=tmp_path, name="b")
    small.attrs.update({"card": {"recipe": "b"}, "root": str(tmp_path)})
    write_landmark_cache(small, _points(4), np.ones(4, bool))
    grown = fbench.make_manifest(_rows(tmp_path, 4) + _rows(tmp_path, 2, offset=10),
                                 root=tmp_path, name="b")
    grown.attrs.update({"card": {"recipe": "b"}, "root": str(tmp_path)})
    with pytest.raises(FbenchError, match=r"stale: 2 of the dataset's 6 images are not in it"):
        load_landmarks(grown)
    assert not built.exists()


def test_bad_input_to_the_writer_is_refused(manifest):
    with pytest.raises(ValueError, match=r"\[N, K, 2\]"):
        write_landmark_cache(manifest, np.zeros((5, K, 2)), np.ones(5, bool))
    nan = _points(6)
    nan[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="finite"):
        write_landmark_cache(manifest, nan, np.ones(6, bool))


def test_landmarks_reach_the_batch(manifest):
    points = _points(6)
    found = np.array([True, True, False, True, True, True])
    write_landmark_cache(manifest, points, found)
    with_lm = attach_landmarks(manifest, load_landmarks(manifest))
    train = with_lm[with_lm["split"] == "train"]
    ds = ManifestDataset(train, 8)
    assert ds.landmarks.shape == (len(train), K, 2)
    batch = collate([ds[i] for i in range(len(ds))])
    assert batch.landmarks.shape == (len(train), K, 2) and batch.landmarks.dtype == torch.float32
    rows = train.index.to_numpy()
    assert torch.equal(batch.landmarks_found, torch.from_numpy(found[rows]))
    assert np.allclose(batch.landmarks[0].numpy(), points[rows[0]])
    moved = batch.to("cpu")
    assert moved.landmarks_found is not None
    # without landmark columns nothing changes
    plain = collate([ManifestDataset(manifest, 8)[0]])
    assert plain.landmarks is None and plain.landmarks_found is None

    summary = landmark_summary(with_lm)
    assert summary["no_face"] == 1 and summary["images"] == 6
    assert sum(summary["no_face_by_split"].values()) == 1
    assert landmark_summary(manifest) is None


def test_require_landmarks_from_cache_or_from_the_dataset(manifest):
    with pytest.raises(FbenchError, match="no landmark cache") as err:
        require_landmarks(manifest, "needy", "fbench data landmarks tiny")
    assert "fbench data landmarks tiny" in str(err.value)

    # a dataset may bring its own landmarks (None: no face in that image)
    own = manifest.copy()
    own.attrs = dict(manifest.attrs)
    cells = [np.full((3, 2), 0.5, np.float32)] * 6
    cells[1] = None
    own["landmarks"] = pd.Series(cells, dtype=object)
    out = require_landmarks(own, "needy", "unused")
    assert out["landmarks_found"].tolist() == [True, False, True, True, True, True]
    assert np.stack(out["landmarks"].to_list()).shape == (6, 3, 2)
    own["landmarks"] = pd.Series([np.zeros((3, 2))] * 5 + [np.zeros((4, 2))], dtype=object)
    with pytest.raises(FbenchError, match="one K"):
        require_landmarks(own, "needy", "unused")


class _Needy:
    """An inline plugin: a dataset of 24 images and a detector that needs landmarks."""

    def __init__(self, rows, root):
        self.rows, self.root = rows, root

    @fbench.hookimpl
    def register_datasets(self, register):
        register(fbench.DatasetSpec(
            name="lm-tiny", summary="t", needs_root=False,
            factory=lambda root, n=24: fbench.make_manifest(self.rows[:n], root=self.root,
                                                            name="lm-tiny")))

    @fbench.hookimpl
    def register_detectors(self, register):
        from tiny import tiny_cnn

        register(fbench.DetectorSpec(name="needy", summary="n", factory=tiny_cnn,
                                     input_size=16, needs_landmarks=True))


def test_run_attaches_landmarks_or_names_the_command(tmp_path):
    from fbench.train.config import RunConfig
    from fbench.train.resolve import resolve

    rows = _rows(tmp_path, 24)
    config = RunConfig(detector="needy", dataset="lm-tiny", dataset_options={"n": 24},
                       out=str(tmp_path / "runs"))
    with registered(_Needy(rows, tmp_path), name="needy"):
        with pytest.raises(FbenchError) as err:
            resolve(config)
        message = str(err.value)
        assert "needs facial landmarks" in message and "no landmark cache" in message
        assert "fbench data landmarks lm-tiny --dataset-option n=24" in message

        manifest = fbench.load_dataset("lm-tiny", n=24)
        found = np.arange(24) % 4 != 0
        write_landmark_cache(manifest, np.random.default_rng(0).random((24, K, 2)), found)
        resolved = resolve(config)
        assert resolved.manifest["landmarks_found"].sum() == 18
        stored = resolved.stored_config()["landmarks"]
        assert stored["no_face"] == 6 and stored["images"] == 24
        assert stored["cache"] == str(landmark_cache_path(manifest))
        assert sum(stored["no_face_by_split"].values()) == 6
