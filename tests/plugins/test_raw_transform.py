from __future__ import annotations

import torch

import fbench


def test_raw_normalises_with_imagenet_statistics():
    t = fbench.create_transform("raw")
    x = torch.rand(2, 3, 8, 8)
    y = t(x)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    assert torch.allclose(y, (x - mean) / std)
    assert set(t.state_dict()) == {"mean", "std"}  # stored with checkpoints, not trained
    assert not list(t.parameters())


def test_raw_takes_custom_statistics():
    t = fbench.create_transform("raw", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    assert torch.allclose(t(torch.ones(1, 3, 2, 2)), torch.ones(1, 3, 2, 2))
