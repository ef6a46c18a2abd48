"""The resnet18 detector plugin: shape, any input size, local weights only."""

from __future__ import annotations

import pytest
import torch

import fbench
from fbench import FbenchError


@pytest.mark.parametrize("size", [32, 64, 96])
def test_forward_backward_at_small_sizes(size):
    model = fbench.create_detector("resnet18")
    x = torch.randn(2, 3, size, size, requires_grad=True)
    logits = model(x)
    assert logits.shape == (2, 3)
    logits.sum().backward()
    assert x.grad is not None


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
