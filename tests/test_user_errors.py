"""Mistakes a user makes with detectors, transforms and the catalogue (issue 18): a mistyped
option is one line before anything is built, a detector takes a plain image tensor, and
`fbench list` says when nothing matches."""

from __future__ import annotations

from typing import Any

import pytest
from click.testing import CliRunner

import fbench
from fbench.cli import cli
from fbench.errors import FbenchError
from fbench.train.config import check_options


def _run(tmp_path, *args: str):
    out = tmp_path / "runs"
    result = CliRunner().invoke(cli, ["run", "--out", str(out), "--epochs", "1",
                                      "--dataset-option", "n_per_class=6", *args])
    return result, out


@pytest.mark.parametrize("args, message", [
    (["--set", "drop_rate=abc"], "detector 'resnet18': option drop_rate must be a number, got "
                                 "'abc'. Fix: e.g. --set drop_rate=0.0"),
    (["--set", "drop_rate=true"], "detector 'resnet18': option drop_rate must be a number, got "
                                  "True. Fix: e.g. --set drop_rate=0.0"),
    (["--transform", "dct", "--transform-option", "grayscale=2"],
     "transform 'dct': option grayscale must be true or false, got 2. "
     "Fix: e.g. --transform-option grayscale=false"),
])
def test_a_mistyped_option_stops_the_run_before_it_starts(tmp_path, args, message):
    # before: the run header, a run directory, then a 54-line traceback from inside timm
    result, out = _run(tmp_path, *args)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines == [f"Error: {message}"]
    assert not out.exists() or not any(out.iterdir())  # no run directory


def test_create_detector_and_transform_check_option_types():
    with pytest.raises(FbenchError, match="option drop_rate must be a number, got 'abc'"):
        fbench.create_detector("resnet18", drop_rate="abc")
    with pytest.raises(FbenchError, match="option attention_after must be an integer"):
        fbench.create_detector("ffd-attention", attention_after="after-3")
    with pytest.raises(FbenchError, match="option quality must be an integer, got 2.5"):
        fbench.create_transform("jpeg", quality=2.5)
    # a string that reads as the right number is that number
    assert fbench.create_transform("jpeg", quality="40").level == 40


def _factory(num_classes: int = 3, after: int | None = None, path: str | None = None,
             rate: float = 0.1, flag: bool = False, grid: Any = 4, untyped=8, loose=None):
    return None


@pytest.mark.parametrize("given, expected", [
    ({"after": "3", "rate": "0.5", "flag": "true"}, {"after": 3, "rate": 0.5, "flag": True}),
    ({"after": None, "path": None, "loose": [1]}, {"after": None, "path": None, "loose": [1]}),
    ({"path": 5, "rate": 1, "grid": "any", "untyped": "9"},
     {"path": "5", "rate": 1, "grid": "any", "untyped": 9}),
])
def test_check_options_reads_annotations_and_converts(given, expected):
    assert check_options("detector", "d", _factory, given, reserved=("num_classes",)) == expected


@pytest.mark.parametrize("given, message", [
    ({"after": "x"}, "option after must be an integer, got 'x'. Fix: e.g. --set after=1"),
    ({"after": 2.5}, "option after must be an integer"),
    ({"rate": None}, "option rate must be a number, got None"),
    ({"rate": float("nan")}, "option rate must be a number, got nan"),
    ({"rate": "inf"}, "option rate must be a number, got 'inf'"),
    ({"flag": 1}, "option flag must be true or false, got 1. Fix: e.g. --set flag=false"),
    ({"untyped": "many"}, "option untyped must be an integer, got 'many'. Fix: e.g. "
                          "--set untyped=8"),
])
def test_check_options_refuses_the_wrong_type_in_one_line(given, message):
    with pytest.raises(FbenchError) as err:
        check_options("detector", "d", _factory, given, reserved=("num_classes",))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_every_builtin_default_passes_its_own_check():
    # a stored run's options hold every default (None included); resume and reproduce check
    # them again, so no default may fail its own factory's annotation
    from fbench.plugins.registry import get_registry
    from fbench.plugins.specs import factory_options

    reg = get_registry()
    for kind, reserved in (("detector", ("num_classes",)), ("transform", ())):
        for name, (spec, _) in reg.specs(kind).items():
            defaults = {k: v for k, v in factory_options(spec.factory).items()
                        if k != "**" and k not in reserved
                        and (v is None or isinstance(v, bool | int | float | str))}
            assert check_options(kind, name, spec.factory, defaults,
                                 reserved=reserved) == defaults, name


def test_a_detector_takes_a_plain_image_tensor():
    import torch

    from fbench import Batch, DetectorOutput
    from fbench.plugins.detector import as_detector

    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32)
    plain = fbench.create_detector("resnet18").eval()
    model = as_detector(plain)
    seen = []
    model.register_forward_pre_hook(lambda _m, args: seen.append(type(args[0])))
    with torch.no_grad():
        out = model(x)
        assert isinstance(out, DetectorOutput) and out.logits.shape == (2, 3)
        assert torch.equal(out.logits, model(Batch(images=x)).logits)
        assert torch.equal(out.logits, plain(x))  # a plain classifier stays tensor in, out
    assert seen == [Batch, Batch]  # hooks see the batch forward sees


def test_graftnet_takes_a_plain_image_tensor():
    import torch

    from fbench import Batch, DetectorOutput

    torch.manual_seed(0)
    # before: AttributeError: 'Tensor' object has no attribute 'images'
    model = fbench.create_detector("graftnet", input_size=64).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        out = model(x)
        assert isinstance(out, DetectorOutput) and out.logits.shape == (2, 3)
        assert torch.equal(out.logits, model(Batch(images=x)).logits)


def test_a_tensor_that_cannot_be_a_batch_is_one_clear_error():
    import torch

    model = fbench.create_detector("two-stream-landmark")
    with pytest.raises(FbenchError, match="reads landmarks besides the images"):
        model(torch.randn(1, 3, 32, 32))
    from fbench.plugins.detector import as_detector

    resnet = as_detector(fbench.create_detector("resnet18"))
    for bad in (torch.zeros(2, 3, 32, 32, dtype=torch.uint8), torch.randn(3, 32, 32)):
        with pytest.raises(FbenchError, match=r"takes a float image tensor \[B, C, H, W\]"):
            resnet(bad)


@pytest.mark.parametrize("args", [["detector"], ["detectors"], ["Detector", "res*"]])
def test_list_takes_singular_and_plural_kinds(args):
    result = CliRunner().invoke(cli, ["list", *args])
    assert result.exit_code == 0, result.output
    assert "resnet18" in result.output and "synthetic" not in result.output


@pytest.mark.parametrize("args, line", [
    (["detectors", "x*"], "no detectors match 'x*'"),
    (["transform", "f3net-[ab]*"], "no transforms match 'f3net-[ab]*'"),
])
def test_list_says_when_nothing_matches(args, line):
    # before: an empty table with only its title and header
    result = CliRunner().invoke(cli, ["list", *args])
    assert result.exit_code == 0
    assert result.output.strip() == line


def test_list_still_refuses_an_unknown_kind():
    result = CliRunner().invoke(cli, ["list", "detectorz"])
    assert result.exit_code == 2 and "detectorz" in result.output
