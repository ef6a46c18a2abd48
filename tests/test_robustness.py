"""`fbench robustness`: a stored run re-evaluated on its eval split under perturbations; every
prediction stored, the table recomputable from them, a plot written, several runs in one plot,
and strong JPEG compression survived by every detector shipped."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from tiny import tiny_plugin

import fbench
from fbench import FbenchError
from fbench.cli import cli
from fbench.metrics import PROB_COLUMNS
from fbench.plugins.registry import registered
from fbench.use.robustness import (
    CLEAN,
    PerturbedCollate,
    parse_perturbation,
    robustness,
    robustness_table,
)

pytestmark = pytest.mark.filterwarnings("ignore:run .* collapsed:UserWarning")

DATASET_OPTIONS = {"n_per_class": 30, "image_size": 32}




@pytest.fixture(scope="module")
def runs(tmp_path_factory, module_env):
    """Two tiny stored runs: resnet18 and a two-layer CNN (registered by the tests that
    use it)."""
    out = tmp_path_factory.mktemp("runs")
    settings = {"dataset": "synthetic", "epochs": 1, "input_size": 32, "batch_size": 32,
                "dataset_options": DATASET_OPTIONS, "out": str(out)}
    with registered(tiny_plugin("robust-tiny", depth=2), name="tiny"):
        return [fbench.run(detector="resnet18", **settings),
                fbench.run(detector="robust-tiny", **settings)]


def test_parse_perturbation_sets_the_level_option():
    p = parse_perturbation("jpeg:95,75,50")
    assert (p.name, p.option, p.levels) == ("jpeg", "quality", (95, 75, 50))
    p = parse_perturbation("blur:sigma=0.5, 2")
    assert (p.option, p.levels) == ("sigma", (0.5, 2))
    assert parse_perturbation("noise:0.1").build(0.1, seed=3).seed == 3


@pytest.mark.parametrize(("text", "expected"), [
    ("jpeg", "NAME:LEVEL"), ("jpeg:", "NAME:LEVEL"), ("jpg:90", "did you mean 'jpeg'"),
    ("jpeg:size=3", "takes no option 'size'"), ("blur:1,1", "repeats a level")])
def test_parse_perturbation_refuses_mistakes(text, expected):
    with pytest.raises(FbenchError) as err:
        parse_perturbation(text)
    assert expected in err.value.format_message()


def test_writes_predictions_table_and_plot(runs, tmp_path):
    run = runs[0]
    out = tmp_path / "rob"
    robustness([run.path], ["jpeg:90,30", "blur:1", "noise:0.1", "crop:0.75"], out,
                        seed=0)
    for name in ("predictions.parquet", "robustness.csv", "robustness.md", "robustness.json"):
        assert (out / name).is_file()
    png = out / "robustness.png"
    assert png.is_file() and png.stat().st_size > 0
    import matplotlib.image as mpimg

    assert mpimg.imread(png).std() > 0

    preds = pd.read_parquet(out / "predictions.parquet")
    n_eval = int((run.predictions["split"] == "eval").sum())
    assert len(preds) == n_eval * (1 + 2 + 1 + 1 + 1)
    table = pd.read_csv(out / "robustness.csv")
    assert list(table["perturbation"]) == [CLEAN, "jpeg", "jpeg", "blur", "noise", "crop"]
    assert list(table["level"].iloc[1:]) == [90, 30, 1, 0.1, 0.75]
    for col in ("macro_f1", "f1_real", "f1_generated", "f1_edited", "binary_auc"):
        assert table[col].between(0, 1).all()
    # every number is recomputable from the stored predictions
    again = robustness_table(preds)
    np.testing.assert_allclose(again["macro_f1"], table["macro_f1"])
    # the clean rows are the run's own stored eval predictions
    clean = preds[preds["perturbation"] == CLEAN].set_index("path")
    stored = run.predictions[run.predictions["split"] == "eval"].set_index("path")
    np.testing.assert_allclose(clean.loc[stored.index, list(PROB_COLUMNS)].to_numpy(),
                               stored[list(PROB_COLUMNS)].to_numpy(), atol=1e-5)
    assert table["macro_f1"].iloc[0] == pytest.approx(run.metrics("eval")["macro_f1"])
    record = json.loads((out / "robustness.json").read_text())
    assert record["clean_matches_stored"] == {run.id: True}
    assert record["perturbations"][0] == {"name": "jpeg", "option": "quality",
                                          "levels": [90, 30]}
    # a strong perturbation changes what the model sees: some probability moves
    jpeg30 = preds[(preds["perturbation"] == "jpeg") & (preds["level"] == 30)].set_index("path")
    assert np.abs(jpeg30.loc[stored.index, "prob_real"].to_numpy()
                  - stored["prob_real"].to_numpy()).max() > 1e-4


def test_seeded_noise_gives_the_same_predictions_twice(runs, tmp_path):
    with registered(tiny_plugin("robust-tiny", depth=2), name="tiny"):
        a, b, c = (pd.read_parquet(robustness([runs[1]], ["noise:0.2"], tmp_path / str(seed),
                                              seed=seed)["predictions"])
                   for seed in (5, 5, 6))
    pd.testing.assert_frame_equal(a, b)
    noisy = a["perturbation"] == "noise"
    assert not np.allclose(a.loc[noisy, "prob_real"], c.loc[noisy, "prob_real"])


def test_cli_compares_several_runs_in_one_plot(runs, tmp_path):
    out = tmp_path / "cmp"
    with registered(tiny_plugin("robust-tiny", depth=2), name="tiny"):
        res = CliRunner().invoke(cli, ["robustness", str(runs[0].path), str(runs[1].path),
                                       "--perturb", "jpeg:80,20", "-p", "resize:0.5", "-o",
                                       str(out), "--no-progress"], env={"COLUMNS": "120"})
    assert res.exit_code == 0, res.output
    assert "macro-F1" in res.output and "jpeg quality" in res.output
    assert "robust-tiny" in res.output
    table = pd.read_csv(out / "robustness.csv")
    assert set(table["run"]) == {runs[0].id, runs[1].id} and len(table) == 2 * 4
    assert (out / "robustness.png").stat().st_size > 0
    md = (out / "robustness.md").read_text()
    assert md.startswith("<!-- generated by: fbench robustness ") and "--perturb jpeg:80,20" in md
    res = CliRunner().invoke(cli, ["robustness", str(runs[0].path), "-p", "jpeg:0",
                                   "-o", str(tmp_path / "bad")])
    assert res.exit_code != 0 and "quality=0" in res.output


def test_perturbed_collate_quantises_and_moves_masks_with_a_crop():
    samples = [{"image": torch.full((3, 16, 16), 100, dtype=torch.uint8), "label": 2,
                "index": 0, "mask": torch.zeros(1, 16, 16), "has_mask": True}]
    samples[0]["mask"][:, 4:12, 4:12] = 1
    batch = PerturbedCollate(fbench.create_transform("crop", fraction=0.5))(samples)
    assert batch.images.dtype == torch.uint8 and batch.masks.shape == (1, 1, 16, 16)
    assert float(batch.masks.mean()) == 1.0  # the centre square fills the zoomed view
    noisy = PerturbedCollate(fbench.create_transform("noise", sigma=0.1))(samples)
    assert noisy.images.dtype == torch.uint8 and not torch.equal(noisy.images,
                                                                 samples[0]["image"][None])


# -- every shipped detector survives strong JPEG compression ----------------------------------

SIZE = 64


def _shipped_detectors() -> list[str]:
    from fbench.plugins.registry import reset_registry

    reset_registry()
    try:
        return fbench.list_detectors()
    finally:
        reset_registry()


@pytest.mark.parametrize("name", _shipped_detectors())
def test_jpeg_quality_10_does_not_crash_any_detector(name):
    """Build the detector small (no training), feed a JPEG q=10 batch through the same
    collate -> transform -> model path as a robustness evaluation."""
    from fbench.plugins.registry import get_registry
    from fbench.plugins.specs import factory_options
    from fbench.train.engine import predict, prepare_batch

    spec = get_registry().get("detector", name)
    options = {"input_size": SIZE} if "input_size" in factory_options(spec.factory) else {}
    torch.manual_seed(0)
    from fbench.plugins.detector import as_detector

    model = as_detector(fbench.create_detector(name, **options)).eval()
    transform = fbench.create_transform(spec.transform)
    g = torch.Generator().manual_seed(0)
    samples = []
    for i in range(2):
        s = {"image": torch.randint(0, 256, (3, SIZE, SIZE), dtype=torch.uint8, generator=g),
             "label": i, "index": i, "mask": torch.zeros(1, SIZE, SIZE), "has_mask": True}
        if spec.needs_landmarks:
            s["landmarks"] = torch.rand(468, 2, generator=g)
            s["landmarks_found"] = True
        samples.append(s)
    batch = PerturbedCollate(fbench.create_transform("jpeg", quality=10))(samples)
    if get_registry().get("transform", spec.transform).fit_on_train:
        transform.fit(iter([prepare_batch(batch, torch.nn.Identity(), torch.device("cpu"))
                            .images]))
    result = predict(model, transform, [batch], torch.device("cpu"))
    probs = result["probs"]
    assert probs.shape == (2, 3) and np.isfinite(probs).all()
    np.testing.assert_allclose(probs.sum(1), 1, atol=1e-5)
