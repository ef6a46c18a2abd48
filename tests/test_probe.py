"""The shortcut probe (fbench.data.probe, `fbench data probe`): a planted cue is found and named, a
family without it stays near chance, spectral families never raise a shortcut warning, JPEG
quality is read back from the quantisation tables, chance level, the deterministic subsample,
the result stored and read back (beside a built dataset, else in the cache), the command's
table, JSON and markdown, and the landmarks plugin's ``face-found`` family (mediapipe on a
real photograph and a flat image, or the landmark cache when there is one)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import fbench
from fbench import FbenchError
from fbench.cli.probe import probe_cmd
from fbench.data.probe import (
    chance_levels,
    probe_markdown,
    run_probe,
    shortcut_warnings,
    stored_probe,
    subsample,
)
from fbench.data.probe_features import BUILTIN_FAMILIES, feature_families, jpeg_quality
from fbench.plugins.registry import get_registry, registered

N_TRAIN, N_EVAL = 40, 40  # per label


def _noise(i: int, size: int = 24) -> np.ndarray:
    """The same pixel distribution in every class: only what a test plants tells them apart."""
    return np.random.default_rng(i).integers(0, 256, (size, size, 3), dtype=np.uint8)


def _write(path: Path, label: int, i: int, cue: str) -> None:
    if cue == "jpeg" and label > 0:
        Image.fromarray(_noise(i)).save(path.with_suffix(".jpg"), "JPEG",
                                        quality=(50, 90)[label - 1])
        return
    cv2.imwrite(str(path), _noise(i))
    if cue == "size":
        # bytes after PNG's end chunk: readers ignore them, the file size does not
        with open(path, "ab") as fh:
            fh.write(b"\0" * 3000 * label)


def planted_rows(root: Path, cue: str) -> list[dict]:
    """Three labels of noise images; ``cue``: ``size`` pads the files by 3000 bytes per label,
    ``jpeg`` saves label 0 as PNG, 1 as JPEG at quality 50, 2 at quality 90."""
    rows, i = [], 0
    for label in (0, 1, 2):
        for split, n in (("train", N_TRAIN), ("eval", N_EVAL)):
            for _ in range(n):
                path = root / f"{i}.png"
                _write(path, label, i, cue)
                name = path.name if path.is_file() else path.with_suffix(".jpg").name
                rows.append({"path": name, "label": label, "source": "s", "group": str(i),
                             "split": split})
                i += 1
    return rows


def planted(root: Path, cue: str):
    root.mkdir(parents=True, exist_ok=True)
    return fbench.make_manifest(planted_rows(root, cue), root=root, name=f"planted-{cue}")


def _builtins():
    return [(spec, "core") for spec in BUILTIN_FAMILIES]


def _by_family(result: dict) -> dict[str, dict]:
    return {f["family"]: f for f in result["families"]}


# ----------------------------------------------------------------------------- planted cues


def test_planted_file_size_is_a_shortcut_and_colour_stays_near_chance(tmp_path):
    manifest = planted(tmp_path / "d", "size")
    result = run_probe(manifest, families=_builtins()).to_dict()
    fam = _by_family(result)
    assert result["chance"] == pytest.approx(1 / 3, abs=1e-3)  # stored to 4 decimals
    assert fam["file-size"]["macro_f1"] > 0.9 and fam["file-size"]["verdict"] == "shortcut"
    for clean in ("colour", "native-size", "jpeg-quality", "spectrum"):
        assert fam[clean]["macro_f1"] < result["chance"] + 0.15, clean
    # every image is 24x24 PNG: those families carry nothing at all
    assert fam["native-size"]["verdict"] == "constant"
    assert fam["jpeg-quality"]["verdict"] == "constant"
    warnings = shortcut_warnings(result)
    assert len(warnings) == 1 and warnings[0].startswith("'file-size' predicts the label")
    assert result["images"] == {"train": 3 * N_TRAIN, "eval": 3 * N_EVAL,
                                "total": 3 * (N_TRAIN + N_EVAL), "manifest": len(manifest)}


def test_planted_jpeg_is_named_and_spectral_family_never_warns(tmp_path):
    manifest = planted(tmp_path / "d", "jpeg")
    result = run_probe(manifest, families=_builtins()).to_dict()
    fam = _by_family(result)
    assert fam["jpeg-quality"]["macro_f1"] > 0.9 and fam["jpeg-quality"]["verdict"] == "shortcut"
    assert fam["jpeg-quality"]["n_features"] == 4 and fam["spectrum"]["n_features"] == 16
    # JPEG at quality 50 smooths the noise: the spectrum sees it too, and that is expected
    assert fam["spectrum"]["spectral"] and fam["spectrum"]["verdict"] == "spectral (expected)"
    named = " ".join(shortcut_warnings(result))
    assert "'jpeg-quality'" in named and "spectrum" not in named
    # a stricter margin silences what a looser one reports, never the other way
    assert shortcut_warnings(result, margin=0.99) == []


@pytest.mark.parametrize("quality", [20, 50, 75, 90, 95])
def test_jpeg_quality_is_read_back_from_the_quantisation_tables(quality):
    buf = io.BytesIO()
    Image.fromarray(_noise(0, 64)).save(buf, "JPEG", quality=quality)
    buf.seek(0)
    with Image.open(buf) as im:
        assert jpeg_quality(im.quantization) == pytest.approx(quality, abs=1)
    assert jpeg_quality(None) is None


def test_chance_is_the_stratified_guess_and_beats_the_best_constant():
    balanced = np.repeat([0, 1, 2], 10)
    assert chance_levels(balanced) == pytest.approx((1 / 3, 1 / 6))
    two = np.array([0] * 9 + [1])  # F1 of the constant guess "0" is 2*0.9/1.9, over 2 labels
    stratified, constant = chance_levels(two)
    assert stratified == pytest.approx(0.5) and constant == pytest.approx(0.9 / 1.9)


def test_subsample_is_capped_per_side_and_label_and_ignores_row_order(tmp_path):
    manifest = planted(tmp_path / "d", "size")
    manifest.loc[manifest.index[::4], "split"] = "val"  # carved from train: counts as train
    picked = subsample(manifest, 7)
    counts = picked.assign(side=picked["split"].replace("val", "train")) \
        .groupby(["side", "label"]).size()
    assert (counts == 7).all() and len(counts) == 6
    shuffled = manifest.sample(frac=1.0, random_state=3)
    assert sorted(subsample(shuffled, 7)["path"]) == sorted(picked["path"])


def test_too_few_labels_is_a_user_error(tmp_path):
    manifest = planted(tmp_path / "d", "size")
    keep = (manifest["split"] == "train") | (manifest["label"] == 0)
    one = fbench.make_manifest(manifest[keep], root=manifest.attrs["root"], name="one")
    with pytest.raises(FbenchError, match="two labels or more in the eval split"):
        run_probe(one, families=_builtins(), store=False)


# ----------------------------------------------------------------------------- storage


def test_result_is_stored_in_the_cache_and_survives_a_carved_val_split(tmp_path, monkeypatch):
    monkeypatch.setenv("FBENCH_CACHE", str(tmp_path / "cache"))
    manifest = planted(tmp_path / "d", "size")
    assert stored_probe(manifest) is None
    result = run_probe(manifest, families=_builtins())
    assert Path(result.stored_at).parent == tmp_path / "cache" / "probe"
    back = stored_probe(manifest)
    assert back is not None and back["families"] == result.to_dict()["families"]

    carved = manifest.copy()
    carved.loc[carved.index[:10], "split"] = "val"
    assert stored_probe(carved)["manifest_sha256"] == result.manifest_sha256
    relabelled = manifest.copy()
    relabelled.loc[0, "label"] = 2
    assert stored_probe(relabelled) is None


def test_built_dataset_keeps_its_probe_beside_the_card(tmp_path, monkeypatch):
    monkeypatch.setenv("FBENCH_CACHE", str(tmp_path / "cache"))
    manifest = planted(tmp_path / "d", "size")
    manifest.attrs["card"] = {"recipe": "planted"}  # what fbench.data.built attaches
    result = run_probe(manifest, families=_builtins(), max_per_class=10)
    assert Path(result.stored_at) == tmp_path / "d" / "probe.json"
    assert not (tmp_path / "cache" / "probe").exists()
    assert stored_probe(manifest)["images"]["total"] == 60
    # a rebuild with other rows into the same folder does not inherit the old verdict
    rebuilt = manifest.iloc[:-3].copy()
    rebuilt.attrs = dict(manifest.attrs)
    assert stored_probe(rebuilt) is None


def test_markdown_has_one_row_per_family_and_the_warning(tmp_path):
    manifest = planted(tmp_path / "d", "size")
    text = probe_markdown(run_probe(manifest, families=_builtins(), store=False).to_dict())
    table_rows = [line for line in text.splitlines() if line.startswith("| ")]
    assert len(table_rows) == 1 + len(BUILTIN_FAMILIES)
    assert any(r.startswith("| file-size |") and "| shortcut |" in r for r in table_rows)
    assert "- 'file-size' predicts the label" in text


# ----------------------------------------------------------------------------- plugins, CLI


def _without_landmarks() -> None:
    """Unload the landmarks plugin for this test (the registry is rebuilt for the next)."""
    get_registry().load_entry_points()
    get_registry().unregister_plugin(name="landmarks")


def _plugin(families=(), datasets=()):
    class Plugin:
        @fbench.hookimpl
        def register_probe_features(self, register):
            for spec in families:
                register(spec)

        @fbench.hookimpl
        def register_datasets(self, register):
            for spec in datasets:
                register(spec)

    return Plugin()


def test_plugin_family_is_scored_with_its_provider_and_note(tmp_path):
    manifest = planted(tmp_path / "d", "none")
    labels = manifest["label"]

    def leak(m):
        def extract(row, image, path):
            return [float(labels[row])]  # the label itself: the worst shortcut there is
        extract.note = "reads the label"
        return extract

    def one_away(m):
        return lambda row, image, path: [float(labels[row] == 1)]

    specs = [fbench.ProbeFeatureSpec("leak", "the label", False, leak),
             fbench.ProbeFeatureSpec("one-away", "is it generated", False, one_away)]
    with registered(_plugin(specs), name="leaky"):
        families = feature_families()
        assert [s.name for s, _ in families][-1] == "spectrum"  # spectral families last
        result = run_probe(manifest, families=[f for f in families if f[0].name in
                                               ("leak", "one-away")], store=False).to_dict()
    fam = _by_family(result)
    assert fam["leak"]["macro_f1"] == 1.0 and fam["leak"]["provider"] == "leaky"
    assert fam["leak"]["note"] == "reads the label"
    # one binary feature names at most two labels: macro-F1 is capped at (1 + 2/3 + 0) / 3,
    # and the per-label F1 shows which label it gives away
    assert fam["one-away"]["macro_f1"] == pytest.approx(5 / 9, abs=1e-3)
    assert fam["one-away"]["f1_per_label"]["generated"] == 1.0
    assert shortcut_warnings(result) == [
        "'leak' predicts the label at macro-F1 1.00 (chance 0.33): a detector can win on it.",
        "'one-away' predicts the label at macro-F1 0.56 (chance 0.33): a detector can win on it."]


def test_plugin_family_that_takes_a_builtin_name_or_varies_in_length_is_refused(tmp_path):
    clash = fbench.ProbeFeatureSpec("colour", "mine", False, lambda m: None)
    with registered(_plugin([clash]), name="clash"):
        with pytest.raises(FbenchError, match="built-in family"):
            feature_families()
    ragged = fbench.ProbeFeatureSpec(
        "ragged", "r", False, lambda m: lambda row, image, path: [0.0] * (1 + row % 2))
    with pytest.raises(FbenchError, match="lengths"):
        run_probe(planted(tmp_path / "d", "none"), families=[(ragged, "p")], store=False)
    with pytest.raises(ValueError, match="kebab-case"):
        fbench.ProbeFeatureSpec("Face Found", "x", False, lambda m: None)


def test_cli_prints_the_table_and_writes_json_and_markdown(tmp_path, monkeypatch):
    monkeypatch.setenv("FBENCH_CACHE", str(tmp_path / "cache"))
    rows = planted_rows(tmp_path, "size")
    spec = fbench.DatasetSpec(name="planted", summary="p", needs_root=False,
                              factory=lambda root=None: fbench.make_manifest(
                                  rows, root=tmp_path, name="planted"))
    # only the built-in families: face-found (mediapipe) has tests of its own below
    _without_landmarks()
    with registered(_plugin(datasets=[spec]), name="planted"):
        md = tmp_path / "probe.md"
        result = CliRunner().invoke(probe_cmd, ["planted", "--no-progress", "-o", str(md),
                                                "--max-per-class", "20"])
        assert result.exit_code == 0, result.output
        text = " ".join(result.output.split())
        assert "shortcut probe of planted" in text and "eval macro-F1" in text
        assert "shortcut: 'file-size' predicts the label" in text
        assert "120 of 240 images (train+val 60, eval 60; at most 20 per split and label)" \
            in text
        assert md.read_text().count("\n| ") == 1 + len(BUILTIN_FAMILIES)

        as_json = CliRunner().invoke(probe_cmd, ["planted", "--json", "--no-progress",
                                                 "--max-per-class", "20"])
        assert as_json.exit_code == 0, as_json.output
        data = json.loads(as_json.output)
        assert [f["family"] for f in data["families"]] == [s.name for s in BUILTIN_FAMILIES]
        assert data["stored_at"].endswith(f"{data['manifest_sha256']}.json")


# ----------------------------------------------------------------------------- face found


def grace_hopper() -> Path | None:
    """A real face photograph that ships inside matplotlib (512x600)."""
    import matplotlib

    p = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    return p if p.is_file() else None


def test_face_found_comes_from_the_landmarks_plugin_not_the_core():
    assert get_registry().provider("probe feature", "face-found") == "landmarks"
    spec = get_registry().get("probe feature", "face-found")
    assert not spec.spectral
    assert "face-found" in get_registry().plugins()[
        [p.name for p in get_registry().plugins()].index("landmarks")].probe_features
    _without_landmarks()
    assert "face-found" not in [s.name for s, _ in feature_families()]


@pytest.fixture
def faces(tmp_path):
    photo = grace_hopper()
    if photo is None:
        pytest.skip("matplotlib's sample photograph is not installed")
    (tmp_path / "hopper.jpg").write_bytes(photo.read_bytes())
    cv2.imwrite(str(tmp_path / "gray.png"), np.full((128, 128, 3), 128, np.uint8))
    rows = [{"path": "hopper.jpg", "label": 0, "source": "s", "group": "a", "split": "train"},
            {"path": "gray.png", "label": 1, "source": "s", "group": "b", "split": "eval"}]
    return fbench.make_manifest(rows, root=tmp_path, name="faces")


def _face_found(manifest) -> tuple[list[float], str]:
    from fbench.data.images import read_image
    from fbench.data.manifest import resolve_path

    extract = get_registry().get("probe feature", "face-found").factory(manifest)
    try:
        values = []
        for row, rel in manifest["path"].items():
            path = resolve_path(manifest, rel)
            values += extract(row, read_image(path), path)
    finally:
        extract.close()
    return values, extract.note


def test_face_found_on_the_fly_sees_the_photograph_and_not_the_flat_image(faces):
    values, note = _face_found(faces)
    assert values == [1.0, 0.0]
    assert "on the fly" in note and "fbench data landmarks" in note


def test_face_found_reads_the_landmark_cache_when_there_is_one(faces):
    # deliberately the opposite of what mediapipe finds: the probe must report what the
    # detector's runs read, and the cache is what they read
    fbench.write_landmark_cache(faces, np.zeros((2, 3, 2), np.float32),
                                np.array([False, True]), {"producer": "test"})
    values, note = _face_found(faces)
    assert values == [0.0, 1.0] and "landmark cache" in note
