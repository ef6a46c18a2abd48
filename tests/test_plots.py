"""`fbench plot ...`: each picture is a non-empty PNG of the size its function promises, and
Grad-CAM explains the class it is asked about."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner
from tiny import tiny_cnn

import fbench
from fbench.cli import cli
from fbench.plugins.registry import registered
from fbench.report import plots

# Tiny runs on 36 images collapse often; the warning is expected, not what is tested here.
pytestmark = pytest.mark.filterwarnings("ignore:run .* collapsed:UserWarning")

DATASET_OPTIONS = {"n_per_class": 12, "image_size": 32}


def _tiny(num_classes: int = 3, width: int = 4):
    return tiny_cnn(num_classes, width, depth=2)


class Tiny:
    @fbench.hookimpl
    def register_detectors(self, register):
        register(fbench.DetectorSpec(name="plot-tiny", summary="t", factory=_tiny,
                                     input_size=32))


@pytest.fixture(scope="module")
def trained(tmp_path_factory, module_env):
    """Two tiny runs (two seeds) and the image files of their dataset."""
    from fbench.data.manifest import resolve_path

    out = tmp_path_factory.mktemp("runs")
    with registered(Tiny(), name="tiny"):
        runs = [fbench.run(detector="plot-tiny", dataset="synthetic", epochs=2, seed=seed,
                           out=str(out), dataset_options=DATASET_OPTIONS) for seed in (0, 1)]
    manifest = fbench.load_dataset("synthetic", **DATASET_OPTIONS)
    images = [resolve_path(manifest, manifest[manifest["label"] == c]["path"].iloc[0])
              for c in (0, 1, 2)]
    return runs, images, manifest


def _pixels(path, width_in: float, height_in: float, dpi: int = plots.DEFAULT_DPI) -> None:
    import matplotlib.image as mpimg

    assert path.is_file() and path.stat().st_size > 0
    img = mpimg.imread(path)
    assert img.shape[:2] == (round(height_in * dpi), round(width_in * dpi))
    assert img.std() > 0  # something was drawn


def test_confusion_recomputed_from_predictions(trained, tmp_path):
    run = trained[0][0]
    cm = plots.confusion_counts(run)
    assert cm.shape == (3, 3) and cm.sum() == (run.predictions["split"] == "eval").sum()
    assert cm.tolist() == run.summary["eval"]["confusion_matrix"]
    out = plots.plot_confusion(run, tmp_path / "cm.png")
    _pixels(out, *plots.CONFUSION_SIZE)
    res = CliRunner().invoke(cli, ["plot", "confusion", str(run.path), "-o",
                                   str(tmp_path / "cli.png")])
    assert res.exit_code == 0, res.output
    _pixels(tmp_path / "cli.png", *plots.CONFUSION_SIZE)


def test_curves_of_two_runs(trained, tmp_path):
    runs = trained[0]
    assert plots.selected_epoch(runs[0]) == runs[0].summary["selected_epoch"]
    res = CliRunner().invoke(cli, ["plot", "curves", *(str(r.path) for r in runs), "-o",
                                   str(tmp_path / "curves.png")])
    assert res.exit_code == 0, res.output
    _pixels(tmp_path / "curves.png", *plots.CURVES_SIZE)


def test_spectrum_per_class_and_source(trained, tmp_path):
    manifest = trained[2]
    spectra = plots.average_spectra(manifest, "class", size=16, max_images=4)
    assert list(spectra) == ["real", "generated", "edited"]
    dct, dft, n = spectra["real"]
    assert dct.shape == dft.shape == (16, 16) and n == 4 and np.isfinite(dct).all()
    out = plots.plot_spectrum(manifest, tmp_path / "s.png", per="class", size=16, max_images=4)
    _pixels(out, 2 * plots.SPECTRUM_COLUMN_WIDTH,
            3 * plots.SPECTRUM_ROW_HEIGHT + plots.SPECTRUM_HEADER)
    n_sources = manifest["source"].nunique()
    res = CliRunner().invoke(cli, [
        "plot", "spectrum", "synthetic", "--per", "source", "--max-images", "3", "--size", "16",
        "--dataset-option", "n_per_class=12", "--dataset-option", "image_size=32",
        "-o", str(tmp_path / "src.png")])
    assert res.exit_code == 0, res.output
    _pixels(tmp_path / "src.png", 2 * plots.SPECTRUM_COLUMN_WIDTH,
            n_sources * plots.SPECTRUM_ROW_HEIGHT + plots.SPECTRUM_HEADER)


def test_gradcam_depends_on_target_class(trained, tmp_path):
    from fbench.data.images import read_image

    run, images = trained[0][0], trained[1]
    with registered(Tiny(), name="tiny"):
        from fbench.use.model import load_trained

        model, transform, _ = load_trained(run)
        rgb = np.stack([read_image(p, 32) for p in images])
        cams = {}
        for c in (0, 1, 2):
            cams[c], probs, layer = plots.gradcam_maps(model, transform, rgb, target_class=c)
            assert cams[c].shape == (3, 32, 32)
            assert cams[c].min() >= 0 and cams[c].max() <= 1 + 1e-6
        assert layer == "model.2"  # the last Conv2d, inside the classifier wrapper
        np.testing.assert_allclose(probs.sum(1), 1, atol=1e-5)
        assert any(not np.allclose(cams[a], cams[b]) for a, b in ((0, 1), (0, 2), (1, 2)))

        res = CliRunner().invoke(cli, ["plot", "gradcam", str(run.path), *images[:2],
                                       "--layer", "model.0", "-o", str(tmp_path / "g.png")])
        assert res.exit_code == 0, res.output
        _pixels(tmp_path / "g.png", 2 * plots.GRADCAM_COLUMN_WIDTH, 2 * plots.GRADCAM_ROW_HEIGHT)

        bad = CliRunner().invoke(cli, ["plot", "gradcam", str(run.path), images[0],
                                       "--layer", "model.22"])
        assert bad.exit_code != 0 and "model.2" in bad.output
