from __future__ import annotations

import pytest

import fbench
from fbench import FbenchError
from fbench.train.config import RunConfig, check_options, load_config_file, parse_assignments


def test_set_values_are_toml_literals_or_strings():
    parsed = parse_assignments(["depth=thesis", "width=8", "lr=1e-3", "flag=true",
                                "name=\"x y\"", "drop-rate=0.2"], "--set")
    assert parsed == {"depth": "thesis", "width": 8, "lr": 1e-3, "flag": True, "name": "x y",
                      "drop_rate": 0.2}
    with pytest.raises(FbenchError, match="KEY=VALUE"):
        parse_assignments(["novalue"], "--set")


def test_config_file_round_trip_and_unknown_keys(tmp_path):
    good = tmp_path / "run.toml"
    good.write_text('detector = "resnet18"\nepochs = 2\n[options]\ndrop_rate = 0.1\n')
    cfg = RunConfig.from_dict(load_config_file(good))
    assert cfg.epochs == 2 and cfg.options == {"drop_rate": 0.1}
    bad = tmp_path / "bad.toml"
    bad.write_text("epoch = 2\n")
    with pytest.raises(FbenchError, match="did you mean epochs"):
        RunConfig.from_dict(load_config_file(bad), source=str(bad))
    broken = tmp_path / "broken.toml"
    broken.write_text("epochs = = 2")
    with pytest.raises(FbenchError, match="not valid TOML"):
        load_config_file(broken)


def test_check_options_names_the_accepted_ones():
    def factory(num_classes=3, width=8, depth="full"):
        return None

    check_options("detector", "d", factory, {"width": 4}, reserved=("num_classes",))
    with pytest.raises(FbenchError) as err:
        check_options("detector", "d", factory, {"widht": 4}, reserved=("num_classes",))
    assert "width, depth" in str(err.value) and "num_classes" not in str(err.value)


@pytest.mark.parametrize("setting,value,message", [
    ("epochs", "ten", "setting epochs must be an integer, got 'ten'"),
    ("lr", "fast", "setting lr must be a number, got 'fast'"),
    ("epochs", True, "setting epochs must be an integer"),
    ("val_fraction", 1.5, r"setting val_fraction must be in \[0, 1\)"),
    ("precision", "fp16", "setting precision must be fp32 or bf16"),
    ("options", "depth=thesis", "setting options must be a table"),
])
def test_every_setting_is_checked_once_with_one_line(setting, value, message):
    from fbench.train.config import RunConfig

    with pytest.raises(fbench.FbenchError, match=message):
        RunConfig(**{setting: value})


def test_a_bad_toml_value_is_one_error_line_before_anything_runs(tmp_path):
    from click.testing import CliRunner

    from fbench.cli import cli

    (tmp_path / "run.toml").write_text('epochs = "ten"\n')
    result = CliRunner().invoke(cli, ["run", "--config", str(tmp_path / "run.toml"),
                                      "--out", str(tmp_path / "runs")])
    assert result.exit_code != 0
    assert "setting epochs must be an integer, got 'ten'" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "runs").exists()


def test_python_api_refuses_a_bad_setting_before_training(tmp_path):
    with pytest.raises(fbench.FbenchError, match="setting lr must be a number"):
        fbench.run(lr="fast", out=str(tmp_path))


def test_run_config_is_frozen():
    import dataclasses

    from fbench.train.config import RunConfig

    with pytest.raises(dataclasses.FrozenInstanceError):
        RunConfig().epochs = 3
