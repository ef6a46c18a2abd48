"""What a run records so its numbers can be believed and kept apart: the resampler (antialiased
bilinear by default), TF32 (off unless asked), the protocol, every detector option as used,
the last epoch beside the selected one, parameters at 224 px, and one definition of "the same
configuration" for leaderboards, ablations and seed averaging."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from tiny import tiny_cnn

import fbench
from fbench.cli import cli
from fbench.data.images import read_image, resize_square
from fbench.plugins.registry import registered
from fbench.report.leaderboard import completed_runs, leaderboard, render
from fbench.report.tables import configuration_key, run_identity

SMALL = {"n_per_class": 12, "image_size": 32}


class SizedNet(torch.nn.Module):
    """A classifier whose parameter count depends on its input size (like a FAD head)."""

    def __init__(self, num_classes: int = 3, input_size: int = 32) -> None:
        super().__init__()
        self.filter = torch.nn.Parameter(torch.zeros(input_size, input_size))
        self.body = tiny_cnn(num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x + self.filter)


class Plugin:
    @fbench.hookimpl
    def register_detectors(self, register):
        register(fbench.DetectorSpec(
            name="rec-tiny", summary="t", input_size=32,
            factory=lambda num_classes=3, width=4: tiny_cnn(num_classes, width),
            protocols={"paper": {"lr": 0.05, "epochs": 2, "weight_decay": 0.0,
                                 "options": {"width": 6}}}))
        register(fbench.DetectorSpec(name="rec-sized", summary="t", input_size=32,
                                     factory=SizedNet))


@pytest.fixture(scope="module")
def runs(tmp_path_factory, module_env):
    out = tmp_path_factory.mktemp("runs")
    made = {}
    with registered(Plugin(), name="rec"):
        def run(key, **kw):
            made[key] = fbench.run(dataset="synthetic", out=str(out), dataset_options=SMALL,
                                   **{"detector": "rec-tiny", "epochs": 2, "lr": 0.01, **kw})
        run("seed0", seed=0)
        run("seed1", seed=1)
        run("wd", seed=0, weight_decay=0.0)
        run("bf16", seed=0, precision="bf16")
        run("area", seed=0, resample="area")
        run("protocol", seed=0, protocol="paper", lr=None, epochs=None)
        run("sized", detector="rec-sized", epochs=1)
    return out, made


# -- resize ---------------------------------------------------------------------------------

@pytest.mark.parametrize("shape,size", [((1024, 1024), 224), ((256, 200), 64), ((64, 64), 96)])
def test_default_resize_is_antialiased_bilinear_like_torchvision(shape, size):
    from torchvision.transforms.functional import resize

    rng = np.random.default_rng(0)
    img = (rng.random((*shape, 3)) * 255).astype(np.uint8)
    ours = resize_square(img, size).astype(int)
    theirs = resize(torch.from_numpy(img).permute(2, 0, 1), [size, size], antialias=True)
    assert np.abs(ours - theirs.permute(1, 2, 0).numpy()).max() <= 1


def test_area_resampler_is_a_named_option_and_keeps_more_high_frequencies():
    # a fine checkerboard: area averaging and antialiased bilinear treat it differently
    img = np.indices((300, 300)).sum(0) % 2 * 255
    img = np.repeat(img[..., None], 3, axis=2).astype(np.uint8)
    bilinear, area = resize_square(img, 64), resize_square(img, 64, "area")
    assert bilinear.shape == area.shape == (64, 64, 3)
    assert not np.array_equal(bilinear, area)
    with pytest.raises(fbench.FbenchError, match="unknown resampler"):
        resize_square(img, 64, "lanczos")


def test_reader_resizes_with_the_asked_resampler(tmp_path):
    import cv2

    img = (np.random.default_rng(1).random((90, 90, 3)) * 255).astype(np.uint8)
    cv2.imwrite(str(tmp_path / "a.png"), img)
    assert not np.array_equal(read_image(str(tmp_path / "a.png"), 32),
                              read_image(str(tmp_path / "a.png"), 32, "area"))


# -- what a run records -----------------------------------------------------------------------

def test_run_records_resampler_tf32_protocol_and_detector_options(runs):
    _, made = runs
    cfg = made["seed0"].config
    assert cfg["resample"] == "bilinear" and cfg["tf32"] is False and cfg["protocol"] == "fbench"
    assert cfg["detector_options"] == {"width": 4}  # the factory's default, recorded
    assert made["area"].config["resample"] == "area"


def test_tf32_is_off_during_a_run_and_restored_after():
    from fbench.train.engine import tf32_mode

    torch.backends.cudnn.allow_tf32 = True
    with tf32_mode(False):
        assert not torch.backends.cudnn.allow_tf32
        assert not torch.backends.cuda.matmul.allow_tf32
    assert torch.backends.cudnn.allow_tf32
    with tf32_mode(True):
        assert torch.backends.cudnn.allow_tf32


def test_protocol_sets_the_detectors_recipe_and_the_users_flags_win(runs, module_env):
    _, made = runs
    cfg = made["protocol"].config
    assert cfg["protocol"] == "paper"
    assert (cfg["lr"], cfg["epochs"], cfg["weight_decay"]) == (0.05, 2, 0.0)
    assert cfg["detector_options"]["width"] == 6
    from fbench.train.config import RunConfig
    from fbench.train.resolve import resolve

    with registered(Plugin(), name="rec"):
        mine = resolve(RunConfig(detector="rec-tiny", protocol="paper", lr=0.3,
                                 options={"width": 2}, dataset_options=SMALL))
        assert mine.config.lr == 0.3 and mine.config.epochs == 2
        assert mine.detector_options()["width"] == 2
        with pytest.raises(fbench.FbenchError, match="declares no 'thesis' protocol"):
            resolve(RunConfig(detector="rec-tiny", protocol="thesis", dataset_options=SMALL))


def test_last_epoch_is_evaluated_and_stored_beside_the_selected_one(runs):
    _, made = runs
    run = made["seed0"]
    last = run.predictions_of("last")
    assert len(last) == len(run.predictions)
    assert run.summary["last"]["epoch"] == 2
    # every number recomputable: the stored summary equals a recomputation
    assert run.metrics("eval", "last")["macro_f1"] == pytest.approx(
        run.summary["last"]["eval"]["macro_f1"])
    if run.summary["selected_epoch"] == 2:
        pd.testing.assert_frame_equal(last, run.predictions)
    else:
        assert not np.allclose(last["prob_real"], run.predictions["prob_real"])


def test_parameters_are_counted_at_224_when_they_depend_on_the_input_size(runs):
    _, made = runs
    cfg = made["sized"].config
    assert cfg["parameters_counted_at"] == 32
    assert cfg["n_parameters_224"] - cfg["n_parameters"] == 224 * 224 - 32 * 32
    assert made["seed0"].config["parameters_counted_at"] is None


# -- one definition of "the same configuration" ----------------------------------------------

def test_configurations_differ_in_any_training_setting_and_seeds_aggregate(runs):
    _, made = runs
    keys = {k: configuration_key(r.config) for k, r in made.items()}
    assert keys["seed0"] == keys["seed1"]
    assert run_identity(made["seed0"].config) != run_identity(made["seed1"].config)
    for other in ("wd", "bf16", "area", "protocol"):
        assert keys[other] != keys["seed0"], other


def test_leaderboard_keeps_runs_with_other_settings_apart_and_shows_the_difference(runs):
    out, made = runs
    board = leaderboard(completed_runs(out))
    tiny = board[board["detector"] == "rec-tiny"]
    assert len(tiny) == 5 and sorted(tiny["seeds"]) == [1, 1, 1, 1, 2]
    text = render(board, "md", "fbench leaderboard")
    assert "| settings |" in text
    assert "resample=area" in text and "weight_decay=0.0" in text and "precision=bf16" in text
    assert "Parameters counted at 224 px" in text


def test_leaderboard_can_show_the_last_epoch(runs):
    out, _ = runs
    result = CliRunner().invoke(cli, ["leaderboard", "--runs", str(out), "--checkpoint", "last"])
    assert result.exit_code == 0, result.output
    assert "last epoch" in result.output


def test_a_changed_default_is_a_different_configuration(runs):
    """A run made when a factory default differed (only user options stored) never passes
    for one made with today's defaults."""
    _, made = runs
    cfg = dict(made["seed0"].config)
    older = {k: v for k, v in cfg.items() if k != "detector_options"}
    assert configuration_key(older) != configuration_key(cfg)


