"""The resnet18 detector plugin (its forward and backward are the contract test's): the
parameter count, the thesis's (torchvision's) initialisation and timm's, the thesis's recipe,
local weights only."""

from __future__ import annotations

import pytest
import torch
import torchvision
from detector_helpers import thesis_recipe

import fbench
from fbench import FbenchError


def test_parameter_count_is_timm_resnet18_with_three_classes():
    n = sum(p.numel() for p in fbench.create_detector("resnet18").parameters())
    assert abs(n / 1e6 - 11.18) < 0.01


def test_pretrained_path_loads_local_weights(tmp_path):
    source = fbench.create_detector("resnet18", num_classes=1000)
    with torch.no_grad():
        source.conv1.weight.fill_(0.125)
    path = tmp_path / "imagenet.pth"
    torch.save(source.state_dict(), path)
    model = fbench.create_detector("resnet18", pretrained_path=str(path))
    assert torch.all(model.conv1.weight == 0.125)
    assert model.fc.out_features == 3  # the 1000-class head is not forced onto 3 classes


def test_pretrained_path_refuses_pickled_objects_and_missing_files(tmp_path):
    with pytest.raises(FbenchError, match="does not exist"):
        fbench.create_detector("resnet18", pretrained_path=str(tmp_path / "none.pt"))
    evil = tmp_path / "evil.pt"
    torch.save({"model": object()}, evil)  # needs unpickling of arbitrary code to load
    with pytest.raises(FbenchError, match="cannot load weights"):
        fbench.create_detector("resnet18", pretrained_path=str(evil))


def _last_norms(model: torch.nn.Module) -> list[torch.Tensor]:
    """The weight of the last batch norm of every residual block (``bn2`` of a BasicBlock)."""
    return [block.bn2.weight for layer in (model.layer1, model.layer2, model.layer3,
                                           model.layer4) for block in layer]


def test_reference_init_is_torchvisions_as_the_thesis_and_timm_zeroes_last_norms():
    torch.manual_seed(0)
    reference = fbench.create_detector("resnet18")  # the default
    torch.manual_seed(0)
    thesis = torchvision.models.resnet18(num_classes=3)  # the thesis's model
    torch.manual_seed(0)
    timm_init = fbench.create_detector("resnet18", init="timm")
    ours, theirs = reference.state_dict(), thesis.state_dict()
    assert ours.keys() == theirs.keys()
    random_weights = [f"{name}.weight" for name, m in thesis.named_modules()
                      if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)]
    for key in random_weights:  # the same distribution
        ratio = float(ours[key].std() / theirs[key].std())
        assert abs(ratio - 1.0) < 0.1, (key, ratio)
    bound = 512 ** -0.5  # the classifier's bias: PyTorch's default, within 1/sqrt(fan_in)
    for model_state in (ours, theirs):
        assert float(model_state["fc.bias"].abs().max()) <= bound
    for key, value in theirs.items():  # batch norms: constants (weights, biases, statistics)
        if key not in random_weights and key != "fc.bias":
            assert torch.equal(ours[key], value), key
    assert all(bool((w == 1).all()) for w in _last_norms(reference))
    assert all(bool((w == 0).all()) for w in _last_norms(timm_init))
    # Everything else is alike: the convolutions' Kaiming fan-out, the other norms at 1.
    timm_state = timm_init.state_dict()
    assert abs(float(timm_state["conv1.weight"].std() / theirs["conv1.weight"].std()) - 1) < 0.1
    assert bool((timm_state["layer1.0.bn1.weight"] == 1).all())
    with pytest.raises(FbenchError, match="unknown init"):
        fbench.create_detector("resnet18", init="kaiming")


def test_thesis_protocol():
    recipe = thesis_recipe("resnet18")
    assert recipe["lr"] == 2e-4 and recipe["batch_size"] == 512
    assert "options" not in recipe  # init=reference, the thesis's, is the default
