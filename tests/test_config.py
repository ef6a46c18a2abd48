from __future__ import annotations

import pytest

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