def test_groups_warning_reaches_the_run_and_the_tables(tmp_path, module_env):
    from fbench.data.manifest import make_manifest
    from fbench.report.tables import run_row

    rows = []
    rng = np.random.default_rng(0)
    import cv2

    for i in range(36):
        label = i % 3
        path = tmp_path / f"{i}.png"
        cv2.imwrite(str(path), (rng.random((16, 16, 3)) * 80 + 80 * label).astype(np.uint8))
        rows.append({"path": str(path), "label": label, "source": f"s{label}",
                     "group": f"g{i}", "split": "eval" if i >= 24 else "train"})

    def factory(root, **_):
        m = make_manifest(rows, name="inferred-ds")
        m.attrs["groups"] = {"origin": "inferred", "method": "test chains"}
        return m

    class Data:
        @fbench.hookimpl
        def register_datasets(self, register):
            register(fbench.DatasetSpec(name="inferred-ds", summary="t", factory=factory,
                                        needs_root=False))

    with registered(Plugin(), name="rec"), registered(Data(), name="data"):
        run = fbench.run(detector="rec-tiny", dataset="inferred-ds", epochs=1,
                         out=str(tmp_path / "runs"))
        assert run.config["groups"]["origin"] == "inferred"
        assert any("inferred" in w for w in run.config["warnings"])
        from fbench.report.layout import layout_markdown

        text = layout_markdown(pd.DataFrame([run_row(run)]), "cmd", by="detector")
        assert "**Warning:**" in text and "inferred" in text
