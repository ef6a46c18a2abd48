"""The landmarks plugin: the two-stream detector (every fusion training its landmark side, the
shapes at 64 and 224 px being the contract test's; the landmark stream really used, the mask
head and its losses), heatmap rendering on known points, the `fbench data landmarks` command
with the real mediapipe face mesh on a real photograph and a blank image, `fbench run` refusing
without landmarks, and a short training on the synthetic dataset, preparation included."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner

import fbench
from fbench import Batch, FbenchError
from fbench.cli import cli
from fbench.plugins.registry import registered
from fbench_landmarks.commands import add_commands, parse_options
from fbench_landmarks.heatmaps import REGIONS, group_matrix, render_heatmaps
from fbench_landmarks.mesh import FaceMesh, prepare_landmarks

NAME = "two-stream-landmark"
FUSIONS = ("early", "mid", "late")


def _text(result) -> str:
    """The command's output with rich's line wrapping undone."""
    return " ".join(result.output.split())


def make_batch(size: int, n: int = 2, seed: int = 0, k: int = 468) -> Batch:
    g = torch.Generator().manual_seed(seed)
    # points spread over the middle of the image, like a face
    points = 0.3 + 0.4 * torch.rand(n, k, 2, generator=g)
    return Batch(images=torch.randn(n, 3, size, size, generator=g),
                 labels=torch.arange(n) % 3,
                 masks=(torch.rand(n, 1, size, size, generator=g) > 0.5).float(),
                 has_mask=torch.ones(n, dtype=torch.bool),
                 landmarks=points, landmarks_found=torch.ones(n, dtype=torch.bool))


@pytest.fixture
def runner() -> CliRunner:
    add_commands(cli)  # what `fbench` does at start through the register_commands hook
    return CliRunner()


def grace_hopper() -> Path | None:
    """A real face photograph that ships inside matplotlib (512x600)."""
    import matplotlib

    p = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    return p if p.is_file() else None


# ----------------------------------------------------------------------------- registration


def test_registration():
    from fbench.plugins.registry import get_registry

    spec = get_registry().get("detector", NAME)
    assert spec.needs_landmarks and not spec.needs_masks
    assert spec.transform == "raw" and spec.family == "landmarks"
    assert get_registry().provider("detector", NAME) == "landmarks"


# ---------------------------------------------------------------------------------- model


@pytest.mark.parametrize("fusion", FUSIONS)
def test_every_fusion_trains_its_landmark_side(fusion):
    # The default fusion's shapes and back-propagation at 64 and 224 px are the contract
    # test's; here every fusion, at a CPU-sized input.
    torch.manual_seed(0)
    model = fbench.create_detector(NAME, fusion=fusion)
    batch = make_batch(32)
    out = model(batch)
    assert out.logits.shape == (2, 3) and out.mask is None
    losses = model.loss(out, batch)
    assert set(losses) == {"ce"} and all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert model.fc.weight.grad is not None
    # the landmark side learns too: for mid first the scale that lets it in (from 0)
    if fusion == "early":  # the stem's heatmap input channels
        grad = next(p for p in model.backbone.parameters() if p.ndim == 4).grad[:, 3:]
    elif fusion == "mid":
        grad = model.project[1].weight.grad
    else:
        grad = model.landmarks.layers[0][0].weight.grad
    assert grad is not None and float(grad.abs().sum()) > 0


@pytest.mark.parametrize("fusion", FUSIONS)
def test_the_landmarks_change_the_output_and_rows_without_a_face_ignore_them(fusion):
    torch.manual_seed(0)
    # training mode (batch statistics, as when it learns), no dropout: deterministic
    model = fbench.create_detector(NAME, fusion=fusion, dropout=0.0).train()
    if model.project is not None:  # mid starts with the landmark features scaled to 0
        torch.nn.init.ones_(model.project[1].weight)
    batch = make_batch(48, n=2)
    with torch.no_grad():
        base = model(batch).logits
        moved = make_batch(48, n=2)
        moved.landmarks = batch.landmarks * 0.5  # a smaller face, in the top-left corner
        assert (model(moved).logits - base).abs().max() > 1e-3
        # no face in row 1: its points are not drawn, wherever they are
        batch.landmarks_found = torch.tensor([True, False])
        moved.landmarks_found = batch.landmarks_found
        moved.landmarks = batch.landmarks.clone()
        moved.landmarks[1] = 0.9
        assert torch.allclose(model(moved).logits, model(batch).logits, atol=1e-6)
        # without the flag, the cache's convention holds: all-zero points are no face
        moved.landmarks[1] = 0.0
        moved.landmarks_found = None
        assert torch.allclose(model(moved).logits, model(batch).logits, atol=1e-6)


def test_mid_fusion_starts_as_the_rgb_network_and_learns_to_use_the_landmarks():
    torch.manual_seed(0)
    model = fbench.create_detector(NAME, fusion="mid", dropout=0.0).train()
    scale = model.project[1].weight
    assert not scale.any()
    batch = make_batch(48, n=4)
    with torch.no_grad():
        base = model(batch).logits
        moved = make_batch(48, n=4)
        moved.landmarks = batch.landmarks * 0.5
        assert torch.allclose(model(moved).logits, base)  # landmarks not in yet...
    out = model(batch)
    model.loss(out, batch)["ce"].backward()
    assert float(scale.grad.abs().sum()) > 0  # ...but the scale that lets them in learns
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    with torch.no_grad():
        assert not torch.allclose(model(moved).logits, model(batch).logits)


def test_mid_fusion_with_another_backbone_family():
    # timm's MobileNetV3 feature extractor is not a FeatureListNet: the other lookup path
    model = fbench.create_detector(NAME, backbone="mobilenetv3_small_050", fusion="mid",
                                   heatmap="points", dropout=0.0).train()
    torch.nn.init.ones_(model.project[1].weight)
    batch = make_batch(64)
    with torch.no_grad():
        base = model(batch).logits
        batch.landmarks = batch.landmarks * 0.5
        assert base.shape == (2, 3) and (model(batch).logits - base).abs().max() > 1e-3


def test_mask_head_outputs_a_mask_and_trains_with_bce_and_dice():
    torch.manual_seed(0)
    model = fbench.create_detector(NAME, mask_head=True, dice_weight=0.5)
    for size in (32, 64, 224):
        batch = make_batch(size)
        out = model(batch)
        assert out.mask is not None and out.mask.shape == (2, 1, size, size)
        mask = out.mask.detach()
        assert float(mask.min()) >= 0.0 and float(mask.max()) <= 1.0
        losses = model.loss(out, batch)
        assert set(losses) == {"ce", "bce", "dice"}
        assert all(torch.isfinite(v) for v in losses.values())
        sum(losses.values()).backward()
        assert model.decoder.head[-1].weight.grad is not None
    batch = make_batch(32)
    batch.masks = batch.has_mask = None
    with pytest.raises(FbenchError, match="mask_head=true needs forgery masks"):
        model.loss(model(batch), batch)


def test_options_and_missing_landmarks_are_refused_clearly():
    with pytest.raises(FbenchError, match="unknown fusion"):
        fbench.create_detector(NAME, fusion="middle")
    with pytest.raises(FbenchError, match="unknown heatmap"):
        fbench.create_detector(NAME, heatmap="mesh")
    with pytest.raises(FbenchError, match="sigma"):
        fbench.create_detector(NAME, sigma=2)
    with pytest.raises(FbenchError, match="backbone 'no-such-net'"):
        fbench.create_detector(NAME, backbone="no-such-net")
    with pytest.raises(FbenchError, match="takes no option"):
        fbench.create_detector(NAME, depth="full")
    model = fbench.create_detector(NAME, fusion="late").eval()
    batch = make_batch(32)
    batch.landmarks = None
    with pytest.raises(FbenchError, match="fbench data landmarks"):
        model(batch)
    # the region channels are mediapipe's 468-point mesh; other landmark sets use points
    with pytest.raises(FbenchError, match="heatmap=points"):
        model(make_batch(32, k=68))
    points = fbench.create_detector(NAME, heatmap="points").eval()
    with torch.no_grad():
        assert points(make_batch(32, k=68)).logits.shape == (2, 3)


# ------------------------------------------------------------------------------ heatmaps


def test_a_point_renders_as_a_gaussian_centred_on_its_pixel():
    # x = 4.5 / 16 is the centre of column 4, y = 10.5 / 16 of row 10
    points = torch.tensor([[[4.5 / 16, 10.5 / 16]]])
    heat = render_heatmaps(points, group_matrix("points"), (16, 16), sigma=1.0)
    assert heat.shape == (1, 1, 16, 16)
    h = heat[0, 0]
    assert torch.argmax(h).item() == 10 * 16 + 4 and math.isclose(h[10, 4].item(), 1.0)
    assert math.isclose(h[10, 5].item(), math.exp(-0.5), rel_tol=1e-5)
    assert math.isclose(h[8, 4].item(), math.exp(-2.0), rel_tol=1e-5)
    assert torch.allclose(h[10, 3], h[10, 5]) and float(h[0, 15]) < 1e-20
    # a non-square map follows width and height separately
    centre = torch.tensor([[[9.5 / 32, 5.5 / 8]]])  # column 9 of 32, row 5 of 8
    wide = render_heatmaps(centre, group_matrix("points"), (8, 32), sigma=1.0)[0, 0]
    assert torch.argmax(wide).item() == 5 * 32 + 9 and math.isclose(wide[5, 9].item(), 1.0)
    # overlapping points sum and clip at 1; a row without a face is empty
    two = torch.tensor([[[0.5, 0.5], [0.5, 0.5]], [[0.5, 0.5], [0.5, 0.5]]])
    heat = render_heatmaps(two, group_matrix("points"), (8, 8), 2.0,
                           found=torch.tensor([True, False]))
    assert float(heat[0].max()) == 1.0 and float(heat[1].abs().sum()) == 0.0


def test_region_channels_draw_only_their_points():
    groups = group_matrix("regions")
    assert groups.shape == (len(REGIONS), 468)
    assert groups[REGIONS.index("mesh")].sum() == 468
    lips = REGIONS.index("lips")
    lip_point = int(torch.nonzero(groups[lips])[0])
    points = torch.full((1, 468, 2), -10.0)  # every point far off the image...
    points[0, lip_point] = 0.5               # ...but one lip point in the middle
    heat = render_heatmaps(points, groups, (32, 32), sigma=1.5)
    lit = [REGIONS[c] for c in range(len(REGIONS)) if float(heat[0, c].max()) > 0.5]
    assert sorted(lit) == ["lips", "mesh"]


# ---------------------------------------------------------------- preparation (mediapipe)


def test_parse_options_reads_values_as_fbench_run_does():
    assert parse_options(("n_per_class=20", "eval-fraction=0.25", "name=x")) == {
        "n_per_class": 20, "eval_fraction": 0.25, "name": "x"}
    with pytest.raises(FbenchError, match="KEY=VALUE"):
        parse_options(("n_per_class",))


def _faces_plugin(rows, root):
    class Faces:
        @fbench.hookimpl
        def register_datasets(self, register):
            register(fbench.DatasetSpec(
                name="faces", summary="f", needs_root=False,
                factory=lambda root_=None: fbench.make_manifest(rows, root=root,
                                                               name="faces")))

    return Faces()


def test_real_face_mesh_finds_468_points_and_a_blank_image_none(tmp_path, runner):
    photo = grace_hopper()
    if photo is None:
        pytest.skip("matplotlib's sample photograph is not installed")
    cv2.imwrite(str(tmp_path / "blank.png"), np.full((128, 128, 3), 128, np.uint8))
    (tmp_path / "hopper.jpg").write_bytes(photo.read_bytes())
    rows = [{"path": "hopper.jpg", "label": 0, "source": "s", "group": "a", "split": "train"},
            {"path": "blank.png", "label": 1, "source": "s", "group": "b", "split": "eval"}]
    with registered(_faces_plugin(rows, tmp_path), name="faces"):
        result = runner.invoke(cli, ["data", "landmarks", "faces", "--no-progress"])
        assert result.exit_code == 0, result.output
        text = _text(result)
        assert "landmarks of 2 images" in text
        assert "1 of 2 image(s) without a detectable face (eval 1)" in text
        assert "blank.png" in text

        manifest = fbench.load_dataset("faces")
        cached = fbench.load_landmarks(manifest)
        assert cached.found.tolist() == [True, False]
        assert cached.points.shape == (2, 468, 2)
        face = cached.points[0]
        # the face is in the middle of the upper half of the portrait
        assert 0.2 < face[:, 0].min() and face[:, 0].max() < 0.8
        assert 0.1 < face[:, 1].min() and face[:, 1].max() < 0.7
        assert not cached.points[1].any()
        assert cached.meta["producer"] == "mediapipe face_mesh" and cached.meta["no_face"] == 1

        again = runner.invoke(cli, ["data", "landmarks", "faces", "--no-progress"])
        assert again.exit_code == 0 and "is up to date" in _text(again)


def test_face_mesh_points_are_normalised_image_coordinates():
    photo = grace_hopper()
    if photo is None:
        pytest.skip("matplotlib's sample photograph is not installed")
    rgb = cv2.cvtColor(cv2.imread(str(photo)), cv2.COLOR_BGR2RGB)
    mesh = FaceMesh()
    try:
        full = mesh(rgb)
        # the face moved 100 px right on a wider canvas: x follows in canvas units
        canvas = np.zeros((rgb.shape[0], rgb.shape[1] + 200, 3), np.uint8)
        canvas[:, 100:100 + rgb.shape[1]] = rgb
        shifted = mesh(canvas)
    finally:
        mesh.close()
    assert full.shape == shifted.shape == (468, 2)
    w = rgb.shape[1]
    expected_x = (full[:, 0] * w + 100) / (w + 200)
    assert np.abs(shifted[:, 0] - expected_x).mean() < 0.01
    assert np.abs(shifted[:, 1] - full[:, 1]).mean() < 0.01


class _StubMesh:
    """Stands in for mediapipe where only the bookkeeping is under test: a face wherever the
    image is bright."""

    def __call__(self, rgb):
        return np.full((468, 2), 0.5, np.float32) if rgb.mean() > 100 else None

    def close(self):
        pass


def test_a_stale_cache_is_replaced_by_the_preparation(tmp_path):
    for name, value in (("a.png", 200), ("b.png", 20), ("c.png", 200)):
        cv2.imwrite(str(tmp_path / name), np.full((16, 16, 3), value, np.uint8))
    rows = [{"path": p, "label": i % 3, "source": "s", "group": p,
             "split": "eval" if p == "c.png" else "train"}
            for i, p in enumerate(("a.png", "b.png", "c.png"))]
    with registered(_faces_plugin(rows, tmp_path), name="faces"):
        first = prepare_landmarks("faces", mesher=_StubMesh(), progress=False)
        assert (first["images"], first["found"], first["no_face"]) == (3, 2, 1)
        cv2.imwrite(str(tmp_path / "b.png"), np.full((24, 24, 3), 220, np.uint8))
        second = prepare_landmarks("faces", mesher=_StubMesh(), progress=False)
        assert "stale" in second["replaced"] and second["no_face"] == 0
        assert fbench.load_landmarks(fbench.load_dataset("faces")).found.all()
        third = prepare_landmarks("faces", mesher=_StubMesh(), progress=False)
        assert third["up_to_date"]


# ------------------------------------------------------------------------------------ runs


def test_run_without_landmarks_is_refused_with_the_command(tmp_path, runner):
    result = runner.invoke(cli, ["run", "--detector", NAME, "--dataset", "synthetic",
                                 "--dataset-option", "n_per_class=4", "--epochs", "1",
                                 "--out", str(tmp_path), "--no-progress"])
    assert result.exit_code != 0 and "Traceback" not in result.output
    text = _text(result)
    assert f"detector '{NAME}' needs facial landmarks" in text
    assert "fbench data landmarks synthetic --dataset-option n_per_class=4" in text
    assert not any(tmp_path.iterdir())  # refused before a run directory was made


@pytest.mark.filterwarnings("ignore:run .* collapsed")  # one tiny epoch: no score expected
def test_a_run_records_how_many_images_had_no_face(tmp_path):
    options = {"n_per_class": 8, "image_size": 64}
    prep = prepare_landmarks("synthetic", options=options, progress=False)  # real face mesh
    assert prep["images"] == 24 and prep["found"] + prep["no_face"] == 24
    run = fbench.run(detector=NAME, dataset="synthetic", epochs=1, batch_size=8,
                     input_size=32, seed=0, out=str(tmp_path), dataset_options=options,
                     options={"mask_head": True})
    assert run.status["state"] == "completed"
    assert {"train_ce", "train_bce", "train_dice"} <= set(run.epochs.columns)
    assert "dice" in run.predictions.columns  # the mask head is scored
    # the run records the cache's coverage, in its config and (by the hook) its summary
    recorded = run.config["landmarks"]
    assert recorded["cache"] == prep["cache"] and recorded["no_face"] == prep["no_face"]
    assert recorded["no_face_by_split"]["eval"] == prep["no_face_by_split"]["eval"]
    assert sum(recorded["no_face_by_split"].values()) == prep["no_face"]
    assert json.loads((run.path / "summary.json").read_text())["landmarks"] == recorded
    assert run.summary["landmarks"] == recorded


@pytest.mark.slow
def test_short_training_on_synthetic_beats_chance(tmp_path):
    """Preparation (the real face mesh) and training together: about 50 s on two cores.
    mediapipe finds a face in 432 of the 600 procedural faces here, about as often in every
    class (synthetic-v2). ResNet18 from scratch needs ~80 steps before its batch-norm
    statistics carry over to eval mode."""
    options = {"n_per_class": 200, "image_size": 64}
    start = time.perf_counter()
    prep = prepare_landmarks("synthetic", options=options, progress=False)
    # synthetic-v2 took away the cue this detector leaned on (a face was found in 72 % of real
    # but ~30 % of forged v1 images): it now learns little in this budget. lr 3e-4: val
    # macro-F1 0.26, 0.41, 0.46 and eval 0.385 (lr 1e-3 stayed at chance, 0.33)
    # the conditions this threshold was measured under: a constant rate over 3 whole epochs
    # (the convergence defaults, a cosine decay and precise BN, move it below the bar)
    run = fbench.run(detector=NAME, dataset="synthetic", epochs=3, batch_size=16, lr=3e-4,
                     seed=0, out=str(tmp_path), dataset_options=options, schedule="constant",
                     patience=0, collapse_epochs=0, precise_bn=0)
    seconds = time.perf_counter() - start
    print(f"\nsynthetic: a face in {prep['found']} of {prep['images']} images; "
          f"eval macro-F1 {run.summary['eval']['macro_f1']:.3f}; {seconds:.1f} s")
    assert 0 < prep["found"] < prep["images"] == 600
    assert run.summary["eval"]["macro_f1"] > 0.36  # chance: 1/3; this run: ~0.385
    assert not run.summary["eval"]["collapsed"]
    assert run.epochs["train_loss"].iloc[-1] < run.epochs["train_loss"].iloc[0]
    assert run.summary["landmarks"]["no_face"] == prep["no_face"]
