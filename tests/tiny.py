"""Shared by tests that need a detector which trains in seconds."""

from __future__ import annotations


def blind_detector(num_classes: int = 3, spare: int = 0):
    """Ignores its image: a learnable bias is every image's logits, so it predicts one class
    for all of them (a run of it always collapses). ``spare`` is unused: it makes
    configurations that score exactly alike."""
    import torch
    from torch import nn

    class Blind(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bias = nn.Parameter(torch.zeros(num_classes))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.new_zeros(len(x), 1) + self.bias

    return Blind()


def tiny_cnn(num_classes: int = 3, width: int = 4, depth: int = 1):
    """``depth`` conv-ReLU layers, global pooling, a linear head."""
    from torch import nn

    layers, channels = [], 3
    for _ in range(depth):
        layers += [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU()]
        channels = width
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(width, num_classes))


def tiny_plugin(name: str, input_size: int = 32, width: int = 4, depth: int = 1):
    """A plugin object that registers one tiny_cnn detector called ``name`` (register it with
    ``fbench.registered(tiny_plugin(...))`` for a test's duration)."""
    import fbench

    class TinyPlugin:
        @fbench.hookimpl
        def register_detectors(self, register):
            register(fbench.DetectorSpec(
                name=name, summary="a tiny test CNN", input_size=input_size,
                factory=lambda num_classes=3: tiny_cnn(num_classes, width, depth)))

    return TinyPlugin()

