"""`benchmarks/cpu_settings.py` runs end to end at a tiny size: every setting of every detector
timed in its child, the ratios in the table computed from the stored step times, a reference
model brought by an adapter timed in the same rounds, and a detector whose child dies kept as
that row's note, never a lost table. Speed itself is not asserted."""

from __future__ import annotations

import json

import pytest
from scripts import load_script


@pytest.fixture(scope="module")
def cpu_settings():
    yield from load_script("cpu_settings")


ADAPTER = '''
import torch
from torch import nn

def build(name, num_classes=3, input_size=224):
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, num_classes))

def train_loss(name, model, images, labels, masks=None):
    return nn.functional.cross_entropy(model(images), labels)
'''


def test_table_of_settings_against_a_reference(cpu_settings, tmp_path, capsys):
    (tmp_path / "ref").mkdir()
    (tmp_path / "ref" / "adapter.py").write_text(ADAPTER)
    out = tmp_path / "out"
    code = cpu_settings.main(["-d", "resnet18", "-d", "no-such-detector", "--input-size", "32",
                              "--batch-size", "2", "--steps", "1", "--rounds", "2",
                              "--variants", "fp32,channels_last,bf16",
                              "--reference-code", str(tmp_path / "ref"), "--out", str(out)])
    assert code == 0
    rows = json.loads((out / "settings.json").read_text())
    good, bad = rows
    assert bad["detector"] == "no-such-detector" and bad["error"].startswith("exit")
    assert set(good["step_s"]) == {"fp32", "channels_last", "bf16", "thesis"}
    assert all(len(times) == 2 for times in good["rounds_s"].values())
    assert good["relative_logit_diff"]["fp32"] == 0.0
    assert 0 < good["relative_logit_diff"]["bf16"] < 0.5  # bf16 rounds, but stays close
    assert "thesis" not in good["relative_logit_diff"]  # its own weights: not compared
    table = (out / "settings.md").read_text()
    assert table == capsys.readouterr().out.strip() + "\n"
    line = next(ln for ln in table.splitlines() if ln.startswith("| resnet18 |"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    ref = good["step_s"]["thesis"]
    assert cells[1] == f"{ref:.2f}"
    assert cells[2] == f"{good['step_s']['fp32'] / ref:.2f}"  # recomputed, not typed
    assert cells[3].startswith(f"{good['step_s']['channels_last'] / ref:.2f} [")
    assert "| no-such-detector | exit" in table


def test_fp32_must_be_one_of_the_settings(cpu_settings):
    with pytest.raises(SystemExit):
        cpu_settings.parse_args(["--variants", "bf16"])
    with pytest.raises(SystemExit):
        cpu_settings.parse_args(["--variants", "fp32,turbo"])
